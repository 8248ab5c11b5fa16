"""Import speed: ``tutor.importer.import_dataset`` into SQLite and PostgreSQL.

Generates a simulated dataset (``tutor ingest simulate``: 12,500 learners x 80 answers on
average, about 1 million interactions, 120 items of 12 concepts, timestamps and elapsed
times), then imports it into

* a fresh SQLite file (WAL, Core ``insert()`` executemany in chunks), and
* a fresh PostgreSQL database (``COPY ... FROM STDIN`` through psycopg), when one answers at
  ``--pg`` (default ``TUTOR_TEST_PG`` or ``postgresql+psycopg://postgres@127.0.0.1:5432/test``;
  a database of its own is created and dropped),

each into an empty schema at the models' shape, and prints rows, seconds and rows/s. A second
import of the same dataset (every answer already stored: nothing inserted) is timed as well.

    python benchmarks/import_speed.py                    # ~1M interactions
    python benchmarks/import_speed.py --learners 1000    # smaller
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from data_loaders import ingest  # noqa: E402
from tutor.db import Base, create_db_engine  # noqa: E402
from tutor.importer import import_dataset  # noqa: E402

PG_URL = os.environ.get("TUTOR_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def run(url: str, dataset: Path) -> list[tuple[str, int, float]]:
    engine = create_db_engine(url)
    Base.metadata.create_all(engine)
    rows = []
    for label in ("import", "re-import (all skipped)"):
        t0 = time.perf_counter()
        counts = import_dataset(engine, org_slug="bench", dataset_dir=dataset)
        dt = time.perf_counter() - t0
        n = counts["interactions"] if label == "import" else counts["skipped"]
        rows.append((label, n, dt))
    engine.dispose()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--learners", type=int, default=12_500)
    ap.add_argument("--answers", type=int, default=80, help="mean answers per learner")
    ap.add_argument("--pg", default=PG_URL, help="PostgreSQL server URL ('' to skip)")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="kt-import-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        dataset = work / "sim"
        t0 = time.perf_counter()
        manifest = ingest(
            "simulate",
            "-",
            dataset,
            options={"learners": str(args.learners), "answers": str(args.answers)},
            overwrite=True,
        )
        n = manifest.counts["interactions"]
        print(
            f"dataset: {n:,} interactions of {manifest.counts['learners']:,} learners "
            f"(generated in {time.perf_counter() - t0:.1f} s)"
        )
        results: list[tuple[str, str, int, float]] = []
        for label, n_rows, dt in run(f"sqlite:///{work / 'tutor.db'}", dataset):
            results.append(("SQLite", label, n_rows, dt))
        if args.pg:
            admin = None
            name = f"kt_import_bench_{uuid.uuid4().hex[:8]}"
            try:
                admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
                with admin.connect() as c:
                    c.execute(text(f'CREATE DATABASE "{name}"'))
            except Exception as exc:  # noqa: BLE001 - report and go on without PostgreSQL
                print(f"PostgreSQL skipped: {exc}")
                admin = None
            if admin is not None:
                url = make_url(args.pg).set(database=name).render_as_string(hide_password=False)
                try:
                    for label, n_rows, dt in run(url, dataset):
                        results.append(("PostgreSQL", label, n_rows, dt))
                finally:
                    with admin.connect() as c:
                        c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
                    admin.dispose()
        print()
        print(
            f"| {'database':<10} | {'run':<24} | {'rows':>10} | {'seconds':>8} | {'rows/s':>10} |"
        )
        print(f"|{'-' * 12}|{'-' * 26}|{'-' * 12}|{'-' * 10}|{'-' * 12}|")
        for db, label, n_rows, dt in results:
            print(
                f"| {db:<10} | {label:<24} | {n_rows:>10,} | {dt:>8.2f} | {n_rows / dt:>10,.0f} |"
            )
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
