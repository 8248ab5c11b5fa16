"""What the service benchmarks share: a simulated world, a DKT trained on it, scratch databases.

* :class:`World` names one simulated world (concepts x items per concept, a seed, the first
  day of its history) and a cache folder; :meth:`World.dataset` ingests ``learners`` x
  ``answers`` of it once (``tutor ingest simulate``), :meth:`World.model` trains a small DKT
  on a sample of the same world (same catalogue, other learners) once.
* :func:`scratch_database` gives a fresh database for a run (a SQLite file, or a PostgreSQL
  database created on the server and dropped when the ``with`` block ends).

Used by ``serve_load.py`` and ``analytics_speed.py`` (not part of the package; the scripts
put this folder on ``sys.path`` by running from it).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Log = Callable[[str], None]


class DatabaseUnavailable(RuntimeError):
    """The PostgreSQL server could not create the scratch database (down, refused...)."""


@dataclass(frozen=True)
class World:
    """A simulated world: ``concepts`` x ``items_per_concept`` items, ``seed``, answers from
    ``start`` on; datasets and models are cached under ``work``."""

    work: Path
    concepts: int = 100
    items_per_concept: int = 10
    seed: int = 7
    start: str = "2025-09-01"

    @property
    def tag(self) -> str:
        return f"c{self.concepts}x{self.items_per_concept}-s{self.seed}"

    def dataset(self, learners: int, answers: int, log: Log = print) -> Path:
        """``learners`` learners with ``answers`` answers each on average (cached)."""
        from data_loaders import ingest

        out = self.work / f"data-{learners}x{answers}-{self.tag}"
        if (out / "manifest.json").is_file():
            return out
        t0 = time.perf_counter()
        manifest = ingest(
            "simulate",
            "-",
            out,
            options={
                "learners": str(learners),
                "answers": str(answers),
                "concepts": str(self.concepts),
                "items_per_concept": str(self.items_per_concept),
                "seed": str(self.seed),
                "start": self.start,
            },
            overwrite=True,
        )
        log(
            f"dataset: {manifest.counts['interactions']:,} answers of "
            f"{manifest.counts['learners']:,} learners in {time.perf_counter() - t0:.1f} s "
            f"-> {out}"
        )
        return out

    def model(self, sample_learners: int, sample_answers: int, log: Log = print) -> Path:
        """A small DKT (64 units, 2 epochs) trained on ``sample_learners`` x
        ``sample_answers`` of the same world (cached)."""
        from kt_models.train import TrainConfig, train

        run = self.work / f"model-dkt-{self.tag}-n{sample_learners}x{sample_answers}"
        if (run / "best.pt").is_file():
            return run
        sample = self.dataset(sample_learners, sample_answers, log)
        t0 = time.perf_counter()
        res = train(
            "dkt",
            sample,
            run,
            config=TrainConfig(epochs=2, patience=2, threads=2, seed=1),
            model_overrides={"hidden": 64, "emb_dim": 32},
            progress=False,
            log=lambda m: None,
        )
        auc = (res.get("test") or res.get("valid") or {}).get("auc")
        log(f"model: DKT trained in {time.perf_counter() - t0:.1f} s (AUC {auc}) -> {run}")
        return run


@contextmanager
def scratch_database(
    kind: str, *, pg: str, folder: Path, prefix: str, keep: bool = False
) -> Iterator[str]:
    """A fresh, empty database URL for one run: ``kind`` ``sqlite`` (``folder/tutor.db``,
    its old files removed) or ``postgresql`` (a database ``<prefix>_<random>`` created on
    the server ``pg`` and dropped, its connections ended, when the block ends unless
    ``keep``)."""
    if kind == "sqlite":
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "tutor.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        yield f"sqlite:///{path}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(pg, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any failure to reach the server
        admin.dispose()
        raise DatabaseUnavailable(f"PostgreSQL at {pg}: {exc}") from exc
    try:
        yield make_url(pg).set(database=name).render_as_string(hide_password=False)
    finally:
        if not keep:
            drop_postgres_database(admin, name)
        admin.dispose()


def drop_postgres_database(admin: Any, name: str) -> None:
    """End the connections to database ``name`` and drop it (``admin``: an AUTOCOMMIT
    engine on the server)."""
    from sqlalchemy import text

    with admin.connect() as c:
        c.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :n AND pid <> pg_backend_pid()"
            ),
            {"n": name},
        )
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))


__all__ = ["DatabaseUnavailable", "World", "drop_postgres_database", "scratch_database"]
