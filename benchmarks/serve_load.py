"""Serving load: the HTTP API under a mixed load of answers and next-item requests.

For each database (``--db sqlite,postgresql``):

1. a synthetic canonical dataset (``tutor ingest simulate``, vectorised: ``--learners``
   learners, about ``--interactions`` answers over 100 concepts x 10 items, with a
   prerequisite graph, learning and forgetting behind every answer) and a small DKT trained
   on a 50k-answer sample of the same world (same catalogue, other learners) are generated
   once and cached under ``runs/serve_load/``;
2. a fresh database (SQLite: a file under ``runs/serve_load/``; PostgreSQL: a database
   ``kt_serve_load`` created through ``--pg`` and dropped at the end) gets the schema
   (Alembic), the dataset (``tutor.importer.import_dataset``, timed), the model (registered
   and activated), an ingest key and an admin key, and every learner's state
   (``operations.rebuild_states`` with one torch thread, timed), then ``ANALYZE``;
3. uvicorn serves it (``--workers``, default 2 on PostgreSQL and 1 on SQLite, whose writers
   are serialised anyway; a comma list runs one load per worker count; ``--balance
   reuseport`` runs W single-process servers on SO_REUSEPORT sockets instead of uvicorn's
   ``--workers``, whose shared accept socket can hand every keep-alive connection of a burst
   to one worker), and a load generator
   in another process (asyncio + httpx, ``--concurrency`` virtual clients on keep-alive
   connections) runs ``--warmup`` seconds unmeasured, then ``--seconds`` measured: each
   virtual client picks a random learner, posts a new answer for them (unique event id,
   current time) and asks for their next 5 items, again and again.

Printed per run: requests, req/s, p50/p95/p99/max latency (ms) and non-2xx responses per
endpoint, the total req/s, and the CPU the server, PostgreSQL and the load generator used
during the measured window, with the rest of the machine's (the load generator shares the
machine's cores with the server; other processes' CPU is shown because it skews the numbers).
The tables are also written to ``--out`` (default ``docs/benchmarks/serve_load.txt``).

    python benchmarks/serve_load.py                                     # full size
    python benchmarks/serve_load.py --learners 500 --interactions 50000 --seconds 10
    python benchmarks/serve_load.py --db postgresql --workers 1,2,3
    python benchmarks/serve_load.py --workers 1,2 --balance uvicorn,reuseport
    python benchmarks/serve_load.py --db postgresql --py-spy /path/to/py-spy  # profile

``--py-spy`` records the server's workers during the measured window (``--gil``: the Python
CPU; collapsed stacks under ``runs/serve_load/``); the sampler takes CPU too, so its run's
numbers are not the benchmark's.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import platform
import random
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

from bench_world import World, drop_postgres_database  # noqa: E402 - after the path set-up

PG_URL = os.environ.get("TUTOR_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
WORK = ROOT / "runs" / "serve_load"
PG_DB = "kt_serve_load"
ORG = "bench"
CONCEPTS = 100
ITEMS_PER_CONCEPT = 10
SEED = 7
#: first day of the simulated history (the load's answers, stamped now, come after it)
START = "2025-09-01"
SAMPLE_LEARNERS = 600  # x ~85 answers: the DKT's training sample
ENDPOINTS = ("POST /v1/answers", "GET /v1/learners/{id}/next-items")
CLK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------- databases
def _pg_admin(pg: str):  # noqa: ANN202
    from sqlalchemy import create_engine

    return create_engine(pg, isolation_level="AUTOCOMMIT")


def create_database(db: str, pg: str) -> str:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    if db == "sqlite":
        folder = WORK / "sqlite"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return f"sqlite:///{folder / 'tutor.db'}"
    admin = _pg_admin(pg)
    try:
        drop_postgres_database(admin, PG_DB)
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{PG_DB}"'))
    finally:
        admin.dispose()
    return make_url(pg).set(database=PG_DB).render_as_string(hide_password=False)


def drop_database(db: str, pg: str) -> None:
    if db == "sqlite":
        shutil.rmtree(WORK / "sqlite", ignore_errors=True)
        return
    admin = _pg_admin(pg)
    try:
        drop_postgres_database(admin, PG_DB)
    finally:
        admin.dispose()


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


#: one single-process uvicorn on its own SO_REUSEPORT socket (``--balance reuseport``): the
#: kernel spreads new connections over the sockets, where ``--workers`` lets whichever worker
#: wakes first accept a whole burst of them
_REUSEPORT_SERVER = """
import socket, sys, uvicorn
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
cfg = uvicorn.Config("tutor.api.app:create_app", factory=True, access_log=False,
                     log_level="warning")
