"""Dependencies shared by the routes: the database session, the caller and their scope."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import numpy as np
import orjson
from fastapi import Depends, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Select, bindparam, func, literal_column, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, make_transient_to_detached
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from ..blocking import MustHop, inline
from ..db import Group, GroupMembership, Learner, LearnerState, Organisation, driver
from ..security import AuthCache, Principal, authenticate, hash_key
from ..settings import Settings
from ..settings import org_setting as org_setting  # the routes' lookup, kept here
from ..states import last_answers, remember_recent, remember_state

T = TypeVar("T")
log = logging.getLogger(__name__)


def _open_session(request: Request) -> Session:
    """One session per request, used only inside the route function's thread.

    The session opens its transaction at its first query, inside the route; it is closed
    (rolled back unless the route committed) by :func:`get_view`, on the event loop, so that
    a transaction never waits for a free worker thread while it holds a lock. (On SQLite
    every write transaction takes the database lock at BEGIN: were a lock held across the
    hop from a dependency's thread to the route's, requests queued on the lock could take
    every worker thread and the holder could never finish.) GET requests read outside a
    write transaction: on SQLite a read transaction (plain ``BEGIN``), which never waits for
    writers; on PostgreSQL in autocommit (see ``create_app``).
    """
    state = request.app.state
    factory = state.read_sessionmaker if request.method == "GET" else state.sessionmaker
    session = factory()
    session.info["write_factory"] = state.sessionmaker
    return session


def _request_org(session: Session, principal: Principal) -> Organisation:
    """The caller's organisation in the request session, without a query here: its row is
    read (refreshed) at the first use of one of its attributes, or loaded by the statement
    that reads the learner (:func:`visible_learner`, the answer path's lock), inside the
    route's thread and transaction, so it is always current (active model, catalogue
    version, settings)."""
    org = Organisation(id=principal.org_id)
    make_transient_to_detached(org)
    session.add(org)
    return org


def _lookup_key(request: Request, token: str, key_hash: str) -> Principal | None:
    """The key's principal from the database (in a worker thread): a short read transaction
    of its own (see _open_session); None for an unknown or revoked key or a deleted
    organisation."""
    settings = request.app.state.settings
    with request.app.state.read_sessionmaker() as auth_session:
        principal = authenticate(auth_session, token, settings.key_pepper, key_hash=key_hash)
        if principal is not None and auth_session.get(Organisation, principal.org_id) is None:
            principal = None  # the key's organisation was deleted
    return principal


async def get_principal(request: Request) -> Principal:
    """The caller. Authenticated keys are remembered for ``auth_cache_seconds``
    (:class:`tutor.security.AuthCache`): a hit costs no query and no thread hop."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    state = request.app.state
    settings: Settings = state.settings
    cache: AuthCache = state.auth_cache
    key_hash = hash_key(token, settings.key_pepper)
    principal = cache.get(key_hash)
    if principal is None:
        generation = cache.generation()
        # a short query: in the hot routes' threads, which no slow route holds up
        principal = await run_short(request, _lookup_key, request, token, key_hash)
        if principal is not None:
            cache.put(key_hash, principal, generation)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or revoked API key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.principal = principal
    limiter = state.rate_limiter
    if limiter is not None and not limiter.allow(principal.key_id):
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"rate limit of {settings.rate_limit_per_minute} requests per minute exceeded",
            headers={"Retry-After": "60"},
        )
    return principal


@dataclass(frozen=True, slots=True)
class View:
    """What a route works with, as one parameter: the request, its session, the caller, the
    caller's organisation and the service settings. Besides authentication it checks
    nothing, so that a route's own checks (roles, a group or learner it may see) still come
    after the validation of its parameters."""

    request: Request
    session: Session
    principal: Principal
    org: Organisation
    settings: Settings
    #: the hot routes may run on the event loop (:func:`run_route`)
    inline: bool = False


#: the request scope's list of sessions :class:`CloseSessions` closes after the response
SESSIONS = "tutor.sessions"


