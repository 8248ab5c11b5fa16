"""Serving load: the HTTP API under ``wrk`` (a C load generator) at three catalogue sizes.

For each catalogue (``--catalogues``, default ``100x10,107x125,500x100``: 1,000 items, the
demo's 13,400 items over 107 concepts, and 50,000 items over 500 concepts) and database
(``--db sqlite,postgresql``):

1. a simulated dataset of that catalogue (``tutor ingest simulate``: ``--learners`` learners,
   about ``--interactions`` answers, prerequisites, learning and forgetting behind every
   answer) and a small DKT trained on a sample of the same world (other learners) are built
   once and cached under ``runs/serve_load/`` (``benchmarks/bench_world.py``);
2. a fresh database gets the schema (Alembic), the dataset, the model, keys and every
   learner's state, then ``ANALYZE``;
3. ``tutor serve`` serves it (``--workers``: a comma list runs each count; default 1,2 on
   PostgreSQL, 1 on SQLite, whose writers are serialised anyway; ``--server uvicorn``: plain
   ``uvicorn --workers``, whose workers share one listening socket) and ``wrk`` (``--connections``,
   ``--threads``) drives three loads of ``--seconds`` each after ``--warmup`` unmeasured
   seconds: **mixed** (an answer of a random learner, then the next 5 items of the learner
   that wrk thread answered for last (per thread, not per connection), again
   and again), **next-items** only, **mastery** only and **answers** only; then the mixed
   load again at each ``--extra-connections`` (default 16: wrk keeps every connection busy,
   so the mean latency is connections / throughput, 64 ms at 500 req/s over 32), and
   **paced** at each of ``--rates`` (default 550 requests a second over ``--connections``):
   each wrk thread sends on a Poisson schedule (exponential gaps) through whichever of its
   connections is free, so the latency is the service's at that rate, not at saturation;
   a send that finds every connection busy goes out late, and how late (p99, ms) is reported
   beside wrk's latency (which runs from the send).

Printed per load: requests a second, latency p50/p90/p99/max (wrk's, all requests of the
load), non-2xx responses, the CPU the server, PostgreSQL and wrk used while measured, with
the server + database CPU per request, and the latency of one request alone (one
connection, ``--alone-seconds``; for the mixed load, half answers, half next-items). The
goal (issue 17): mixed >= 500 req/s with p99 < 50 ms on PostgreSQL with 2 workers at every
catalogue size (checked at every connection count, as fast as the connections go, and at each
paced rate: there p99 plus the sends' lateness p99 under 50 ms at 500 req/s or more
achieved), <= 2 ms of server + database CPU a request. The table is written to
``--out`` (default ``docs/benchmarks/serve_load.txt``) and the numbers as JSON beside it.

``wrk`` is a Debian package (``apt-get install wrk``); the script installs it where apt-get
can run, else says how. ``--py-spy PATH`` records the workers during the mixed load (raw
collapsed stacks under ``runs/serve_load/``; the sampler takes CPU, so that run's numbers are
not the benchmark's).

**Paired comparison** (``--against DIR``, another checkout, e.g. a ``git worktree`` of an
earlier commit): this machine's speed drifts by a third within minutes, so two runs of one
load a few minutes apart cannot show a 20% change. Both checkouts then serve the same
database at once (the first ``--catalogues`` and ``--db``, or ``--db-url``, one kept with
``--keep``), each with ``--workers`` (default 2), and each load runs on one then the other
(the order alternating), ``--pairs`` times; printed: each run, then per load the medians and
the median of the paired ratios, and in how many pairs this checkout was ahead (written to
``--out``, default ``docs/benchmarks/serve_ab.txt``).

    python benchmarks/serve_load.py                                   # the full benchmark
    python benchmarks/serve_load.py --catalogues 500x100 --db postgresql --workers 2
    python benchmarks/serve_load.py --learners 1000 --interactions 50000 --seconds 5
    python benchmarks/serve_load.py --catalogues 500x100 --db postgresql --against /tmp/base \
        --pairs 6 --seconds 6
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_world import World, scratch_database  # noqa: E402 - after the path set-up

PG_URL = os.environ.get("TUTOR_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
WORK = ROOT / "runs" / "serve_load"
ORG = "bench"
SEED = 7
#: first day of the simulated history (the load's answers, stamped now, come after it)
START = "2025-09-01"
SAMPLE_LEARNERS = 600  # x ~85 answers: the DKT's training sample
LOADS = ("mixed", "next-items", "mastery", "answers")
CLK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------- databases
def load_database(url: str, dataset: Path, run: Path, log) -> dict[str, Any]:  # noqa: ANN001
    """Schema, import, model, keys, eager states, ANALYZE; returns keys and timings."""
    from sqlalchemy import text

    from tutor import operations as ops
    from tutor.db import create_db_engine, make_sessionmaker
    from tutor.db.migrate import upgrade
    from tutor.importer import import_dataset
    from tutor.security import create_key
    from tutor.settings import Settings

    upgrade(url)
    engine = create_db_engine(url)
    factory = make_sessionmaker(engine)
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    counts = import_dataset(engine, org_slug=ORG, dataset_dir=dataset)
    out["import_s"] = time.perf_counter() - t0
    out["interactions"] = counts["interactions"]
    out["learners"] = counts["learners"]
    out["items"] = counts["items"]
    log(
        f"  import: {counts['interactions']:,} answers, {counts['learners']:,} learners, "
        f"{counts['items']:,} items in {out['import_s']:.1f} s"
    )
    pepper = Settings().key_pepper
    with factory() as s, s.begin():
        org = ops.get_org(s, ORG)
        ops.register_model(s, org=org, run_dir=run, activate=True)
        out["ingest_key"], _ = create_key(s, org=org, role="ingest", pepper=pepper, name="load")
        out["admin_key"], _ = create_key(s, org=org, role="admin", pepper=pepper, name="load")
    import torch

    # one intra-op thread: batches of small LSTM steps gain nothing from two, and on a busy
    # 2-core machine the second thread's spin-waits made the rebuild 2-6x slower
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    with factory() as s, s.begin():
        n = ops.rebuild_states(s, org=ops.get_org(s, ORG), batch_size=512)
    out["rebuild_s"] = time.perf_counter() - t0
    log(f"  rebuild_states: {n:,} learner states in {out['rebuild_s']:.1f} s")
    t0 = time.perf_counter()
    with engine.connect() as c:
        if engine.dialect.name == "sqlite":
            c.exec_driver_sql("ANALYZE")
        else:
            c.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
        c.commit()
    out["analyze_s"] = time.perf_counter() - t0
    engine.dispose()
    return out


# ---------------------------------------------------------------------- the server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The API under test on a free port, started and ready: ``tutor serve --workers W``
    (``how="tutor"``: the project's own command, on Linux each connection to the worker
    with the fewest)
    or ``uvicorn --workers W`` (``how="uvicorn"``: one socket shared by the workers)."""

    def __init__(
        self, url: str, workers: int, log_path: Path, how: str = "tutor", root: Path = ROOT
    ) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "DATABASE_URL": url, "TUTOR_ENVIRONMENT": "development"}
        if how == "tutor":
            cmd = [sys.executable, "-m", "tutor.cli", "serve", "--no-migrate"]
        else:
            cmd = [sys.executable, "-m", "uvicorn", "tutor.api.app:create_app", "--factory"]
            cmd += ["--log-level", "warning"]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers)]
        cmd += ["--no-access-log"]
        with open(log_path, "ab") as fh:
            # the checkout in the working directory is the one ``-m tutor.cli`` imports
            self.proc = subprocess.Popen(
                cmd, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT
            )
        self._wait_ready(log_path)

    def _wait_ready(self, log_path: Path) -> None:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                with httpx.Client(timeout=5) as http:
                    if http.get(f"{self.base}/ready").status_code == 200:
                        return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)

    def workers(self) -> list[int]:
        """The processes that serve requests (uvicorn's workers; the server itself with one)."""
        kids = [
            pid
            for pid, (_, ppid, _) in _processes().items()
            if ppid == self.proc.pid and b"spawn_main" in _cmdline(pid)
        ]
        return kids or [self.proc.pid]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------------- CPU accounting
