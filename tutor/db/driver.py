"""The hot path's statements run on the database driver directly (PostgreSQL), and rows read
that way taken into the session as ORM objects (:func:`attach`).

A statement run by ``Session.execute`` passes through SQLAlchemy's ORM and Core execution
layers: the compiled cache, parameter processing, a result object built from the cursor's
description, ORM instances. For the three statements a request of the hot routes runs (the
answer's locking read and its writes, the learner read of next-items and mastery) that costs
more client CPU than the statements themselves (measured: 0.95 ms against 0.47 ms for the
answer's locking read through psycopg alone, with its transaction; see
``benchmarks/serve_cpu.py``).

:func:`fetch` and :func:`execute` run a Core statement, compiled once, through the session's
own connection (its transaction), with SQLAlchemy's bind and result processors for the
statement's types applied as SQLAlchemy applies them, and with the engine's
``before_cursor_execute`` listeners called (the statement-count tests see these statements
like any other). On any other database they are plain Core executions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from sqlalchemy import inspect
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql import ClauseElement

T = TypeVar("T")

#: compiled form per (statement, dialect name): the SQL text, bind processors by parameter
#: name, result processors by column position (None where the column needs none). The
#: statements are the callers' cached ones (a few dozen in all)
_COMPILED: dict[tuple[ClauseElement, str], tuple[str, dict[str, Callable], list[Any]]] = {}


def _compiled(stmt: ClauseElement, dialect: Dialect) -> tuple[str, dict[str, Callable], list[Any]]:
    key = (stmt, dialect.name)
    hit = _COMPILED.get(key)
    if hit is None:
        comp = stmt.compile(dialect=dialect)
        binds = {}
        for name, bp in comp.binds.items():
            proc = bp.type.dialect_impl(dialect).bind_processor(dialect)
            if proc is not None:
                binds[name] = proc
        results = [
            col.type.dialect_impl(dialect).result_processor(dialect, None)
            for col in getattr(stmt, "selected_columns", ())
        ]
        hit = _COMPILED[key] = (comp.string, binds, results)
    return hit


def _run(session: Session, stmt: ClauseElement, params: Mapping[str, Any]) -> tuple[Any, list]:
    """The cursor of ``stmt`` run with ``params`` on the session's connection (PostgreSQL),
    and the statement's result processors.

    As ``Session.execute`` would: a driver error is raised as SQLAlchemy's exception for it
    (``IntegrityError``, ``OperationalError``, ...: what the callers handle), the connection
    invalidated where the error says it was lost."""
    conn: Connection = session.connection()
    dialect = conn.dialect
    sql, binds, results = _compiled(stmt, dialect)
    values = dict(params)
    for name, proc in binds.items():
        if name in values:
            values[name] = proc(values[name])
    dbapi = conn.connection.dbapi_connection
    cursor = dbapi.cursor()
    if conn.dispatch.before_cursor_execute:  # listeners (they observe: none may rewrite)
        conn.dispatch.before_cursor_execute(conn, cursor, sql, values, None, False)
    try:
        cursor.execute(sql, values)  # prepared by psycopg once it has run it a few times
    except dialect.loaded_dbapi.Error as exc:
        cursor.close()
        lost = dialect.is_disconnect(exc, dbapi, cursor)
        if lost:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            sql,
            values,
            exc,
            dialect.loaded_dbapi.Error,
            hide_parameters=True,
            connection_invalidated=lost,
            dialect=dialect,
        ) from exc
    return cursor, results


def _autoflush(session: Session) -> None:
    """As an ORM query would: the session's pending changes written first."""
    if session.autoflush:
        session.flush()  # nothing to do (and cheap) when nothing is pending


def fetch(session: Session, stmt: ClauseElement, params: Mapping[str, Any]) -> list[tuple]:
    """The rows of a ``SELECT`` (or a statement with ``RETURNING``) as tuples, in the order of
    its columns, converted as SQLAlchemy would convert them."""
    _autoflush(session)
    if session.get_bind().dialect.name != "postgresql":
        return [tuple(r) for r in session.connection().execute(stmt, params)]
    cursor, results = _run(session, stmt, params)
    try:
        rows = cursor.fetchall()
    finally:
        cursor.close()
    if any(p is not None for p in results):
        rows = [
            tuple(v if p is None else p(v) for p, v in zip(results, row, strict=True))
            for row in rows
        ]
    return rows


def execute(session: Session, stmt: ClauseElement, params: Mapping[str, Any]) -> None:
    """Run a statement that returns no rows (``INSERT``, ``UPDATE``)."""
    _autoflush(session)
    if session.get_bind().dialect.name != "postgresql":
        session.connection().execute(stmt, params)
        return
    _run(session, stmt, params)[0].close()


@functools.cache
def columns_of(cls: type) -> tuple[Any, ...]:
    """The mapped class's column attributes' columns, in mapper order (the order
    :func:`attach` reads a row's values in)."""
    return tuple(attr.columns[0] for attr in inspect(cls).column_attrs)


def attach(session: Session, cls: type[T], values: tuple | list) -> T:
    """The ORM object of a row read by :func:`fetch` (``values``: the row's slice of
    :func:`columns_of`), in the session as if the ORM had loaded it: the object the session
    holds for that primary key, its attributes set to these values, or a new persistent one.
    Nothing is marked as changed, so a flush writes nothing for it."""
    keys = _attr_keys(cls)
    pk = tuple(values[i] for i in _pk_positions(cls))
    obj = session.identity_map.get(_mapper(cls).identity_key_from_primary_key(pk))
    if obj is not None:
        for k, v in zip(keys, values, strict=True):
            set_committed_value(obj, k, v)
        return obj
    # a new instance whose column values are set as loaded (not through the constructor's
    # instrumented attribute sets: 26.5 -> 17.1 µs an object, three or four a request)
    obj = _mapper(cls).class_manager.new_instance()
    obj.__dict__.update(zip(keys, values, strict=True))
    make_transient_to_detached(obj)
    session.add(obj)
    return obj


def bucket(n: int) -> int:
    """The size a statement is built for where it reads ``n`` values (a list bound one
    parameter per value, a ``LIMIT``): ``n`` rounded up to a power of two, so that a few
    statement texts serve any request, each prepared once, and each planned once by
    PostgreSQL (its generic plan; for a ``LIMIT`` or an array of unknown size it plans every
    execution anew)."""
    return 1 << max(0, n - 1).bit_length()


@functools.cache
def slices(classes: tuple[type, ...]) -> tuple[slice, ...]:
    """Each class's slice of a row that reads the classes' :func:`columns_of` one class after
    another (the rest of the row, if any, follows the last slice)."""
    out, start = [], 0
    for cls in classes:
        n = len(columns_of(cls))
        out.append(slice(start, start + n))
        start += n
    return tuple(out)


def present(cls: type, values: tuple | list) -> bool:
    """Whether an outer join found a row of ``cls`` (its primary key is not null)."""
    return values[_pk_positions(cls)[0]] is not None


@functools.cache
def _mapper(cls: type) -> Any:
    return inspect(cls)


@functools.cache
def _attr_keys(cls: type) -> tuple[str, ...]:
    return tuple(attr.key for attr in inspect(cls).column_attrs)


@functools.cache
def _pk_positions(cls: type) -> tuple[int, ...]:
    cols = columns_of(cls)
    return tuple(cols.index(c) for c in inspect(cls).primary_key)
