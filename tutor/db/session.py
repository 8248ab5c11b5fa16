"""Engine and session factory, and :func:`db_scope` (the database a session talks to, the
scope of the per-process caches). SQLite runs in WAL mode with foreign keys on, and every
transaction takes the write lock up front (``BEGIN IMMEDIATE``) so two writers never
interleave a read-modify-write of the same learner's state."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import URL, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def json_dumps(value: Any) -> str:
    """JSON columns' text, written by orjson (a learner's evidence over 40 concepts: 4 µs
    instead of the standard library's 42, on every answer); what orjson refuses (integers
    beyond 64 bits, a lone surrogate) goes through the standard library as before. The
    service keeps NaN and infinity out of its JSON columns (``tutor.api.schemas``,
    the importer), where the two would differ (orjson writes null)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value)


#: every digit as ``0``, everything else as a space: a run of 19 zeros in a translated text is a
#: run of 19 digits (a C-speed search; a regular expression cost as much as the parse)
_DIGITS = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
_LONG_RUN = b"0" * 19


def json_loads(text: str | bytes) -> Any:
    """JSON columns read by orjson; by the standard library where a run of 19 digits may be
    an integer beyond 64 bits (orjson would read it as a float; a float as Python writes it
    has at most 17 digits) and what orjson refuses (a ``NaN`` an older SQLite database may
    hold)."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    if _LONG_RUN in raw.translate(_DIGITS):
        return json.loads(text)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(text)


def create_db_engine(
    url: str,
    *,
    sqlite_timeout: float = 30.0,
    pool_size: int = 10,
    pool_pre_ping: bool = False,
    autocommit: bool = False,
) -> Engine:
    """The engine for ``url``. ``pool_pre_ping`` (PostgreSQL) tests each connection with a
    round trip when it leaves the pool: off by default, since it costs a round trip per
    request; without it a connection that died (a database restart) fails its request with
    an OperationalError (503), SQLAlchemy then invalidates the pool and the next request
    reconnects."""
    if is_sqlite(url):
        if autocommit:
            raise ValueError("autocommit is for PostgreSQL (SQLite reads in a read transaction)")
        engine = create_engine(
            url,
            connect_args={"timeout": sqlite_timeout, "check_same_thread": False},
            json_serializer=json_dumps,
            json_deserializer=json_loads,
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
            dbapi_conn.isolation_level = None  # pysqlite: let us issue BEGIN
            cur = dbapi_conn.cursor()
            if url not in ("sqlite://", "sqlite:///:memory:"):
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(sqlite_timeout * 1000)}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn) -> None:  # noqa: ANN001
            # read-only work (execution option readonly=True) need not wait for writers
            ro = conn.get_execution_options().get("readonly", False)
            conn.exec_driver_sql("BEGIN" if ro else "BEGIN IMMEDIATE")

        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pool_pre_ping,
        json_serializer=json_dumps,
        json_deserializer=json_loads,
        # a connection in autocommit has no transaction to roll back when it returns
        **({"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None} if autocommit else {}),
    )


def make_sessionmaker(engine: Engine, *, autoflush: bool = True) -> sessionmaker[Session]:
    """Sessions on ``engine`` (``autoflush=False`` for read requests: their sessions hold
    rebuilt learner states that only ``tutor.states.keep_rebuilt_states`` may write)."""
    return sessionmaker(engine, expire_on_commit=False, autoflush=autoflush)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on any error."""
    with factory() as session, session.begin():
        yield session


def db_scope(session: Session) -> str:
    """The database a session talks to, as a cache scope."""
    return _url_scope(session.get_bind().url)


@lru_cache(maxsize=64)
def _url_scope(url: URL) -> str:
    return url.render_as_string(hide_password=True)
