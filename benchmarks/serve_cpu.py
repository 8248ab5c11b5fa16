"""CPU per request of the hot routes, in process: no HTTP, no load generator, A/B.

``serve_load.py`` measures the service as clients see it, but on a 2-core machine whose speed
drifts by a third between runs a few minutes apart, a change of 10-20% is lost in the noise.
This script measures what a change to the request path does to its CPU:

1. one database of the simulated world (``--catalogue``, default 50,000 items over 500
   concepts, ``--learners`` x about ``--interactions`` answers, a small DKT), built as
   ``serve_load.py`` builds it (``--db-url`` reuses one it kept with ``--keep``);
2. for each checkout (this one, and ``--against`` another, e.g. a ``git worktree`` of an
   earlier commit), a fresh process creates the app, runs its start-up (lifespan), warms
   up, then calls the ASGI app directly with ``--requests`` requests of each route, one at a
   time: an answer of a random learner, the next 5 items of a random learner, a random
   learner's mastery; it reports the process CPU (all threads) and the wall time per
   request (the database's CPU is not counted: ``serve_load.py`` counts it);
3. ``--rounds`` rounds, the checkouts in turn (A B A B ...), so that drift hits both alike;
   the table gives medians and the median of the paired ratios.

    python benchmarks/serve_cpu.py --against /tmp/base --rounds 5
    python benchmarks/serve_cpu.py --db-url postgresql+psycopg://postgres@127.0.0.1/kt_x

PostgreSQL (``--pg``) by default; ``--db sqlite`` for SQLite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ROUTES = ("answer", "next-items", "mastery")


# ---------------------------------------------------------------------- the child process
def child(url: str, n: int, seed: int, routes: tuple[str, ...] = ROUTES) -> dict[str, Any]:
    """In a fresh process whose ``tutor`` is the checkout under test: CPU per request."""
    import asyncio
    import random
    import time
    import uuid

    import orjson

    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("TUTOR_ENVIRONMENT", "development")
    from tutor import operations as ops
    from tutor.api.app import create_app
    from tutor.db import Item, Learner, create_db_engine, make_sessionmaker
    from tutor.security import create_key
    from tutor.settings import Settings

    engine = create_db_engine(url)
    with make_sessionmaker(engine)() as s, s.begin():
        org = ops.get_org(s, "bench")
        pepper = Settings().key_pepper
        ingest, _ = create_key(s, org=org, role="ingest", pepper=pepper, name="serve_cpu")
        admin, _ = create_key(s, org=org, role="admin", pepper=pepper, name="serve_cpu")
        learners = s.query(Learner.external_id).filter(Learner.org_id == org.id).all()
        items = s.query(Item.external_id).filter(Item.org_id == org.id).all()
    engine.dispose()
    learners, items = [x for (x,) in learners], [x for (x,) in items]

    app = create_app()
    rnd = random.Random(seed)
    tag = uuid.uuid4().hex[:8]
    counter = [0]

    async def call(method: str, path: str, key: str, body: bytes = b"", query: bytes = b""):
        headers = [
            (b"host", b"bench"),
            (b"authorization", b"Bearer " + key.encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        sent = [False]
        status = [0]

        async def receive() -> dict[str, Any]:
            if not sent[0]:
                sent[0] = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]

        await app(scope, receive, send)
        if status[0] >= 300:
            raise RuntimeError(f"{method} {path}: HTTP {status[0]}")

    def request(route: str) -> tuple[str, str, str, bytes, bytes]:
        learner = rnd.choice(learners)
        if route == "answer":
            counter[0] += 1
            body = {
                "event_id": f"cpu-{tag}-{counter[0]}",
                "learner_id": learner,
                "item_id": rnd.choice(items),
                "correct": int(rnd.random() < 0.65),
                "elapsed_ms": 20_000,
            }
            return ("POST", "/v1/answers", ingest, orjson.dumps(body), b"")
        if route == "next-items":
            return ("GET", f"/v1/learners/{learner}/next-items", admin, b"", b"n=5")
        return ("GET", f"/v1/learners/{learner}/mastery", admin, b"", b"")

    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with app.router.lifespan_context(app):
            for route in routes:
                for _ in range(30):  # warm: keys cached, states and caches touched
                    await call(*request(route))
            for route in routes:
                reqs = [request(route) for _ in range(n)]
                c0, w0 = time.process_time(), time.perf_counter()
                for r in reqs:
                    await call(*r)
                cpu, wall = time.process_time() - c0, time.perf_counter() - w0
                out[route] = {"cpu_ms": cpu / n * 1000, "wall_ms": wall / n * 1000}
        return out

    try:
        import uvloop

        return uvloop.run(main())
    except ImportError:
        return asyncio.run(main())


# ---------------------------------------------------------------------- the driver
def run_child(checkout: Path, url: str, n: int, seed: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--db-url", url]
    cmd += ["--requests", str(n), "--seed", str(seed)]
    done = subprocess.run(cmd, env=env, cwd=checkout, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{checkout}: the measuring process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", type=Path, help="another checkout to compare (A/B)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=300, help="requests per route and run")
    ap.add_argument("--catalogue", default="500x100", help="CONCEPTSxITEMS")
    ap.add_argument("--learners", type=int, default=10_000)
    ap.add_argument("--interactions", type=int, default=1_000_000)
    ap.add_argument("--db", default="postgresql", choices=("postgresql", "sqlite"))
    ap.add_argument("--pg", default=None, help="PostgreSQL server URL")
    ap.add_argument("--db-url", default="", help="a database serve_load.py kept (--keep)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--only",
        choices=ROUTES,
        help="with --child: that route alone (e.g. under a profiler: py-spy record -- python "
        "benchmarks/serve_cpu.py --child --only answer --db-url URL)",
    )
    args = ap.parse_args()
    if args.child:
        routes = (args.only,) if args.only else ROUTES
        print(json.dumps(child(args.db_url, args.requests, args.seed, routes)))
        return

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from contextlib import nullcontext

    from bench_world import World, scratch_database
    from serve_load import PG_URL, SAMPLE_LEARNERS, SEED, START, WORK, load_database

    checkouts = [("this", ROOT)] + ([("against", args.against.resolve())] if args.against else [])

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.db_url:
        scope = nullcontext(args.db_url)
    else:
        concepts, per = (int(x) for x in args.catalogue.lower().split("x"))
        world = World(WORK, concepts, per, SEED, START)
        answers = max(1, round(args.interactions / args.learners))
        dataset = world.dataset(args.learners, answers, log)
        run = world.model(SAMPLE_LEARNERS, 85, log)
        scope = scratch_database(
            args.db, pg=args.pg or PG_URL, folder=WORK / "sqlite-cpu", prefix="kt_serve_cpu"
        )
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in checkouts}
    with scope as url:
        if not args.db_url:
            log("loading the database")
            load_database(url, dataset, run, log)
        for k in range(args.rounds):
            order = checkouts if k % 2 == 0 else checkouts[::-1]
            for name, path in order:
                res = run_child(path, url, args.requests, args.seed + k)
                results[name].append(res)
                log(
                    f"round {k + 1} {name}: "
                    + ", ".join(f"{r} {res[r]['cpu_ms']:.2f} ms" for r in ROUTES)
                )
    print(
        f"CPU per request in process ({args.requests} requests a route and run, "
        f"{args.rounds} rounds, median):"
    )
    head = f"{'route':12s}" + "".join(
        f"{name + ' CPU ms':>16s}{name + ' wall ms':>16s}" for name, _ in checkouts
    )
    if args.against:
        head += f"{'CPU this / against':>20s}"
    print(head)
    for route in ROUTES:
        line = f"{route:12s}"
        for name, _ in checkouts:
            rows = results[name]
            cpu = statistics.median(r[route]["cpu_ms"] for r in rows)
            wall = statistics.median(r[route]["wall_ms"] for r in rows)
            line += f"{cpu:16.2f}{wall:16.2f}"
        if args.against:
            ratio = statistics.median(
                a[route]["cpu_ms"] / b[route]["cpu_ms"]
                for a, b in zip(results["this"], results["against"], strict=True)
            )
            line += f"{ratio:20.2f}"
        print(line)


if __name__ == "__main__":
    main()