def _proc_stat(pid: int) -> tuple[str, int, float] | None:
    """(comm, ppid, CPU seconds) of a process, from /proc."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    f = raw[raw.rindex(")") + 2 :].split()
    return comm, int(f[1]), (int(f[11]) + int(f[12])) / CLK


def _processes() -> dict[int, tuple[str, int, float]]:
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _proc_stat(int(d))
            if st is not None:
                out[int(d)] = st
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def cpu_snapshot(server: Server) -> dict[str, Any]:
    """CPU seconds so far, per process, of the server (every process of it) and of every
    PostgreSQL process (its backends and its WAL writer, checkpointer and background writer:
    run the benchmark on an otherwise idle server); busy seconds of the machine."""
    procs = _processes()
    tree = {server.proc.pid}
    changed = True
    while changed:
        changed = False
        for pid, (_, ppid, _) in procs.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                changed = True
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return {
        "server": {p: procs[p][2] for p in tree if p in procs},
        "postgres": {
            pid: cpu for pid, (comm, _, cpu) in procs.items() if comm.startswith("postgres")
        },
        "machine": (sum(f[:8]) - f[3] - f[4]) / CLK,
    }


def _delta(a: dict[int, float], b: dict[int, float]) -> dict[int, float]:
    """CPU used between two per-process snapshots (processes gone by the second: unknown)."""
    return {pid: cpu - a.get(pid, 0.0) for pid, cpu in b.items()}


# ---------------------------------------------------------------------- the load generator
#: the wrk script: ``{load}``, keys, counts and a run tag are filled in per run. Threads get an
#: id in ``setup`` (event ids stay unique across threads and runs); ``done`` prints one JSON
#: line with the summary and the latency percentiles (microseconds)
_WRK_LUA = """
local mode, tag = "{load}", "{tag}"
local ingest, admin = "Bearer {ingest_key}", "Bearer {admin_key}"
local learners, items = {learners}, {items}
local threads = {{}}
local counter, learner = 0, "u1"

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function init(args)
  math.randomseed(id * 7919 + os.time())