async def get_view(request: Request) -> View:
    """The :class:`View`, as one dependency (each dependency FastAPI solves costs time on
    the event loop): the caller (:func:`get_principal`: a 401 or 429 before anything else),
    then the request's session (:func:`_open_session`, closed by :class:`CloseSessions`
    once the app has answered) and organisation (:func:`_request_org`). A plain function,
    not a generator: FastAPI's set-up and tear-down of a generator dependency cost more
    than the rest of this function."""
    principal = await get_principal(request)
    session = _open_session(request)
    request.scope.setdefault(SESSIONS, []).append(session)
    org = _request_org(session, principal)
    state = request.app.state
    return View(request, session, principal, org, state.settings, state.inline_hot_routes)


async def run_route(view: View, body: Callable[..., T], /, *args: Any) -> T:
    """Run a hot route's synchronous ``body(*args)``: on the event loop where the app allows
    it (``Settings.inline_hot_routes`` on PostgreSQL), else, or when the body meets slow work
    there (:class:`tutor.blocking.MustHop`: its session is rolled back first, nothing was
    committed), in one of the hot routes' own threads (:func:`in_hot_thread`)."""
    if view.inline:
        try:
            with inline():
                return body(*args)
        except MustHop as hop:
            view.session.rollback()
            view.request.app.state.route_hops += 1
            log.info("%s %s runs in a thread: %s", view.request.method, view.request.url.path, hop)
    return await run_short(view.request, body, *args)


async def run_short(request: Request, body: Callable[..., T], /, *args: Any) -> T:
    """``body(*args)`` in the hot routes' threads (:func:`hot_threads`), or, in an app whose
    start-up (lifespan) did not run, in the framework's."""
    threads = getattr(request.app.state, "hot_threads", None)
    if threads is None:
        return await run_in_threadpool(body, *args)
    return await in_hot_thread(threads, body, *args)


def hot_threads(settings: Settings) -> ThreadPoolExecutor:
    """The threads of the hot routes (answers, next-items, mastery) and of every route's key
    lookup (a short query, on an authentication cache miss): ``request_threads`` of them,
    apart from the threads that run every other route (the framework's, as many). A long
    analytics request or model activation then holds up no answer; the hot routes share the
    CPU (and the GIL) with it instead of waiting for its end. Handing a body to
    these threads and back also costs less than the framework's way (81 against 116 µs of
    CPU, measured with an empty body under uvloop, 2026-12-07)."""
    return ThreadPoolExecutor(settings.request_threads, thread_name_prefix="tutor-hot")


async def in_hot_thread(threads: ThreadPoolExecutor, body: Callable[..., T], *args: Any) -> T:
    """``body(*args)`` in one of ``threads``, with the caller's context variables. As with
    the framework's threads, a cancellation of the request waits for the body's end before
    it goes on: the body holds the request's session, which is closed afterwards."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, body, *args)
    done = loop.run_in_executor(threads, call)
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        while not done.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([done])
        raise


class CloseSessions:
    """Closes the sessions :func:`get_view` opened for a request (rolled back unless the
    route committed), on the event loop, after the app has answered or failed: installed by
    ``create_app`` around everything that may open one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            for session in scope.pop(SESSIONS, ()):
                session.close()


ViewDep = Annotated[View, Depends(get_view)]


def forget_keys(request: Request) -> None:
    """Forget this process's authenticated keys (after a change that revokes or narrows
    keys: a learner or a group deleted); other processes forget them within the cache's
    time to live."""
    request.app.state.auth_cache.clear()


#: the keys that read the catalogue (concepts, prerequisites, items)
CATALOGUE_READERS = ("admin", "teacher")


def require_roles(principal: Principal, *roles: str) -> None:
    if principal.role not in roles:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"a {principal.role} key may not do this (needs: {', '.join(roles)})",
        )


def visible_groups(principal: Principal) -> frozenset[int] | None:
    """The groups (and their learners) a key may see: a teacher key's own; None (every
    group) for the others."""
    return principal.group_ids if principal.role == "teacher" else None


def visible_group(view: View, group_id: str) -> Group:
    """The group, for an admin key or a teacher key of the group (404 otherwise, never a
    refusal: ids a key may not see cannot be probed; 403 for the other keys)."""
    from ..learners_admin import get_group

    require_roles(view.principal, "admin", "teacher")
    return get_group(
        view.session, org=view.org, external_id=group_id, groups=visible_groups(view.principal)
    )


