"""The service's administration on the command line: ``tutor db``, ``orgs``, ``keys``,
``states`` and ``prerequisites`` (the database and what an organisation holds), ``serve``
(the HTTP API) and ``demo`` (from the bundled sample to a running service)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from data_loaders.progress import RichProgress

from .common import (
    DatabaseUrl,
    OrgOption,
    console,
    db_error,
    db_factories,
    db_session,
    fail,
    find_org,
    out,
    resolve_url,
    safe_url,
    when,
)

db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
orgs_app = typer.Typer(help="Organisations.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (shown once, never stored).", no_args_is_help=True)
states_app = typer.Typer(help="Learner states.", no_args_is_help=True)
prereq_app = typer.Typer(help="The prerequisite graph of the concepts.", no_args_is_help=True)


# ---------------------------------------------------------------------- db
def _alembic(action: str, url: str, revision: str | None = None) -> str | None:
    """Run a migration ``action`` (upgrade, downgrade or current) and return the revision the
    schema is then at; a migration or database error fails."""
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from tutor.db import migrate

    try:
        if action == "upgrade":
            migrate.upgrade(url, revision or "head")
        elif action == "downgrade":
            migrate.downgrade(url, revision or "base")
        return migrate.current(url)
    except CommandError as exc:
        fail(f"migration: {exc}")
    except SQLAlchemyError as exc:
        db_error(url, exc)


def _migrate_to(action: str, revision: str, database_url: str | None) -> None:
    url = resolve_url(database_url)
    rev = _alembic(action, url, revision)
    out.print(f"database {safe_url(url)} at revision {rev or 'base (empty)'}", highlight=False)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    database_url: DatabaseUrl = None,
) -> None:
    """Upgrade the schema to REVISION (default: the newest)."""
    _migrate_to("upgrade", revision, database_url)


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision ('base': drop everything).")],
    database_url: DatabaseUrl = None,
) -> None:
    """Downgrade the schema to REVISION."""
    _migrate_to("downgrade", revision, database_url)


@db_app.command("current")
def db_current(database_url: DatabaseUrl = None) -> None:
    """Print the schema's current revision."""
    url = resolve_url(database_url)
    rev = _alembic("current", url)
    out.print(rev or "base (no schema)", highlight=False)


