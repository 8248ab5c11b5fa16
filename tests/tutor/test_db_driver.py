"""``tutor.db.driver``: the hot path's statements run on the driver read and write what the
ORM would, on SQLite and PostgreSQL: the same rows and types, objects taken into the session
with nothing to flush, pending changes flushed first, driver errors raised as SQLAlchemy's,
and the engine's statement listeners called."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, event, insert, select
from sqlalchemy.exc import IntegrityError

from tutor import operations as ops
from tutor import service
from tutor.clock import as_utc
from tutor.db import (
    Interaction,
    Learner,
    LearnerState,
    Organisation,
    create_db_engine,
    driver,
    make_sessionmaker,
)

WHEN = datetime(2024, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture
def factory(db_url):  # noqa: ANN001, ANN201
    engine = create_db_engine(db_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def _seed(factory) -> tuple[int, int]:  # noqa: ANN001
    """An organisation with an item, a learner with a state for a (registered) model id and
    one stored answer with a response: (organisation id, learner id)."""
    when = WHEN
    with factory() as s, s.begin():
        org = ops.create_org(s, slug="acme", name="Acme")
        ops.upsert_items(s, org=org, items=[("i1", ["c1"], {})])
        org.settings = {"mastery_scale": "success", "nested": {"a": [1, 2.5, None]}}
        learner = Learner(org_id=org.id, external_id="u1", n_answers=1, first_seen=when)
        s.add(learner)
        s.flush()
        item_id = _item_id(s, org.id)
        s.add(
            Interaction(
                org_id=org.id,
                learner_id=learner.id,
                item_id=item_id,
                event_id="e1",
                correct=1,
                timestamp=when,
                elapsed_ms=1234,
                response={"mastery": [{"p": 0.5}], "none": None},
            )
        )
        return org.id, learner.id


def _item_id(s, org_id: int) -> int:  # noqa: ANN001
    from tutor.db import Item

    return s.scalar(select(Item.id).where(Item.org_id == org_id))


def _lock_params(org_id: int) -> dict:
    return service._lock_params(org_id, ["u1", "nobody"], ["e1", "e2"])


LOCK = service._lock_query(2, 2)


def test_fetch_reads_what_core_reads(factory):
    org_id, _ = _seed(factory)
    with factory() as s, s.begin():
        q = LOCK
        by_driver = driver.fetch(s, q, _lock_params(org_id))
        by_core = [tuple(r) for r in s.connection().execute(q, _lock_params(org_id))]
    assert by_driver == by_core and len(by_driver) == 1
    row = by_driver[0]
    # the types the ORM gives: datetimes (aware on PostgreSQL), parsed JSON, text
    assert WHEN in [as_utc(v) for v in row if isinstance(v, datetime)]
    assert {"mastery": [{"p": 0.5}], "none": None} in row
    assert {"mastery_scale": "success", "nested": {"a": [1, 2.5, None]}} in row
    assert row[-1] == "i1"


def test_attach_refreshes_the_session_object_and_leaves_nothing_to_flush(factory):
    org_id, learner_id = _seed(factory)
    with factory() as s, s.begin():
        held = s.get(Learner, learner_id)
        assert held.n_answers == 1
        s.connection().execute(
            Learner.__table__.update().where(Learner.id == learner_id).values(n_answers=7)
        )
        rows = driver.fetch(s, LOCK, _lock_params(org_id))
        bounds = driver.slices(service._LOCK_PARTS)
        learner = driver.attach(s, Learner, rows[0][bounds[0]])
        assert learner is held and learner.n_answers == 7
        org = driver.attach(s, Organisation, rows[0][bounds[1]])
        assert org.settings["mastery_scale"] == "success"
        inter = driver.attach(s, Interaction, rows[0][bounds[3]])
        assert inter.event_id == "e1" and inter.elapsed_ms == 1234
        assert not driver.present(LearnerState, rows[0][bounds[2]])
        assert not s.dirty and not s.new
        seen: list[str] = []
        event.listen(s.get_bind(), "before_cursor_execute", lambda *a: seen.append(a[2]))
        s.flush()
        assert seen == []  # attached objects are as loaded: nothing to write


def test_pending_changes_are_flushed_before_a_driver_statement(factory):
    org_id, _ = _seed(factory)
    with factory() as s, s.begin():
        s.add(Learner(org_id=org_id, external_id="nobody", n_answers=0))
        rows = driver.fetch(s, LOCK, _lock_params(org_id))
    assert len(rows) == 2  # the new learner, not yet flushed, is found (autoflush)


def test_driver_errors_are_sqlalchemys_and_the_session_recovers(factory):
    org_id, learner_id = _seed(factory)
    with factory() as s:
        item_id = _item_id(s, org_id)
        row = {
            "org_id": org_id,
            "learner_id": learner_id,
            "item_id": item_id,
            "event_id": "e1",  # stored already: unique per learner
            "correct": 0,
            "timestamp": datetime(2024, 3, 2, tzinfo=UTC),
            "source": "api",
            "received_at": datetime(2024, 3, 2, tzinfo=UTC),
        }
        t = Interaction.__table__
        stmt = insert(t).values({t.c[k]: bindparam(k) for k in row})
        with pytest.raises(IntegrityError):
            driver.execute(s, stmt, row)
        s.rollback()
        assert s.scalar(select(Learner.n_answers).where(Learner.id == learner_id)) == 1


def test_statement_listeners_see_driver_statements(factory):
    org_id, _ = _seed(factory)
    seen: list[str] = []
    with factory() as s, s.begin():
        event.listen(s.get_bind(), "before_cursor_execute", lambda *a: seen.append(a[2]))
        driver.fetch(s, LOCK, _lock_params(org_id))
    assert any("FROM learners" in sql for sql in seen)


@pytest.mark.parametrize("which", ["answer's locking read", "next-items' learner read"])
def test_hot_reads_are_planned_once_on_postgresql(factory, which):
    """PostgreSQL plans a prepared statement once (its generic plan) only where that plan's
    estimated cost is close to those of the plans it made for the values: the locking read
    with an ``= ANY`` array of unknown length, and the learner read with its recent answers'
    ``LIMIT`` as a parameter, were planned anew at every request. Each must reach the
    generic plan, run as its route runs it."""
    from tutor.api import deps

    org_id, _ = _seed(factory)
    with factory() as s:
        if s.get_bind().dialect.name != "postgresql":
            pytest.skip("prepared statements and their plans: PostgreSQL")
        for k in range(16):  # psycopg prepares it at the 6th run, PostgreSQL decides after 5
            with s.begin():
                if which == "answer's locking read":
                    query = service._lock_query(1, 1)
                    params = service._lock_params(org_id, ["u1"], [f"e{k}"])
                else:
                    query = deps._learner_query(True, driver.bucket(5))
                    params = {"org": org_id, "ext": "u1"}
                driver.fetch(s, query, params)
        with s.begin():
            plans = (
                s.connection()
                .exec_driver_sql(
                    "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                    "WHERE statement LIKE '%%FROM learners%%'"
                )
                .all()
            )
    assert len(plans) == 1, f"{which} was not prepared: {plans}"
    generic, custom = plans[0]
    assert generic > 0 and custom <= 5, plans


def test_a_lost_connection_is_invalidated_and_the_next_transaction_reconnects(factory, db_url):
    """A database restart between two requests: the driver statement fails as SQLAlchemy's
    ``OperationalError`` (the API's 503) with the connection invalidated, and the session's
    next transaction gets a fresh connection."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import DBAPIError

    if not db_url.startswith("postgresql"):
        pytest.skip("a server connection to lose: PostgreSQL")
    org_id, _ = _seed(factory)
    query, params = service._lock_query(1, 1), service._lock_params(org_id, ["u1"], ["e1"])
    with factory() as s:
        with s.begin():
            pid = s.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()
            driver.fetch(s, query, params)
        admin = create_engine(db_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        admin.dispose()
        s.begin()
        with pytest.raises(DBAPIError) as err:
            driver.fetch(s, query, params)
        assert err.value.connection_invalidated  # the driver statement's own error says so
        s.rollback()
        with s.begin():
            assert len(driver.fetch(s, query, params)) == 1