@functools.cache
def _learner_query(with_state: bool, recent: int = 0) -> Select:
    """The learner by (organisation, external id) with its organisation's row, and with its
    state for the organisation's active model when asked: one statement (the organisation's
    row fills the request's :class:`Organisation`, so reading its active model, catalogue
    version or settings afterwards costs no query). ``recent`` (PostgreSQL): also the items
    of the learner's last ``recent`` answers, latest first, as an array (the limit written
    into the statement, a :func:`tutor.db.driver.bucket` size: PostgreSQL planned the
    statement anew at every request while the limit was a parameter). Plain columns
    (the learner's, the organisation's, the state's, then the array), run on the driver
    (:func:`tutor.db.driver.fetch`). Built once per variant, so a request only binds its
    values (a statement built per call costs more than running it)."""
    parts = _LEARNER_PARTS if with_state else _LEARNER_PARTS[:2]
    q = select(*(c for cls in parts for c in driver.columns_of(cls))).select_from(Learner)
    q = q.join(Organisation, Organisation.id == Learner.org_id)
    if with_state:
        q = q.outerjoin(
            LearnerState,
            (LearnerState.learner_id == Learner.id)
            & (LearnerState.model_id == Organisation.active_model_id),
        )
    if recent:
        limit = literal_column(str(int(recent)))
        last = last_answers(Learner.id, limit).correlate(Learner).subquery("recent")
        latest_first = (last.c.timestamp.desc(), last.c.event_id.desc())
        ids = func.array_agg(aggregate_order_by(last.c.item_id, *latest_first))
        q = q.add_columns(select(ids).scalar_subquery())
    return q.where(Learner.org_id == bindparam("org"), Learner.external_id == bindparam("ext"))


#: the classes whose columns :func:`_learner_query` reads, in its order (the state's only
#: ``with_state``; then the recent items' array, where asked)
_LEARNER_PARTS = (Learner, Organisation, LearnerState)


def visible_learner(
    session: Session,
    principal: Principal,
    external_id: str,
    *,
    with_state: bool = False,
    recent: int = 0,
) -> Learner:
    """The learner, if the caller may see them; 404 otherwise (never 403, so ids of other
    organisations or learners cannot be probed). The organisation's row comes in the same
    statement; ``with_state``: so does the learner's state for the active model (then
    :func:`tutor.states.current_state` needs no query); ``recent`` (on PostgreSQL, with
    ``with_state``): so do the items of the learner's last ``recent`` answers (then
    :func:`tutor.states.recent_items` needs no query)."""
    require_roles(principal, "admin", "teacher", "learner")
    params: dict[str, Any] = {"org": principal.org_id, "ext": external_id}
    if with_state and recent and session.get_bind().dialect.name == "postgresql":
        recent = driver.bucket(recent)  # read at least as many: a few statement texts
    else:
        recent = 0
    rows = driver.fetch(session, _learner_query(with_state, recent), params)
    learner = None
    if rows:
        row, (of_learner, of_org, of_state) = rows[0], driver.slices(_LEARNER_PARTS)
        learner = driver.attach(session, Learner, row[of_learner])
        org = driver.attach(session, Organisation, row[of_org])
        if with_state and org.active_model_id is not None:
            state = row[of_state]
            kept = None
            if driver.present(LearnerState, state):
                kept = driver.attach(session, LearnerState, state)
            remember_state(session, learner.id, org.active_model_id, kept)
        if recent:
            remember_recent(session, learner.id, recent, list(row[-1] or ()))
    ok = learner is not None
    if ok and principal.role == "learner":
        ok = learner.id == principal.learner_id
    elif ok and principal.role == "teacher":
        ok = (
            session.scalar(
                select(GroupMembership.group_id).where(
                    GroupMembership.learner_id == learner.id,
                    GroupMembership.group_id.in_(principal.group_ids),
                )
            )
            is not None
        )
    if not ok:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"learner {external_id!r} not found")
    return learner


#: attempts of a write that lost a race on a unique key (event id, learner, statement id)
WRITE_RETRIES = 3