# ---------------------------------------------------------------------- orgs
@orgs_app.command("create")
def orgs_create(
    slug: Annotated[str, typer.Argument(help="Short unique id, e.g. acme.")],
    name: Annotated[str | None, typer.Option(help="Display name (default: the slug).")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an organisation."""
    from tutor.operations import create_org

    with db_session(database_url) as s:
        org = create_org(s, slug=slug, name=name)
        out.print(f"created organisation {org.slug!r} (id {org.id}, {org.name})", highlight=False)


@orgs_app.command("list")
def orgs_list(database_url: DatabaseUrl = None) -> None:
    """List the organisations."""
    from sqlalchemy import func, select

    from tutor.db import Learner, ModelVersion, Organisation

    with db_session(database_url) as s:
        n_learners = {
            o: n
            for o, n in s.execute(select(Learner.org_id, func.count()).group_by(Learner.org_id))
        }
        n_models = {
            o: n
            for o, n in s.execute(
                select(ModelVersion.org_id, func.count()).group_by(ModelVersion.org_id)
            )
        }
        table = Table(title="Organisations")
        for col in ("slug", "name", "learners", "models", "active model", "created"):
            table.add_column(col, justify="right" if col in ("learners", "models") else "left")
        for org in s.scalars(select(Organisation).order_by(Organisation.slug)):
            table.add_row(
                org.slug,
                org.name,
                f"{n_learners.get(org.id, 0):,}",
                str(n_models.get(org.id, 0)),
                "-" if org.active_model_id is None else str(org.active_model_id),
                when(org.created_at),
            )
    out.print(table)


# ---------------------------------------------------------------------- keys
@keys_app.command("create")
def keys_create(
    org: OrgOption,
    role: Annotated[str, typer.Option(help="admin, teacher, learner or ingest.")],
    learner: Annotated[
        str | None, typer.Option(help="A learner key's learner (external id).")
    ] = None,
    group: Annotated[
        list[str] | None, typer.Option("--group", help="A teacher key's group (repeatable).")
    ] = None,
    name: Annotated[str, typer.Option(help="What the key is for.")] = "",
    database_url: DatabaseUrl = None,
) -> None:
    """Create an API key and print it once (it is not stored: keep it now)."""
    from sqlalchemy import select

    from tutor.db import Group, Learner
    from tutor.security import ROLES, create_key
    from tutor.settings import Settings

    if role not in ROLES:
        fail(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    try:
        pepper = Settings().key_pepper
    except ValueError as exc:
        fail(f"settings: {exc}")
    with db_session(database_url) as s:
        o = find_org(s, org)
        lr = None
        if learner is not None:
            lr = s.scalar(
                select(Learner).where(Learner.org_id == o.id, Learner.external_id == learner)
            )
            if lr is None:
                fail(f"learner {learner!r} does not exist in organisation {org!r}")
        groups = []
        for g in group or []:
            row = s.scalar(select(Group).where(Group.org_id == o.id, Group.external_id == g))
            if row is None:
                fail(f"group {g!r} does not exist in organisation {org!r}")
            groups.append(row)
        try:
            key, row = create_key(
                s, org=o, role=role, pepper=pepper, learner=lr, groups=groups, name=name
            )
        except ValueError as exc:
            fail(str(exc))
        prefix = row.prefix
    out.print(key, highlight=False, soft_wrap=True)
    console.print(
        f"created {role} key {prefix} in {org!r}. [bold]This is the only time the key is "
        "shown[/bold]: it is not stored (only its hash is), so keep it now.",
        highlight=False,
    )


def _scope(row: Any, learner_ext: str | None) -> str:
    if row.role == "learner":
        return f"learner {learner_ext}"
    if row.role == "teacher":
        return "groups " + ", ".join(sorted(g.external_id for g in row.groups))
    return "organisation"


@keys_app.command("list")
def keys_list(org: OrgOption, database_url: DatabaseUrl = None) -> None:
    """List an organisation's API keys (prefix, role, scope; never the key)."""
    from sqlalchemy import select

    from tutor.db import ApiKey, Learner

    with db_session(database_url) as s:
        o = find_org(s, org)
        table = Table(title=f"API keys of {org}")
        for col in ("prefix", "role", "scope", "name", "created", "revoked"):
            table.add_column(col)
        rows = s.execute(
            select(ApiKey, Learner.external_id)
            .outerjoin(Learner, Learner.id == ApiKey.learner_id)
            .where(ApiKey.org_id == o.id)
            .order_by(ApiKey.created_at, ApiKey.id)
        ).all()
        for key, learner_ext in rows:
            table.add_row(
                key.prefix,
                key.role,
                _scope(key, learner_ext),
                key.name,
                when(key.created_at),
                when(key.revoked_at) if key.revoked_at else "",
            )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    prefix: Annotated[str, typer.Argument(help="The key's prefix (tutor keys list).")],
    org: OrgOption,
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke an API key. A service process that has not seen the key refuses it at once;
    one that authenticated it recently keeps accepting it for at most
    TUTOR_AUTH_CACHE_SECONDS (30 s by default; 0 turns that cache off)."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from tutor.db import ApiKey

    with db_session(database_url) as s:
        o = find_org(s, org)
        key = s.scalar(select(ApiKey).where(ApiKey.org_id == o.id, ApiKey.prefix == prefix))
        if key is None:
            fail(f"no API key with prefix {prefix!r} in organisation {org!r}")
        if key.revoked_at is not None:
            out.print(f"key {prefix} was already revoked ({when(key.revoked_at)})")
            return
        key.revoked_at = datetime.now(UTC)
    from tutor.settings import Settings

    ttl = Settings().auth_cache_seconds
    out.print(
        f"revoked key {prefix} of {org!r}; running service processes refuse it within "
        f"{ttl:g} s (TUTOR_AUTH_CACHE_SECONDS)",
        highlight=False,
    )


# ---------------------------------------------------------------------- states
@states_app.command("rebuild")
def states_rebuild(
    org: OrgOption,
    model: Annotated[
        int | None, typer.Option("--model", help="Model id (default: the active model).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Rebuild every learner's state for a model now (instead of lazily, learner by learner)."""
    import time

    from sqlalchemy import func, select

    from tutor.db import Learner
    from tutor.operations import rebuild_states_live

    progress = RichProgress(enabled=not quiet)
    t0 = time.perf_counter()
    with db_session(database_url) as s:
        o = find_org(s, org)
        if model is None and o.active_model_id is None:
            fail(
                f"organisation {org!r} has no active model (register one: tutor models "
                f"register RUN_DIR --org {org} --activate, or name one with --model)"
            )
        total = s.scalar(select(func.count()).select_from(Learner).where(Learner.org_id == o.id))
        org_id, mid = o.id, model or o.active_model_id
    # batch by batch, each written in a short transaction of its own: a server using the
    # database meanwhile keeps storing answers (rebuild_states_live)
    try:
        with db_factories(database_url) as (read_factory, write_factory):
            progress.start("rebuilding learner states", total)
            n, skipped = rebuild_states_live(
                read_factory,
                write_factory,
                org_id=org_id,
                model_id=mid,
                progress=progress.advance,
            )
    finally:
        progress.finish()
    out.print(
        f"rebuilt {n:,} learner states of {org!r} for model {mid} in "
        f"{time.perf_counter() - t0:.1f} s"
        + (f"; {skipped:,} skipped (they answered meanwhile)" if skipped else ""),
        highlight=False,
    )


# ---------------------------------------------------------------------- prerequisites
def _read_edges(path: Path, names: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """``prerequisite,concept`` CSV rows, a JSON list of pairs (or of objects with those
    keys), or Junyi Academy's exercise table (columns ``name`` and ``prerequisites``, a
    comma-separated list; display names from ``pretty_display_name`` go into ``names``)."""
    import csv

    if not path.is_file():
        fail(f"prerequisite file {path} does not exist")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            fail(f"{path}: not valid JSON ({exc})")
        if not isinstance(data, list):
            fail(f"{path}: expected a JSON list of [prerequisite, concept] pairs")
        edges = []
        for k, e in enumerate(data):
            if isinstance(e, dict) and {"prerequisite", "concept"} <= e.keys():
                edges.append((str(e["prerequisite"]), str(e["concept"])))
            elif isinstance(e, (list, tuple)) and len(e) == 2:
                edges.append((str(e[0]), str(e[1])))
            else:
                fail(f"{path}: entry {k} is not a [prerequisite, concept] pair: {e!r}")
        return edges
    reader = csv.DictReader(text.splitlines())
    cols = {c.strip().lower(): c for c in reader.fieldnames or []}
    if {"name", "prerequisites"} <= cols.keys():  # Junyi's exercise table
        edges = []
        for row in reader:
            name = (row.get(cols["name"]) or "").strip()
            if not name:
                continue
            if names is not None and "pretty_display_name" in cols:
                names[name] = (row.get(cols["pretty_display_name"]) or "").strip()
            for pre in (row.get(cols["prerequisites"]) or "").split(","):
                if pre.strip():
                    edges.append((pre.strip(), name))
        return edges
    if not {"prerequisite", "concept"} <= cols.keys():
        fail(
            f"{path}: expected CSV columns prerequisite,concept; found "
            f"{', '.join(reader.fieldnames or []) or 'none'}"
        )
    edges = []
    for line, row in enumerate(reader, start=2):
        a, b = (
            (row.get(cols["prerequisite"]) or "").strip(),
            (row.get(cols["concept"]) or "").strip(),
        )
        if not a or not b:
            fail(f"{path}:{line}: empty prerequisite or concept")
        edges.append((a, b))
    return edges


@prereq_app.command("load")
def prerequisites_load(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV (prerequisite,concept), JSON pairs, or Junyi's exercise table "
            "(name,prerequisites,...)."
        ),
    ],
    org: OrgOption,
    append: Annotated[
        bool, typer.Option("--append", help="Add to the graph instead of replacing it.")
    ] = False,
    create_concepts: Annotated[
        bool,
        typer.Option(
            "--create-concepts", help="Create concepts the file names that do not exist yet."
        ),
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Set the organisation's prerequisite graph (a cycle or unknown concept changes nothing)."""
    from sqlalchemy import select
    from sqlalchemy.orm import aliased

    from tutor.db import Concept, PrerequisiteEdge
    from tutor.operations import set_prerequisites

    names: dict[str, str] = {}
    edges = _read_edges(file, names)
    with db_session(database_url) as s:
        o = find_org(s, org)
        if create_concepts:
            from tutor.operations import upsert_concepts

            ids = dict.fromkeys([c for e in edges for c in e] + list(names))
            upsert_concepts(s, org=o, concepts=[(c, names.get(c, "")) for c in ids])
        have: list[tuple[str, str]] = []
        if append:  # validated as one graph with the edges already there (cycles included)
            pre, post = aliased(Concept), aliased(Concept)
            have = [
                (a, b)
                for a, b in s.execute(
                    select(pre.external_id, post.external_id)
                    .select_from(PrerequisiteEdge)
                    .join(pre, pre.id == PrerequisiteEdge.prerequisite_id)
                    .join(post, post.id == PrerequisiteEdge.concept_id)
                    .where(PrerequisiteEdge.org_id == o.id)
                )
            ]
        n = set_prerequisites(s, org=o, edges=[*have, *edges], replace=True)
    out.print(
        f"{org!r} now has {n:,} prerequisite edges"
        + (f" ({n - len(set(have)):,} added)" if append else ""),
        highlight=False,
    )


# ---------------------------------------------------------------------- serve
def serve_cmd(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.", min=1, max=65535)] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            help="Worker processes (on Linux each new connection goes to the worker with "
            "the fewest open ones).",
            min=1,
        ),
    ] = 1,
    migrate: Annotated[
        bool, typer.Option("--migrate/--no-migrate", help="Run 'tutor db upgrade' first.")
    ] = True,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every request.")
    ] = True,
    database_url: DatabaseUrl = None,
) -> None:
    """Serve the HTTP API (uvicorn; the settings come from the environment / .env)."""
    url = resolve_url(database_url)
    if migrate:
        rev = _alembic("upgrade", url, "head")
        console.print(f"database {safe_url(url)} at revision {rev}", highlight=False)
    _run_api(url, host=host, port=port, workers=workers, access_log=access_log)


def _run_api(url: str, **options: Any) -> None:
    """Serve the API on the database ``url`` (:func:`tutor.api.server.serve`: ``host``,
    ``port``, ``workers`` and uvicorn's options)."""
    import os

    from tutor.api.server import WorkerFailed, serve

    os.environ["DATABASE_URL"] = url  # the workers read their settings from the environment
    from tutor.settings import get_settings

    get_settings.cache_clear()
    if get_settings().inline_hot_routes:
        # uvloop serves a loop that is always busy unevenly (some requests wait seconds, see
        # tutor.api.app.event_loop_warning): the standard loop is as fast here and fair
        options.setdefault("loop", "asyncio")
    try:
        serve(**options)
    except WorkerFailed as exc:
        fail(str(exc))


# ---------------------------------------------------------------------- demo
def sample_path(name: str) -> Path:
    """A bundled sample dataset (see tutor/sample/README.md)."""
    from importlib.resources import files

    return Path(str(files("tutor") / "sample" / name))


def demo_cmd(
    workdir: Annotated[Path, typer.Option(help="Where the demo writes its files.")] = Path("demo"),
    host: Annotated[str, typer.Option(help="Interface to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8000,
    epochs: Annotated[int, typer.Option(help="Training epochs (early stopping applies).")] = 20,
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Serve after building (default).")
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """The main job: ingest the bundled ASSISTments 2009 sample, train a small DKT on CPU, load
    everything into a fresh SQLite database, create demo API keys and serve the API."""
    from tutor.demo import build_demo, try_urls

    progress = RichProgress(enabled=not quiet)
    try:
        demo = build_demo(
            workdir,
            epochs=epochs,
            progress=progress,
            say=lambda m: out.print(m, highlight=False),
            train_progress=not quiet,
        )
    finally:
        progress.finish()
    base = f"http://{host}:{port}"
    out.print(
        f"6/6 serving on {base} (Ctrl-C stops); try:\n{try_urls(base, demo)}", highlight=False
    )
    if serve:
        _run_api(demo["database_url"], host=host, port=port)