uvicorn.Server(cfg).run(sockets=[s])
"""


class Server:
    """The API under test: ``uvicorn --workers W`` (``balance='uvicorn'``) or W single-process
    uvicorns sharing the port through SO_REUSEPORT (``balance='reuseport'``)."""

    def __init__(self, url: str, workers: int, balance: str, log_path: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "DATABASE_URL": url, "TUTOR_ENVIRONMENT": "development"}
        if balance == "uvicorn":
            cmds = [
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "tutor.api.app:create_app",
                    "--factory",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(workers),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ]
            ]
        else:
            cmds = [[sys.executable, "-c", _REUSEPORT_SERVER, str(self.port)]] * workers
        self.procs: list[subprocess.Popen] = []
        with open(log_path, "ab") as fh:
            for cmd in cmds:
                self.procs.append(
                    subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
                )
        self._wait_ready(log_path)

    def _wait_ready(self, log_path: Path) -> None:
        import httpx

        deadline = time.monotonic() + 120
        ready = 0
        while ready < len(self.procs):  # reuseport: each new connection may reach another one
            try:
                with httpx.Client(timeout=5) as http:
                    ok = http.get(f"{self.base}/ready").status_code == 200
                ready = ready + 1 if ok else 0
            except httpx.HTTPError:
                ready = 0
            if any(p.poll() is not None for p in self.procs) or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not start:\n{log_path.read_text()[-3000:]}")
            if ready < len(self.procs):
                time.sleep(0.2)

    def workers(self) -> list[int]:
        """The processes that serve requests (uvicorn's workers, or the servers themselves)."""
        out = []
        for p in self.procs:
            kids = [
                pid
                for pid, (_, ppid, _) in _processes().items()
                if ppid == p.pid and b"spawn_main" in _cmdline(pid)
            ]
            out += kids or [p.pid]
        return out

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


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
    """CPU seconds so far, per process, of the server (every process of it) and of the
    PostgreSQL backends serving the benchmark's database; busy seconds of the machine."""
    procs = _processes()
    tree = {p.pid for p in server.procs}
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
            pid: cpu
            for pid, (comm, _, cpu) in procs.items()
            if comm.startswith("postgres") and PG_DB.encode() in _cmdline(pid)
        },
        "machine": (sum(f[:8]) - f[3] - f[4]) / CLK,
    }


def _delta(a: dict[int, float], b: dict[int, float]) -> dict[int, float]:
    """CPU used between two per-process snapshots (processes gone by the second: unknown)."""
    return {pid: cpu - a.get(pid, 0.0) for pid, cpu in b.items()}


# ---------------------------------------------------------------------- the load generator
def loadgen(cfg: dict[str, Any], started: Any, finished: Any, queue: Any) -> None:
    """Runs in its own process: ``cfg['concurrency']`` virtual clients for ``warmup`` +
    ``seconds``; puts {endpoint: {"lat": [s], "status": {code: n}}, "cpu_s": ...} on
    ``queue``."""
    asyncio.run(_loadgen(cfg, started, finished, queue))


async def _loadgen(cfg: dict[str, Any], started: Any, finished: Any, queue: Any) -> None:
    import httpx

    lat: dict[str, list[float]] = {e: [] for e in ENDPOINTS}
    status: dict[str, dict[int, int]] = {e: {} for e in ENDPOINTS}
    conc = cfg["concurrency"]
    ing = {"Authorization": f"Bearer {cfg['ingest_key']}"}
    adm = {"Authorization": f"Bearer {cfg['admin_key']}"}
    tag = uuid.uuid4().hex[:8]
    t_start = time.perf_counter()
    t_measure = t_start + cfg["warmup"]
    t_end = t_measure + cfg["seconds"]
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)

    async def call(endpoint: str, coro) -> None:  # noqa: ANN001
        t0 = time.perf_counter()
        try:
            r = await coro
            code = r.status_code
        except httpx.HTTPError:
            code = 0  # transport error / timeout
        t1 = time.perf_counter()
        if t0 >= t_measure:
            lat[endpoint].append(t1 - t0)
            status[endpoint][code] = status[endpoint].get(code, 0) + 1

    async def client(cid: int, http: httpx.AsyncClient) -> None:
        rng = random.Random(f"{tag}-{cid}")
        k = 0
        while time.perf_counter() < t_end:
            learner = f"u{rng.randint(1, cfg['learners'])}"
            body = {
                "event_id": f"load-{tag}-{cid}-{k}",
                "learner_id": learner,
                "item_id": f"q{rng.randint(1, cfg['items'])}",
                "correct": int(rng.random() < 0.65),
                "timestamp": datetime.now(UTC).isoformat(),
                "elapsed_ms": rng.randint(5_000, 60_000),
            }
            k += 1
            await call(ENDPOINTS[0], http.post("/v1/answers", json=body, headers=ing))
            await call(
                ENDPOINTS[1],
                http.get(f"/v1/learners/{learner}/next-items", params={"n": 5}, headers=adm),
            )

    async def clock() -> None:
        await asyncio.sleep(max(0.0, t_measure - time.perf_counter()))
        started.set()
        clock.cpu0 = time.process_time()  # type: ignore[attr-defined]
        await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
        finished.set()
        clock.cpu1 = time.process_time()  # type: ignore[attr-defined]

    async with httpx.AsyncClient(base_url=cfg["base"], timeout=30, limits=limits) as http:
        await asyncio.gather(clock(), *(client(c, http) for c in range(conc)))
    queue.put(
        {
            "lat": lat,
            "status": status,
            "window_s": cfg["seconds"],
            "cpu_s": clock.cpu1 - clock.cpu0,  # type: ignore[attr-defined]
        }
    )


