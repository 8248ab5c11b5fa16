"""What the command groups of ``tutor`` share: the two consoles, ending a command with an
error, ``name=value`` options, and the database options and session of the service commands.

``out`` is standard output (results, tables, JSON); ``console`` is standard error (progress,
messages, errors). A command that cannot do its job ends through :func:`fail`: a message
naming the problem and exit code 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL of the database (default: DATABASE_URL / the settings).",
        show_default=False,
    ),
]
OrgOption = Annotated[str, typer.Option("--org", help="Organisation slug.")]


def fail(message: str) -> NoReturn:
    """Print ``error: message`` on standard error and end the command with exit code 2."""
    console.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    raise typer.Exit(code=2)


def name_values(
    raw: list[str] | None, param_hint: str, *, identifiers: bool = False
) -> dict[str, str]:
    """The ``name=value`` items of a repeatable option as a dict (a later name wins).

    ``identifiers``: names with ``-`` are read as ``_`` and values are stripped (model and
    training options); otherwise a value is kept as given (loader options)."""
    opts: dict[str, str] = {}
    for item in raw or []:
        if "=" not in item:
            raise typer.BadParameter(f"expected name=value, got {item!r}", param_hint=param_hint)
        k, v = item.split("=", 1)
        if identifiers:
            opts[k.strip().replace("-", "_")] = v.strip()
        else:
            opts[k.strip()] = v
    return opts


# ---------------------------------------------------------------------- the database
def resolve_url(database_url: str | None) -> str:
    """``--database-url`` if given, else the settings' (a bad environment fails)."""
    if database_url:
        return database_url
    from tutor.settings import Settings

    try:
        return Settings().database_url
    except ValueError as exc:  # pydantic's ValidationError: a bad environment
        fail(f"settings: {exc}")


def safe_url(url: str) -> str:
    """The URL to show: its password hidden."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as given
        return url


def db_error(url: str, exc: Exception) -> NoReturn:
    """Fail with the first line of a database error (and a hint when the schema is missing)."""
    orig = getattr(exc, "orig", None) or exc
    msg = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    hint = ""
    if "no such table" in msg or ("relation" in msg and "does not exist" in msg):
        hint = " (is the schema there? run: tutor db upgrade)"
    fail(f"database {safe_url(url)}: {msg}{hint}")


@contextmanager
def _database(database_url: str | None, autocommit_reads: bool = False) -> Iterator[tuple]:
    """The engine of ``database_url`` and, with ``autocommit_reads``, an engine for reads
    (SQLite: the same, in read transactions; PostgreSQL: autocommit), disposed at the end;
    operation and database errors inside end the command with exit code 2."""
    from sqlalchemy.exc import SQLAlchemyError

    from tutor.db import create_db_engine
    from tutor.db.session import is_sqlite
    from tutor.operations import OperationError

    url = resolve_url(database_url)
    own = None
    try:
        engine = create_db_engine(url)
        if autocommit_reads and not is_sqlite(url):
            own = create_db_engine(url, autocommit=True)
    except (SQLAlchemyError, ValueError) as exc:
        db_error(url, exc)
    reads = engine.execution_options(readonly=True) if own is None else own
    try:
        yield engine, reads
    except OperationError as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        db_error(url, exc)
    finally:
        engine.dispose()
        if own is not None:
            own.dispose()


@contextmanager
def db_factories(
    database_url: str | None,
) -> Iterator[tuple[Callable[[], Session], Callable[[], Session]]]:
    """Session factories for work in many short transactions (reads, writes), as the
    service has them: reads in a read transaction on SQLite (which never waits for a
    writer) and in autocommit on PostgreSQL. Errors end the command as :func:`db_session`'s."""
    from tutor.db import make_sessionmaker

    with _database(database_url, autocommit_reads=True) as (engine, reads):
        yield make_sessionmaker(reads, autoflush=False), make_sessionmaker(engine)


@contextmanager
def db_session(database_url: str | None) -> Iterator[Session]:
    """A session on the database in one transaction (commits on success); operation and
    database errors end the command with exit code 2."""
    from tutor.db import make_sessionmaker

    with (
        _database(database_url) as (engine, _),
        make_sessionmaker(engine)() as session,
        session.begin(),
    ):
        yield session


def find_org(session: Session, slug: str) -> Any:
    """The organisation ``slug`` (an unknown one fails through :func:`db_session`)."""
    from tutor.operations import get_org

    return get_org(session, slug)


def when(dt: Any) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM`` (``-`` for none)."""
    return "-" if dt is None else dt.strftime("%Y-%m-%d %H:%M")