def commit_with_retries(session: Session, work: Callable[[int], T]) -> T:
    """Run ``work(attempt)`` and commit, in one transaction; when a concurrent request
    stored the same unique row first (``IntegrityError``), roll back and run it again (the
    next attempt sees that row: a replay, or a 409 for different content), at most
    :data:`WRITE_RETRIES` times, then 409. Any other error rolls back and propagates."""
    for attempt in range(WRITE_RETRIES):
        try:
            out = work(attempt)
            session.commit()
            return out
        except IntegrityError:
            session.rollback()
            if attempt == WRITE_RETRIES - 1:
                raise HTTPException(
                    status.HTTP_409_CONFLICT, "concurrent conflicting writes; retry"
                ) from None
        except Exception:
            session.rollback()
            raise
    raise AssertionError("unreachable")  # pragma: no cover


@contextmanager
def write_transaction(session: Session) -> Iterator[None]:
    """One write of an administration route: commit at the end; roll back on any error (a
    unique-key race is a 409, not retried: the caller sees what won)."""
    try:
        yield
        session.commit()
    except IntegrityError:
        session.rollback()
        raise HTTPException(
            status.HTTP_409_CONFLICT, "a concurrent request wrote the same rows; retry"
        ) from None
    except BaseException:
        session.rollback()
        raise


@contextmanager
def admin_write(view: View) -> Iterator[Session]:
    """An administration write: admin keys only (403 for the others, checked here, in the
    route, after its parameters and body validated), then one transaction
    (:func:`write_transaction`) on the request's session, which it gives."""
    require_roles(view.principal, "admin")
    with write_transaction(view.session):
        yield view.session


def mark_created(response: Response, created: bool) -> None:
    """The status of a ``PUT`` that creates or updates (see :func:`created_or`): 201 when it
    created the row, else the route's 200."""
    if created:
        response.status_code = status.HTTP_201_CREATED


def limit_batch(n: int, what: str, settings: Settings) -> None:
    """413 for a request carrying more than ``max_batch_answers`` answers (or statements)."""
    if n > settings.max_batch_answers:
        raise HTTPException(
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            f"{n} {what} in one request; the limit is {settings.max_batch_answers}",
        )


def created_or(updated: str, more: dict[int, str] | None = None) -> dict[int | str, Any]:
    """The documented answers of a ``PUT`` that creates (201) or updates (200, described as
    ``updated``), with ``more`` statuses and their descriptions."""
    out: dict[int | str, Any] = {201: {"description": "Created"}, 200: {"description": updated}}
    out.update({code: {"description": text} for code, text in (more or {}).items()})
    return out


def model_response(model: type[BaseModel], data: Any, *, status_code: int = 200) -> Response:
    """``data`` validated as ``model`` and written as JSON by pydantic's serializer. FastAPI
    hands a returned :class:`Response` on as it is, so the route's ``response_model`` still
    documents the body (OpenAPI) while the body is validated once (not again by FastAPI) and
    not encoded a second time through ``jsonable_encoder`` and ``json.dumps``: the hot paths'
    way to answer (a mastery of 500 concepts cost several milliseconds that way)."""
    body = data if isinstance(data, model) else model.model_validate(data)
    return Response(body.model_dump_json(), status_code=status_code, media_type="application/json")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):  # a numpy scalar that reached a response
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def json_response(data: Any, *, status_code: int = 200) -> Response:
    """``data`` (plain dicts, lists, strings, numbers) written as JSON by orjson, without
    validation: the hot routes' way to answer (answers, mastery, next-items), whose bodies the
    service builds field by field. Their ``response_model`` documents the body (OpenAPI);
    ``tests/tutor/test_hot_path.py`` holds each body to it (every field, defaults included).
    A mastery of 500 concepts costs 0.8 ms to validate and write through pydantic, 0.05 ms
    here."""
    body = orjson.dumps(data, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status_code=status_code, media_type="application/json")


def detail_response(code: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error as this service answers it: ``{"detail": ...}`` with the status."""
    return JSONResponse({"detail": detail}, status_code=code, headers=headers)


def validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """A request's validation errors as the ``detail`` of a 422 (or an xAPI 400): where, what,
    and the error's type (the input is not echoed back)."""
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
        for e in exc.errors()
    ]