def run_load(server: Server, setup: dict[str, Any], args, py_spy: str = "") -> dict:  # noqa: ANN001
    ctx = mp.get_context("spawn")
    started, finished, queue = ctx.Event(), ctx.Event(), ctx.Queue()
    cfg = {
        "base": server.base,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "seconds": args.seconds,
        "learners": setup["learners"],
        "items": setup["items"],
        "ingest_key": setup["ingest_key"],
        "admin_key": setup["admin_key"],
    }
    proc = ctx.Process(target=loadgen, args=(cfg, started, finished, queue), daemon=True)
    proc.start()
    started.wait(args.warmup + 60)
    cpu0, t0 = cpu_snapshot(server), time.perf_counter()
    workers = server.workers()
    spies = []
    for k, pid in enumerate(workers if py_spy else []):
        out = setup["profile_prefix"].with_name(f"{setup['profile_prefix'].name}-w{k}.txt")
        cmd = [py_spy, "record", "--pid", str(pid), "--duration", str(int(args.seconds))]
        cmd += ["--rate", "100", "--gil", "--format", "raw", "--nonblocking", "--output", str(out)]
        spies.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    finished.wait(args.seconds + 60)
    cpu1, t1 = cpu_snapshot(server), time.perf_counter()
    res = queue.get(timeout=120)
    proc.join(30)
    for s in spies:
        s.wait(60)
    wall = t1 - t0
    srv = _delta(cpu0["server"], cpu1["server"])
    cpu = {
        "server": sum(srv.values()) / wall,
        "workers": [srv.get(pid, 0.0) / wall for pid in workers],
        "postgres": sum(_delta(cpu0["postgres"], cpu1["postgres"]).values()) / wall,
        "loadgen": res["cpu_s"] / wall,
    }
    ours = cpu["server"] + cpu["postgres"] + cpu["loadgen"]
    cpu["others"] = max(0.0, (cpu1["machine"] - cpu0["machine"]) / wall - ours)
    res["cpu"] = cpu
    return res


# ---------------------------------------------------------------------- report
def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s))) - 1))]