end

local function get(path)
  return wrk.format("GET", path, {{Authorization = admin}})
end

function request()
  counter = counter + 1
  if mode == "mastery" then
    return get("/v1/learners/u" .. math.random(learners) .. "/mastery")
  elseif mode == "next-items" then
    return get("/v1/learners/u" .. math.random(learners) .. "/next-items?n=5")
  elseif mode == "answers" or counter % 2 == 1 then
    learner = "u" .. math.random(learners)
    local body = string.format(
      '{{"event_id":"w%s-%d-%d","learner_id":"%s","item_id":"q%d","correct":%d,' ..
      '"elapsed_ms":%d}}', tag, id, counter, learner, math.random(items),
      math.random() < 0.65 and 1 or 0, math.random(5000, 60000))
    return wrk.format("POST", "/v1/answers",
      {{Authorization = ingest, ["Content-Type"] = "application/json"}}, body)
  end
  return get("/v1/learners/" .. learner .. "/next-items?n=5")
end

function done(summary, latency, requests)
  local e = summary.errors
  local late = {{}}
  for _, t in ipairs(threads) do
    for _, v in ipairs(t:get("late") or {{}}) do late[#late + 1] = v end
  end
  table.sort(late)
  local function q(p) return #late > 0 and late[math.max(1, math.ceil(p * #late))] or 0 end
  io.write(string.format(
    'WRK {{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d,' ..
    '"paced":%d,"late_p50":%.3f,"late_p99":%.3f,"late_max":%.3f}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    #late, q(0.5), q(0.99), q(1)))
end
"""

#: added to the wrk script for a paced load (``rate``: requests a second over all threads):
#: each wrk thread draws its sends as a Poisson process (exponential gaps), and a free
#: connection takes the next planned send (``delay``, milliseconds). A send that finds every
#: connection busy goes out late: ``request`` records how late (ms), ``done`` reports it. wrk
#: times a request from its send, so the latency a client with that schedule sees is wrk's plus
#: the lateness; with a lateness p99 of about 0 the two agree.
_WRK_PACED_LUA = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct {{ long tv_sec; long tv_nsec; }} kt_timespec;
int clock_gettime(int clock, kt_timespec *ts);
]]
local ts = ffi.new("kt_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local gap_ms = 1000 * {threads} / {rate}  -- mean gap between one thread's sends
local plan, planned, first, last = nil, {{}}, 1, 0  -- planned[first .. last]: a queue
late = {{}}

function delay()
  local t = now_ms()
  plan = (plan or t) - math.log(1 - math.random()) * gap_ms
  last = last + 1
  planned[last] = plan
  return math.max(0, math.floor(plan - t))
end

local unpaced_request = request
function request()
  local p = planned[first]
  if p ~= nil then
    planned[first] = nil
    first = first + 1
    late[#late + 1] = math.max(0, now_ms() - p)
  end
  return unpaced_request()
end
"""


def ensure_wrk() -> str:
    """The wrk binary: on PATH, else installed from Debian's packages where apt-get can run
    (as root or with password-less sudo), else an error that says how."""
    found = shutil.which("wrk")
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "wrk"], env=env, check=False)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk not found: install it (Debian: apt-get install wrk)")
    return found


def run_wrk(
    wrk: str,
    server: Server,
    setup: dict[str, Any],
    load: str,
    seconds: float,
    args,  # noqa: ANN001
    connections: int | None = None,
    rate: float = 0.0,
) -> dict[str, Any]:
    """One wrk run of ``load`` for ``seconds`` (``connections``: default ``--connections``;
    ``rate``: paced at that many requests a second, else as fast as the connections go):
    its summary, and the CPU (seconds) of the server, PostgreSQL and wrk itself over it."""
    import json

    conns = connections or args.connections
    threads = min(args.threads, conns)
    script = WORK / f"wrk-{load}.lua"
    text = _WRK_LUA.format(
        load=load,
        tag=uuid.uuid4().hex[:8],
        ingest_key=setup["ingest_key"],
        admin_key=setup["admin_key"],
        learners=setup["learners"],
        items=setup["items"],
    )
    if rate > 0:
        text += _WRK_PACED_LUA.format(threads=threads, rate=rate)
    script.write_text(text)
    cmd = [wrk, f"-t{threads}", f"-c{conns}", f"-d{seconds:g}s"]
    cmd += ["--timeout", "10s", "-s", str(script), server.base]
    cpu0, t0 = cpu_snapshot(server), time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read().decode() if proc.stdout else ""
    _, wait_status, usage = os.wait4(proc.pid, 0)
    status = os.waitstatus_to_exitcode(wait_status)
    cpu1, t1 = cpu_snapshot(server), time.perf_counter()
    line = next((x for x in out.splitlines() if x.startswith("WRK ")), None)
    if status != 0 or line is None:
        raise RuntimeError(f"wrk failed ({status}):\n{out[-2000:]}")
    res = json.loads(line[4:])
    wall = t1 - t0
    srv = _delta(cpu0["server"], cpu1["server"])
    res["seconds"] = res["duration_us"] / 1e6
    res["cpu"] = {
        "server": sum(srv.values()) / wall,
        "workers": [srv.get(pid, 0.0) / wall for pid in server.workers()],
        "postgres": sum(_delta(cpu0["postgres"], cpu1["postgres"]).values()) / wall,
        "wrk": (usage.ru_utime + usage.ru_stime) / wall,
        "machine": (cpu1["machine"] - cpu0["machine"]) / wall,
    }
    return res


def measure(wrk: str, server: Server, setup: dict[str, Any], args) -> dict[str, Any]:  # noqa: ANN001
    """Each load after a warm-up run (unmeasured); ``--profile-load`` under py-spy if asked."""
    out = {}
    for load in LOADS:
        if args.warmup > 0:
            run_wrk(wrk, server, setup, load, args.warmup, args)
        spies = []
        if args.py_spy and load == args.profile_load:
            prefix = setup["profile_prefix"]
            for k, pid in enumerate(server.workers()):
                path = prefix.with_name(f"{prefix.name}-w{k}.txt")
                cmd = [args.py_spy, "record", "--pid", str(pid), "--rate", "100", "--gil"]
                cmd += ["--duration", str(int(args.seconds)), "--format", "raw"]
                cmd += ["--nonblocking", "--output", str(path)]
                spies.append(
                    subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                )
        out[load] = run_wrk(wrk, server, setup, load, args.seconds, args)
        for spy in spies:
            spy.wait(60)
        if spies:
            prefix = setup["profile_prefix"]
            paths = [prefix.with_name(f"{prefix.name}-w{k}.txt") for k in range(len(spies))]
            out[load]["profile"] = summarise_profile(paths)
    for conns in args.extra_connections:
        if args.warmup > 0:
            run_wrk(wrk, server, setup, "mixed", args.warmup, args, connections=conns)
        res = run_wrk(wrk, server, setup, "mixed", args.seconds, args, connections=conns)
        out[f"mixed, {conns} connections"] = {**res, "connections": conns}
    for rate in args.rates:
        if args.warmup > 0:
            run_wrk(wrk, server, setup, "mixed", args.warmup, args, rate=rate)
        res = run_wrk(wrk, server, setup, "mixed", args.seconds, args, rate=rate)
        out[f"mixed, paced {rate:g}/s"] = {**res, "rate": rate}
    # one request alone: one connection, one request at a time (latency without queueing)
    for load in LOADS:
        alone = run_wrk(wrk, server, setup, load, args.alone_seconds, args, connections=1)
        out[load]["alone_p50"], out[load]["alone_p90"] = alone["p50"], alone["p90"]
    return out


# ---------------------------------------------------------------------- report
#: frames of the profile summary: (label, how a frame of it is named in py-spy's raw output,
#: or a tuple of such names, any of which counts)
PROFILE_PARTS = (
    # the hot routes' own threads (tutor.api.deps.hot_threads), or the framework's
    (
        "route bodies in worker threads (all)",
        ("_WorkItem.run (concurrent/", "WorkerThread.run (anyio/"),
    ),
    ("  POST /v1/answers", "_post_answers (tutor/api/answers.py"),
    ("    record_answers", "record_answers (tutor/service.py"),
    ("    applying each answer (model, evidence)", "_apply_learner (tutor/service.py"),
    ("  GET next-items", "_next_items (tutor/api/learners.py"),
    ("    learner view (state, predictions)", "learner_view (tutor/recommend.py"),
    ("    the policy", "recommend (tutor/recommend.py"),
    ("  GET mastery", "_mastery (tutor/api/learners.py"),
    ("hot statements on the driver (tutor.db.driver)", "_run (tutor/db/driver.py"),
    ("SQLAlchemy execute (anywhere)", "Connection._execute_context (sqlalchemy/engine/base.py"),
    ("psycopg (anywhere)", "(psycopg/"),
    ("model code (kt_models, anywhere)", "(kt_models/"),
    ("FastAPI dependencies", "solve_dependencies"),
    ("outside the routes (event loop, uvicorn, middleware)", "Runner.run (asyncio/runners.py"),
)


def summarise_profile(paths: list[Path]) -> str:
    """Inclusive share of GIL samples per part of the request path (PROFILE_PARTS) over the
    workers' raw py-spy stacks; the rest is the event loop, uvicorn and the middleware."""
    total, hits = 0, dict.fromkeys([label for label, _ in PROFILE_PARTS], 0)
    for path in paths:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            total += int(count)
            for label, needle in PROFILE_PARTS:
                needles = (needle,) if isinstance(needle, str) else needle
                if any(n in stack for n in needles):
                    hits[label] += int(count)
    if not total:
        return "py-spy: no samples"
    rows = [f"  {label:<44} {100 * n / total:5.1f}%" for label, n in hits.items()]
    return f"py-spy, {total:,} GIL samples (share of the samples that hold each part):\n" + (
        "\n".join(rows)
    )


def per_request_ms(res: dict[str, Any]) -> float:
    """Server + database CPU milliseconds per request."""
    cpu = res["cpu"]
    busy = (cpu["server"] + cpu["postgres"]) * res["seconds"]
    return busy / max(res["requests"], 1) * 1000


def render(console, rows: list[dict[str, Any]], args) -> None:  # noqa: ANN001
    from rich.table import Table

    t = Table(
        title=f"wrk -t{args.threads} -c{args.connections}, {args.seconds:g} s a load "
        f"(after {args.warmup:g} s unmeasured; the last mixed rows at the connections they "
        "name); latency in ms over all requests of the load",
        title_justify="left",
    )
    cols = ["catalogue", "database", "workers", "load", "req/s", "p50", "p90", "p99", "max"]
    cols += ["non-2xx", "CPU server", "CPU db", "CPU wrk", "ms CPU/req", "alone p50", "late p99"]
    for col in cols:
        t.add_column(col, justify="left" if col in ("catalogue", "database", "load") else "right")
    for row in rows:
        for load, r in row["loads"].items():
            first = load == LOADS[0]
            bad = r["status"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
            t.add_row(
                row["catalogue"] if first else "",
                row["db"] if first else "",
                str(row["workers"]) if first else "",
                load,
                f"{r['requests'] / r['seconds']:,.0f}",
                f"{r['p50'] / 1000:.1f}",
                f"{r['p90'] / 1000:.1f}",
                f"{r['p99'] / 1000:.1f}",
                f"{r['max'] / 1000:.0f}",
                f"{bad:,}",
                f"{r['cpu']['server']:.2f}",
                f"{r['cpu']['postgres']:.2f}" if row["db"] == "postgresql" else "-",
                f"{r['cpu']['wrk']:.2f}",
                f"{per_request_ms(r):.2f}",
                f"{r['alone_p50'] / 1000:.2f}" if "alone_p50" in r else "-",
                f"{r['late_p99']:.1f}" if r.get("rate") else "-",
            )
        t.add_section()
    console.print(t)
    for row in rows:
        for load, r in row["loads"].items():
            if "profile" in r:
                where = f"{row['catalogue']}, {row['db']}, {row['workers']} worker(s)"
                console.print(f"{where}, {load}:")
                console.print(r["profile"], highlight=False)
    for row in rows:
        if row["db"] != "postgresql" or row["workers"] != 2:
            continue
        for load, r in row["loads"].items():
            if not load.startswith("mixed"):
                continue
            conns = r.get("connections", args.connections)
            rate = r["requests"] / r["seconds"]
            ok_cpu = per_request_ms(r) <= 2.0
            if r.get("rate"):
                # the lateness adds to what a client on that schedule would wait
                ok = rate >= 500 and r["p99"] / 1000 + r["late_p99"] < 50
                how = (
                    f"paced at {r['rate']:g}/s over {conns} connections: {rate:.0f} req/s, "
                    f"p99 {r['p99'] / 1000:.1f} ms, sends late p99 {r['late_p99']:.1f} ms"
                )
            else:
                ok = rate >= 500 and r["p99"] / 1000 < 50
                how = f"{conns} connections, as fast as they go"
            console.print(
                f"goal at {row['catalogue']} (PostgreSQL, 2 workers, mixed, {how}): >= 500 "
                f"req/s with p99 < 50 ms {'met' if ok else 'not met'}; <= 2 ms CPU a request "
                f"{'met' if ok_cpu else 'not met'}"
            )


# ---------------------------------------------------------------------- main
def _uvicorn_stack() -> str:
    """The event loop and HTTP parser uvicorn picks by default ('auto': uvloop and httptools
    when installed, as with ``uvicorn[standard]``)."""
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"{loop}, {http}"


def _catalogues(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        concepts, _, per = part.strip().partition("x")
        if not (concepts.isdigit() and per.isdigit()):
            raise SystemExit(f"--catalogues: {part!r} is not CONCEPTSxITEMS_PER_CONCEPT")
        out.append((int(concepts), int(per)))
    return out


def database_keys(url: str) -> dict[str, Any]:
    """Keys and sizes of a database ``load_database`` filled (``--db-url``): new keys."""
    from tutor import operations as ops
    from tutor.db import Item, Learner, create_db_engine, make_sessionmaker
    from tutor.security import create_key
    from tutor.settings import Settings

    engine = create_db_engine(url)
    try:
        with make_sessionmaker(engine)() as s, s.begin():
            org = ops.get_org(s, ORG)
            pepper = Settings().key_pepper
            out: dict[str, Any] = {
                "learners": s.query(Learner).filter(Learner.org_id == org.id).count(),
                "items": s.query(Item).filter(Item.org_id == org.id).count(),
            }
            for role in ("ingest", "admin"):
                out[f"{role}_key"], _ = create_key(
                    s, org=org, role=role, pepper=pepper, name="serve_load"
                )
    finally:
        engine.dispose()
    return out


def compare(wrk: str, url: str, setup: dict[str, Any], args, console, log) -> None:  # noqa: ANN001
    """The paired comparison (``--against``): both checkouts serving ``url`` at once, each
    load on one then the other, ``--pairs`` times."""
    import statistics

    checkouts = {"this": ROOT, "against": args.against.resolve()}
    workers = int(args.workers.split(",")[0]) if args.workers else 2  # one count here
    servers: dict[str, Server] = {}
    rows: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    try:
        for name, root in checkouts.items():
            log(f"starting {name} ({root}), {workers} workers")
            servers[name] = Server(url, workers, WORK / f"server-ab-{name}.log", args.server, root)
        for server in servers.values():  # warm: keys cached, states and caches touched
            for load in LOADS:
                run_wrk(wrk, server, setup, load, args.warmup, args)
        for k in range(args.pairs):
            order = list(servers) if k % 2 == 0 else list(servers)[::-1]
            for load in LOADS:
                for name in order:
                    r = run_wrk(wrk, servers[name], setup, load, args.seconds, args)
                    rate = r["requests"] / r["seconds"]
                    row = (rate, r["p99"] / 1000, per_request_ms(r))
                    rows.setdefault((name, load), []).append(row)
                    console.print(
                        f"pair {k + 1} {load:10s} {name:8s} {rate:7.0f} req/s, p50 "
                        f"{r['p50'] / 1000:6.1f} ms, p99 {row[1]:6.1f} ms, "
                        f"{row[2]:.2f} ms CPU/request, non-2xx {r['status']}"
                    )
    finally:
        for server in servers.values():
            server.stop()
    console.print(
        f"\nthis: {ROOT}; against: {checkouts['against']}; {workers} workers, "
        f"{args.connections} connections, {args.pairs} pairs of {args.seconds:g} s a load"
    )
    console.print(
        f"{'load':12s}{'measure':20s}{'this':>10s}{'against':>10s}{'paired ratio':>14s}"
        f"{'this ahead':>12s}"
    )
    for load in LOADS:
        this, other = rows[("this", load)], rows[("against", load)]
        for i, (what, better) in enumerate((("req/s", 1), ("p99 ms", -1), ("CPU ms/request", -1))):
            ratios = [a[i] / b[i] for a, b in zip(this, other, strict=True)]
            ahead = sum((r - 1) * better > 0 for r in ratios)
            console.print(
                f"{load:12s}{what:20s}{statistics.median(a[i] for a in this):10.2f}"
                f"{statistics.median(b[i] for b in other):10.2f}"
                f"{statistics.median(ratios):14.3f}{f'{ahead}/{len(ratios)}':>12s}"
            )


def main() -> None:
    import json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalogues", default="100x10,107x125,500x100", help="CONCEPTSxITEMS each")
    ap.add_argument("--db", default="sqlite,postgresql", help="comma list: sqlite,postgresql")
    ap.add_argument("--learners", type=int, default=10_000)
    ap.add_argument("--interactions", type=int, default=1_000_000)
    ap.add_argument("--connections", type=int, default=32, help="wrk connections")
    ap.add_argument(
        "--extra-connections",
        type=lambda v: [int(x) for x in v.split(",") if x.strip()],
        default=[16],
        help="comma list: the mixed load again at each (empty: none)",
    )
    ap.add_argument(
        "--rates",
        type=lambda v: [float(x) for x in v.split(",") if x.strip()],
        default=[550.0],
        help="comma list: the mixed load again paced at each rate, requests a second over "
        "--connections (empty: none)",
    )
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds a load")
    ap.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds before each")
    ap.add_argument(
        "--alone-seconds", type=float, default=5.0, help="seconds of one request at a time"
    )
    ap.add_argument("--workers", default="", help="worker processes, a comma list runs each")
    ap.add_argument(
        "--server",
        default="tutor",
        choices=("tutor", "uvicorn"),
        help="'tutor serve' (default) or plain 'uvicorn --workers' (one shared socket)",
    )
    ap.add_argument("--pg", default=PG_URL, help="PostgreSQL server URL")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "serve_load.txt")
    ap.add_argument("--py-spy", default="", help="py-spy binary: profile one load")
    ap.add_argument("--profile-load", default="mixed", choices=LOADS, help="py-spy records it")
    ap.add_argument("--keep", action="store_true", help="keep the last databases")
    ap.add_argument("--against", type=Path, help="another checkout: a paired comparison")
    ap.add_argument("--pairs", type=int, default=6, help="with --against: runs of each load")
    ap.add_argument("--db-url", default="", help="with --against: a database kept with --keep")
    args = ap.parse_args()
    if args.against is not None and args.out == ap.get_default("out"):
        args.out = ROOT / "docs" / "benchmarks" / "serve_ab.txt"

    from rich.console import Console

    console = Console(record=True, width=180)
    err = Console(stderr=True)

    def log(msg: str) -> None:
        err.log(msg)

    wrk = ensure_wrk()
    WORK.mkdir(parents=True, exist_ok=True)
    cpu_name = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    version = subprocess.run([wrk, "--version"], capture_output=True, text=True).stdout
    console.print(
        f"serve_load: {os.cpu_count()} cores ({cpu_name}), Python {platform.python_version()}, "
        f"{'tutor serve on ' if args.server == 'tutor' else ''}uvicorn ({_uvicorn_stack()}), "
        f"{version.splitlines()[0] if version else 'wrk'} on the "
        f"same machine; {datetime.now(UTC):%Y-%m-%d}\n"
        f"command: python benchmarks/serve_load.py {' '.join(sys.argv[1:])}\n"
    )
    if args.against is not None:
        concepts, per = _catalogues(args.catalogues)[0]
        db = args.db.split(",")[0].strip()
        if args.db_url:
            compare(wrk, args.db_url, database_keys(args.db_url), args, console, log)
        else:
            world = World(WORK, concepts, per, SEED, START)
            answers = max(1, round(args.interactions / args.learners))
            dataset = world.dataset(args.learners, answers, log)
            run = world.model(SAMPLE_LEARNERS, 85, log)
            with scratch_database(
                db, pg=args.pg, folder=WORK / "sqlite", prefix="kt_serve_load", keep=args.keep
            ) as url:
                compare(wrk, url, load_database(url, dataset, run, log), args, console, log)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(console.export_text())
        log(f"written: {args.out}")
        return
    rows: list[dict[str, Any]] = []
    for concepts, per in _catalogues(args.catalogues):
        world = World(WORK, concepts, per, SEED, START)
        answers = max(1, round(args.interactions / args.learners))
        dataset = world.dataset(args.learners, answers, log)
        run = world.model(SAMPLE_LEARNERS, 85, log)
        name = f"{concepts * per:,} items / {concepts} concepts"
        for db in [d.strip() for d in args.db.split(",") if d.strip()]:
            if db not in ("sqlite", "postgresql"):
                ap.error(f"unknown database {db!r}")
            log(f"{name}, {db}: loading")
            with scratch_database(
                db, pg=args.pg, folder=WORK / "sqlite", prefix="kt_serve_load", keep=args.keep
            ) as url:
                setup = load_database(url, dataset, run, log)
                counts = args.workers or ("1,2" if db == "postgresql" else "1")
                for workers in (int(w) for w in counts.split(",")):
                    log(f"{name}, {db}: {workers} worker(s)")
                    setup["profile_prefix"] = WORK / f"pyspy-{concepts}x{per}-{db}-{workers}"
                    server = Server(url, workers, WORK / f"server-{db}.log", args.server)
                    try:
                        loads = measure(wrk, server, setup, args)
                    finally:
                        server.stop()
                    rows.append(
                        {
                            "catalogue": name,
                            "items": setup["items"],
                            "db": db,
                            "workers": workers,
                            "learners": setup["learners"],
                            "interactions": setup["interactions"],
                            "setup_s": {k: setup[k] for k in ("import_s", "rebuild_s")},
                            "loads": loads,
                        }
                    )
                    r = loads["mixed"]
                    log(
                        f"  mixed {r['requests'] / r['seconds']:,.0f} req/s, p99 "
                        f"{r['p99'] / 1000:.1f} ms, {per_request_ms(r):.2f} ms CPU/request"
                    )
    render(console, rows, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(console.export_text())
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    log(f"written: {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
