"""Alembic owns the schema: upgrade / downgrade / upgrade round trips on SQLite and
PostgreSQL, and autogenerate finds no difference between the migrated database and the
models (a model changed without a migration fails here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, create_engine, inspect, text

from tutor.db import Base, create_db_engine
from tutor.db.migrate import current, downgrade, upgrade

TABLES = {t.name for t in Base.metadata.sorted_tables}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'migrate.db'}"
    url = request.getfixturevalue("pg_database")
    engine = create_db_engine(url)
    with engine.begin() as c:
        c.execute(text("DROP SCHEMA public CASCADE"))
        c.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return url


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _diff(url: str, metadata: MetaData) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": False}
            )
            return compare_metadata(ctx, metadata)
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_and_no_drift(empty_url: str) -> None:
    assert current(empty_url) is None
    upgrade(empty_url, "head")
    head = current(empty_url)
    assert head is not None
    assert _tables(empty_url) >= TABLES

    downgrade(empty_url, "base")
    assert current(empty_url) is None
    assert _tables(empty_url) - {"alembic_version"} == set()

    upgrade(empty_url, "head")
    assert current(empty_url) == head
    assert _tables(empty_url) >= TABLES

    diff = _diff(empty_url, Base.metadata)
    assert diff == [], f"models and migrations differ (write a migration): {diff}"

    # the comparison is not vacuous: a column the migrations lack is found
    changed = MetaData(naming_convention=Base.metadata.naming_convention)
    for t in Base.metadata.sorted_tables:
        t.to_metadata(changed)
    changed.tables["learners"].append_column(Column("nickname_len", Integer))
    found = _diff(empty_url, changed)
    assert any(d[0] == "add_column" and d[3].name == "nickname_len" for d in found), found