def render(console, db: str, workers: int, balance: str, setup: dict, res: dict, args) -> None:  # noqa: ANN001
    from rich.table import Table

    title = (
        f"{'PostgreSQL' if db == 'postgresql' else 'SQLite'}: {setup['interactions']:,} answers "
        f"of {setup['learners']:,} learners, {workers} worker(s)"
        + (" (SO_REUSEPORT)" if balance == "reuseport" and workers > 1 else "")
        + f", {args.concurrency} clients, {args.seconds:g} s"
    )
    t = Table(title=title, title_justify="left")
    for col in ("endpoint", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        t.add_column(col, justify="left" if col == "endpoint" else "right")
    t.add_column("errors (non-2xx)", justify="right")
    total, worst_p99 = 0, 0.0
    for e in ENDPOINTS:
        lat = [x * 1000 for x in res["lat"][e]]
        n = len(lat)
        total += n
        bad = {c: k for c, k in res["status"][e].items() if not 200 <= c < 300}
        errs = sum(bad.values())
        worst_p99 = max(worst_p99, _pct(lat, 99))
        err_txt = f"{errs:,}" + (
            " (" + ", ".join(f"{c or 'conn'}: {k}" for c, k in sorted(bad.items())) + ")"
            if bad
            else ""
        )
        t.add_row(
            e,
            f"{n:,}",
            f"{n / res['window_s']:,.0f}",
            f"{_pct(lat, 50):.1f}",
            f"{_pct(lat, 95):.1f}",
            f"{_pct(lat, 99):.1f}",
            f"{max(lat, default=float('nan')):.1f}",
            err_txt,
        )
    rps = total / res["window_s"]
    t.add_section()
    t.add_row("total", f"{total:,}", f"{rps:,.0f}", "", "", "", "", "")
    console.print(t)
    cpu = res["cpu"]
    pg = f", PostgreSQL {cpu['postgres']:.2f}" if db == "postgresql" else ""
    per_req = (cpu["server"] + cpu["postgres"]) * res["window_s"] / max(total, 1) * 1000
    split = (
        " (per worker: " + ", ".join(f"{v:.2f}" for v in cpu["workers"]) + ")"
        if len(cpu["workers"]) > 1
        else ""
    )
    met = rps >= 500 and worst_p99 < 50
    console.print(
        f"setup: import {setup['import_s']:.1f} s, rebuild_states {setup['rebuild_s']:.1f} s, "
        f"ANALYZE {setup['analyze_s']:.1f} s\n"
        f"CPU cores busy while measured: server {cpu['server']:.2f}{split}{pg}, load generator "
        f"{cpu['loadgen']:.2f}, other processes {cpu['others']:.2f} (of {os.cpu_count()}); "
        f"server + database CPU per request {per_req:.1f} ms\n"
        f"goal (>= 500 req/s, p99 < 50 ms): {'met' if met else 'not met'}\n"
    )


# ---------------------------------------------------------------------- main
def _uvicorn_stack() -> str:
    """The event loop and HTTP parser uvicorn picks by default ('auto': uvloop and httptools
    when installed, as with ``uvicorn[standard]``)."""
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"{loop}, {http}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default="sqlite,postgresql", help="comma list: sqlite,postgresql")
    ap.add_argument("--learners", type=int, default=10_000)
    ap.add_argument("--interactions", type=int, default=1_000_000)
    ap.add_argument("--concurrency", type=int, default=32, help="virtual clients")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured seconds")
    ap.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds first")
    ap.add_argument(
        "--workers",
        default="",
        help="uvicorn workers, a comma list runs each (default: 2 PostgreSQL, 1 SQLite)",
    )
    ap.add_argument(
        "--balance",
        default="uvicorn",
        help="uvicorn (--workers W) or reuseport (W servers on SO_REUSEPORT sockets); a comma "
        "list runs each",
    )
    ap.add_argument("--pg", default=PG_URL, help="PostgreSQL server URL")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "serve_load.txt")
    ap.add_argument("--py-spy", default="", help="py-spy binary: profile the server's workers")
    ap.add_argument("--keep", action="store_true", help="keep the databases")
    args = ap.parse_args()

    from rich.console import Console

    console = Console(record=True, width=130)
    err = Console(stderr=True)

    def log(msg: str) -> None:
        err.log(msg)

    WORK.mkdir(parents=True, exist_ok=True)
    world = World(WORK, CONCEPTS, ITEMS_PER_CONCEPT, SEED, START)
    dataset = world.dataset(args.learners, max(1, round(args.interactions / args.learners)), log)
    # a small DKT trained on a sample of the same world (same catalogue, other learners)
    run = world.model(SAMPLE_LEARNERS, 85, log)
    cpu_name = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    console.print(
        f"serve_load: {os.cpu_count()} cores ({cpu_name}), Python {platform.python_version()}, "
        f"uvicorn ({_uvicorn_stack()}), load generator on the same machine; "
        f"{datetime.now(UTC):%Y-%m-%d}\n"
        f"command: python benchmarks/serve_load.py {' '.join(sys.argv[1:])}\n"
    )
    for db in [d.strip() for d in args.db.split(",") if d.strip()]:
        if db not in ("sqlite", "postgresql"):
            ap.error(f"unknown database {db!r}")
        log(f"{db}: loading")
        url = create_database(db, args.pg)
        try:
            setup = load_database(url, dataset, run, log)
            counts = args.workers or ("2" if db == "postgresql" else "1")
            runs = [
                (int(w), b.strip())
                for b in args.balance.split(",")
                for w in counts.split(",")
                if b.strip() in ("uvicorn", "reuseport") and (b.strip() == "uvicorn" or int(w) > 1)
            ]
            if not runs:
                ap.error(f"nothing to run for --workers {counts} --balance {args.balance}")
            for workers, balance in runs:
                log(f"{db}: serving with {workers} worker(s), balance {balance}")
                setup["profile_prefix"] = WORK / f"pyspy-{db}-{balance}{workers}"
                server = Server(url, workers, balance, WORK / f"server-{db}.log")
                try:
                    res = run_load(server, setup, args, py_spy=args.py_spy)
                finally:
                    server.stop()
                render(console, db, workers, balance, setup, res, args)
        finally:
            if not args.keep:
                drop_database(db, args.pg)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(console.export_text())
    log(f"written: {args.out}")


if __name__ == "__main__":
    main()
