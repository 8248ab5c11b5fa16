"""Analytics speed: the ``/v1/analytics`` routes on one group of 500 learners with 200,000
answers, on SQLite and PostgreSQL (the teacher's routes -- class overview, what to reteach,
suggested groups, a CSV export -- first; goal: each under 300 ms warm and after one new
answer).

1. A simulated dataset (``tutor ingest simulate``: ``--learners`` learners x ``--answers``
   answers on average, 100 concepts x 10 items, timestamps) and a small DKT trained on a
   sample of the same world (other learners) are generated once and cached under
   ``runs/analytics_speed/``.
2. Per database (a fresh SQLite file; a PostgreSQL database created through ``--pg`` and
   dropped at the end): the schema, the dataset (``tutor.importer.import_dataset``), the
   model (registered, activated), one group holding every learner, an admin key, every
   learner's state (``operations.rebuild_states``), ``ANALYZE``.
3. The app in process (FastAPI ``TestClient``, one torch thread as under uvicorn); each
   route is timed end to end (HTTP + JSON):

   * **cold**: the analytics caches emptied before every call (the model and catalogue
     stay loaded) -- a group seen for the first time, or after its answers changed;
   * **warm**: the same request again (the per-group results are cached);
   * **after 1 answer**: one new answer of one learner (posted through the API) before
     every call -- a live class: only that learner is replayed, the group is re-aggregated.

   Each number is the median of ``--repeat`` (default 5) calls after one warm-up call.

    python benchmarks/analytics_speed.py                       # 500 x ~400 = 200k answers
    python benchmarks/analytics_speed.py --db sqlite --repeat 3

The table is printed and written to ``--out`` (default ``docs/benchmarks/analytics_speed.txt``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_world import DatabaseUnavailable, World, scratch_database  # noqa: E402 - after the path set-up

PG_URL = os.environ.get("TUTOR_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
WORK = ROOT / "runs" / "analytics_speed"
ORG = "bench"
GROUP = "class"
CONCEPTS = 100
ITEMS_PER_CONCEPT = 10
SEED = 11
START = "2025-09-01"


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------- databases
def build(url: str, dataset: Path, run: Path) -> tuple[str, dict[str, float]]:
    """Schema, import, model, group, key, states; returns the admin key and timings."""
    from sqlalchemy import select, text

    from tutor import operations as ops
    from tutor.db import Base, Group, Learner, create_db_engine, make_sessionmaker
    from tutor.importer import import_dataset
    from tutor.security import create_key
    from tutor.settings import Settings

    engine = create_db_engine(url)
    Base.metadata.create_all(engine)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    counts = import_dataset(engine, org_slug=ORG, dataset_dir=dataset)
    times["import"] = time.perf_counter() - t0
    factory = make_sessionmaker(engine)
    with factory() as s, s.begin():
        org = ops.get_org(s, ORG)
        ops.register_model(s, org=org, run_dir=run, activate=True)
        group = Group(org_id=org.id, external_id=GROUP, name="Benchmark class")
        s.add(group)
        s.flush()
        ops.add_members(
            s, group=group, learners=s.scalars(select(Learner).where(Learner.org_id == org.id))
        )
        key, _ = create_key(s, org=org, role="admin", pepper=Settings().key_pepper)
    t0 = time.perf_counter()
    with factory() as s, s.begin():
        ops.rebuild_states(s, org=ops.get_org(s, ORG))
    times["rebuild_states"] = time.perf_counter() - t0
    with engine.connect() as c:
        c.execute(text("ANALYZE"))
        c.commit()
    engine.dispose()
    times["interactions"] = counts["interactions"]
    return key, times


def _median_ms(fn: Any, repeat: int, before: Any = None) -> tuple[float, Any]:
    if before is not None:
        before()
    fn()  # warm-up
    out, samples = None, []
    for _ in range(repeat):
        if before is not None:
            before()
        t0 = time.perf_counter()
        out = fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples), out


def measure(url: str, key: str, repeat: int) -> list[tuple[str, float, float, float, str]]:
    from fastapi.testclient import TestClient
    from sqlalchemy import func, select

    from tutor import analytics
    from tutor.api import create_app
    from tutor.db import Interaction, Learner, create_db_engine, make_sessionmaker
    from tutor.settings import Settings

    # the background warm-up is off so that "cold" is cold; its own time is logged below
    settings = Settings(database_url=url, environment="test", analytics_warmup_groups=0)
    engine = create_db_engine(url)
    with make_sessionmaker(engine)() as s:
        # a learner near the median history length, for the timeline
        lens = s.execute(
            select(Learner.external_id, func.count())
            .join(Interaction, Interaction.learner_id == Learner.id)
            .group_by(Learner.external_id)
            .order_by(func.count())
        ).all()
        learner, n_hist = lens[len(lens) // 2]
        last = s.scalar(select(func.max(Interaction.timestamp)))
        s.rollback()  # SQLite: end this (write-locking) transaction before the warm-up's
        analytics.clear_caches()
        warm = analytics.warm_up(make_sessionmaker(engine), max_groups=20)
        log(
            f"background warm-up (what the app does at start-up): {warm['groups']:.0f} group, "
            f"{warm['learners']:.0f} learners in {warm['seconds']:.1f} s"
        )
        analytics.clear_caches()
    engine.dispose()
    h = {"Authorization": f"Bearer {key}"}
    routes = [
        ("class overview (page of 100)", f"/v1/analytics/groups/{GROUP}/students"),
        ("what to reteach", f"/v1/analytics/groups/{GROUP}/reteach"),
        ("suggested groups", f"/v1/analytics/groups/{GROUP}/suggested-groups"),
        ("class overview CSV (500 rows)", f"/v1/analytics/groups/{GROUP}/students?format=csv"),
        ("group mastery grid (page of 100)", f"/v1/analytics/groups/{GROUP}/mastery"),
        ("learning curves (all concepts)", f"/v1/analytics/groups/{GROUP}/learning-curves"),
        ("item statistics (page of 50)", f"/v1/analytics/groups/{GROUP}/items"),
        ("learners at risk", f"/v1/analytics/groups/{GROUP}/at-risk"),
        (f"timeline ({n_hist} answers)", f"/v1/analytics/learners/{learner}/timeline"),
        ("model card", "/v1/analytics/model-card"),
    ]
    rows = []
    counter = [0]
    ts = [last]

    def post_one() -> None:
        counter[0] += 1
        ts[0] = ts[0].replace(tzinfo=UTC) if ts[0].tzinfo is None else ts[0]
        stamp = datetime.fromtimestamp(ts[0].timestamp() + 60 * counter[0], UTC)
        r = client.post(
            "/v1/answers",
            json={
                "event_id": f"bench-{uuid.uuid4().hex}",
                "learner_id": learner,
                "item_id": "q1",
                "correct": 1,
                "timestamp": stamp.isoformat(),
            },
            headers=h,
        )
        assert r.status_code == 201, r.text

    with TestClient(create_app(settings)) as client:
        for label, path in routes:

            def call(path: str = path) -> Any:
                r = client.get(path, headers=h)
                assert r.status_code == 200, r.text
                return r

            cold, resp = _median_ms(call, repeat, before=analytics.clear_caches)
            warm, _ = _median_ms(call, repeat)
            live, _ = _median_ms(call, repeat, before=post_one)
            size = f"{len(resp.content) / 1024:.0f} KiB"
            rows.append((label, cold, warm, live, size))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--learners", type=int, default=500)
    ap.add_argument("--answers", type=int, default=415, help="mean answers per learner")
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument("--pg", default=PG_URL, help="PostgreSQL server URL")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "benchmarks" / "analytics_speed.txt"
    )
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    WORK.mkdir(parents=True, exist_ok=True)
    world = World(WORK, CONCEPTS, ITEMS_PER_CONCEPT, SEED, START)
    dataset = world.dataset(args.learners, args.answers, log)
    run = world.model(400, 100, log)  # same world (seed), other learners
    lines = [
        f"analytics_speed ({datetime.now(UTC):%Y-%m-%d}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}, "
        "1 torch thread, in-process TestClient; median of "
        f"{args.repeat} calls after a warm-up, ms)",
        "",
    ]
    for db in [d.strip() for d in args.db.split(",") if d.strip()]:
        try:
            with scratch_database(
                db, pg=args.pg, folder=WORK / "sqlite", prefix="kt_analytics_bench"
            ) as url:
                key, t = build(url, dataset, run)
                head = (
                    f"{db}: {args.learners} learners in one group, {int(t['interactions']):,} "
                    f"answers (import {t['import']:.1f} s, states rebuilt in "
                    f"{t['rebuild_states']:.1f} s)"
                )
                log(head)
                rows = measure(url, key, args.repeat)
        except DatabaseUnavailable as exc:  # report and skip
            log(f"{db} skipped: {exc}")
            continue
        lines += [
            head,
            "",
            f"| {'route':<34} | {'cold':>8} | {'warm':>8} | {'after 1 answer':>14} | "
            f"{'response':>8} |",
            f"|{'-' * 36}|{'-' * 10}|{'-' * 10}|{'-' * 16}|{'-' * 10}|",
        ]
        for label, cold, warm, live, size in rows:
            lines.append(
                f"| {label:<34} | {cold:>8.1f} | {warm:>8.1f} | {live:>14.1f} | {size:>8} |"
            )
        lines.append("")
        log("\n".join(lines[-len(rows) - 3 :]))
    text_out = "\n".join(lines)
    print()
    print(text_out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text_out + "\n")


if __name__ == "__main__":
    main()
