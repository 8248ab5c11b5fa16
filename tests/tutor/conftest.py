"""Fixtures for the service tests: a trained tiny model, a database on SQLite and on the
machine's PostgreSQL, and a populated "world" of two organisations with keys of every role.

PostgreSQL: ``TUTOR_TEST_PG`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``)
names a server where this test session creates a database of its own (dropped at the end),
so concurrent test runs do not interfere. Where no server answers, the PostgreSQL variants
are skipped with the reason.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from kt_models.train import TrainConfig, train
from tests.kt_models.conftest import write_skill_dataset
from tutor.db import Base, create_db_engine, make_sessionmaker
from tutor.security import create_key
from tutor.settings import Settings

PG_URL = os.environ.get("TUTOR_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def skill_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("skill") / "ds"
    return write_skill_dataset(out, learners=60, concepts=4, items_per_concept=5, seed=3)


def _train(
    tmp_path_factory: pytest.TempPathFactory,
    data: Path,
    name: str,
    lr: float | None = None,
    **over: object,
) -> Path:
    run = tmp_path_factory.mktemp(f"run-{name.replace('+', 'plus')}")
    cfg = TrainConfig(epochs=4, patience=4, threads=1, seed=1, lr=lr)
    train(name, data, run, config=cfg, model_overrides=over, progress=False, log=lambda m: None)
    return run


@pytest.fixture(scope="session")
def dkt_run(tmp_path_factory: pytest.TempPathFactory, skill_data: Path) -> Path:
    # a tiny DKT that learns the skills in 4 epochs: a faster rate and less dropout than
    # the defaults chosen for ASSIST-sized data
    return _train(tmp_path_factory, skill_data, "dkt", lr=5e-3, hidden=32, emb_dim=16, dropout=0.2)


@pytest.fixture(scope="session")
def psikt_run(tmp_path_factory: pytest.TempPathFactory, skill_data: Path) -> Path:
    return _train(tmp_path_factory, skill_data, "psikt")


@pytest.fixture(scope="session")
def dkt_items_run(tmp_path_factory: pytest.TempPathFactory, skill_data: Path) -> Path:
    """The tiny DKT of ``dkt_run``, item-aware (``items='rasch'``)."""
    return _train(
        tmp_path_factory,
        skill_data,
        "dkt",
        lr=5e-3,
        hidden=32,
        emb_dim=16,
        dropout=0.2,
        items="rasch",
    )


@pytest.fixture(scope="session")
def akt_run(tmp_path_factory: pytest.TempPathFactory, skill_data: Path) -> Path:
    """A small AKT (its defaults are sized for ASSISTments: d_model 256)."""
    return _train(
        tmp_path_factory,
        skill_data,
        "akt",
        lr=5e-3,
        d_model=32,
        heads=4,
        d_ff=32,
        final_fc=32,
        window=16,
    )


@pytest.fixture(scope="session")
def pg_database() -> str | None:
    """A fresh PostgreSQL database for this session, or None when no server answers."""
    try:
        admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            name = f"kt_tutor_test_{uuid.uuid4().hex[:10]}"
            c.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - report as a skip reason
        pytest.skip(f"PostgreSQL at {PG_URL} unavailable: {exc}")
        return None
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as c:
        c.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :n AND pid <> pg_backend_pid()"
            ),
            {"n": name},
        )
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def reset_schema(url: str) -> None:
    """An empty schema at the models' shape (the migration tests cover Alembic itself)."""
    engine = create_db_engine(url)
    if url.startswith("postgresql"):
        with engine.begin() as c:
            c.execute(text("DROP SCHEMA public CASCADE"))
            c.execute(text("CREATE SCHEMA public"))
    Base.metadata.create_all(engine)
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'tutor.db'}"
    else:
        url = request.getfixturevalue("pg_database")
    reset_schema(url)
    return url


@dataclass
class World:
    """Two organisations: ``acme`` (model, concepts c0..c3, learners u0..u5, groups g1 =
    {u0, u1} and g2 = {u2}) and ``other`` (learner x0, item ix). ``keys`` maps a role label to
    an API key: admin, teacher (g1), learner (u0), ingest, other_admin, other_learner (x0)."""

    url: str
    settings: Settings
    keys: dict[str, str] = field(default_factory=dict)
    model_id: int = 0

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


def build_world(url: str, run: Path, *, prerequisites: bool = True) -> World:
    from tutor import operations as ops
    from tutor.db import Group, Learner

    # no background analytics warm-up: tests see the caches they fill (one test turns it on);
    # the hot routes on the event loop (off by default): on PostgreSQL every API test then
    # takes that path, and its way back to a thread where a request meets slow work
    settings = Settings(
        database_url=url,
        environment="test",
        analytics_warmup_groups=0,
        gc_freeze=False,
        inline_hot_routes=True,
    )
    engine = create_db_engine(url)
    factory = make_sessionmaker(engine)
    world = World(url=url, settings=settings)
    with factory() as s, s.begin():
        acme = ops.create_org(s, slug="acme", name="Acme School")
        mv = ops.register_model(s, org=acme, run_dir=run, activate=True)
        world.model_id = mv.id
        if prerequisites:
            ops.set_prerequisites(s, org=acme, edges=[("c0", "c1"), ("c1", "c2")])
        learners = {}
        for k in range(6):
            learners[f"u{k}"] = Learner(org_id=acme.id, external_id=f"u{k}", n_answers=0)
            s.add(learners[f"u{k}"])
        g1 = Group(org_id=acme.id, external_id="g1", name="Class 1")
        g2 = Group(org_id=acme.id, external_id="g2", name="Class 2")
        s.add_all([g1, g2])
        s.flush()
        ops.add_members(s, group=g1, learners=[learners["u0"], learners["u1"]])
        ops.add_members(s, group=g2, learners=[learners["u2"]])
        other = ops.create_org(s, slug="other", name="Other Org")
        ops.upsert_items(s, org=other, items=[("ix", ["cx"], {})])
        x0 = Learner(org_id=other.id, external_id="x0", n_answers=0)
        s.add(x0)
        s.flush()
        pep = settings.key_pepper
        world.keys["admin"], _ = create_key(s, org=acme, role="admin", pepper=pep)
        world.keys["teacher"], _ = create_key(s, org=acme, role="teacher", pepper=pep, groups=[g1])
        world.keys["learner"], _ = create_key(
            s, org=acme, role="learner", pepper=pep, learner=learners["u0"]
        )
        world.keys["ingest"], _ = create_key(s, org=acme, role="ingest", pepper=pep)
        world.keys["other_admin"], _ = create_key(s, org=other, role="admin", pepper=pep)
        world.keys["other_learner"], _ = create_key(
            s, org=other, role="learner", pepper=pep, learner=x0
        )
    engine.dispose()
    return world


@pytest.fixture
def world(db_url: str, dkt_run: Path) -> World:
    from tutor.catalogue import clear_cache
    from tutor.service import MODELS

    MODELS.clear()
    clear_cache()
    return build_world(db_url, dkt_run)


@pytest.fixture
def client(world: World):
    from fastapi.testclient import TestClient

    from tutor.api import create_app

    with TestClient(create_app(world.settings)) as c:
        yield c
