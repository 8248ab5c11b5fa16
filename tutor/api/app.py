"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import threading
import time
from collections import defaultdict
from contextlib import asynccontextmanager
from urllib.parse import unquote_plus

import anyio
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import ObjectDeletedError
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kt_models.base import CheckpointError

from .. import __version__
from ..dashboard import router as dashboard_router
from ..db import create_db_engine, make_sessionmaker
from ..db.session import is_sqlite
from ..security import AuthCache
from ..service import ServiceError
from ..settings import Settings, get_settings
from .deps import CloseSessions, detail_response, hot_threads, validation_errors

log = logging.getLogger("tutor.api")


class RateLimiter:
    """A fixed one-minute window per API key (per process)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._counts: dict[tuple[int, int], int] = defaultdict(int)
        self._lock = threading.Lock()

    def allow(self, key_id: int) -> bool:
        window = int(time.time() // 60)
        with self._lock:
            if len(self._counts) > 100_000:
                self._counts = defaultdict(
                    int, {k: v for k, v in self._counts.items() if k[1] == window}
                )
            self._counts[(key_id, window)] += 1
            return self._counts[(key_id, window)] <= self.per_minute


class BodyLimit:
    """413 for request bodies over ``limit`` bytes (declared or streamed)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _too_large(send, self.limit)
                return
        seen = 0
        over = False

        async def limited() -> Message:
            # a streamed (chunked) body over the limit ends here as a client disconnect: the
            # route never runs on a truncated body, and the answer is the 413 below
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    over = True
                    return {"type": "http.disconnect"}
            return msg

        async def guarded(msg: Message) -> None:
            if not over:
                await send(msg)

        try:
            await self.app(scope, limited, guarded)
        except ClientDisconnect:
            if not over:
                raise
        if over:
            await _too_large(send, self.limit)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class NoControlCharacters:
    """422 for a URL whose path or query (decoded) holds a control character: no id, name or
    parameter of this API has one, and PostgreSQL cannot store a NUL."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = unquote_plus(scope.get("query_string", b"").decode("latin-1"))
            if _CONTROL.search(scope.get("path", "")) or _CONTROL.search(query):
                body = b'{"detail":"the URL holds a control character (such as NUL)"}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 422,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """``X-Content-Type-Options: nosniff`` on every response (a JSON body is never sniffed
    into HTML or script), unless the route set it already."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                headers = list(msg.get("headers", []))
                if not any(k.lower() == b"x-content-type-options" for k, _ in headers):
                    headers.append((b"x-content-type-options", b"nosniff"))
                msg = {**msg, "headers": headers}
            await send(msg)

        await self.app(scope, receive, with_headers)


async def _too_large(send: Send, limit: int) -> None:
    body = f'{{"detail":"request body larger than {limit} bytes"}}'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _warm(factory: sessionmaker[Session]) -> None:
    """A worker's start: :func:`tutor.recommend.warm` (a failure is logged; requests then
    load what they need themselves)."""
    from .. import recommend

    try:
        with factory() as session:
            recommend.warm(session)
    except Exception:  # noqa: BLE001 - a warm-up must never take the worker down
        log.warning("warming the models and catalogues failed", exc_info=True)


def _settle_heap(settings: Settings) -> None:
    """After the start-up's loading (``Settings.gc_freeze``): one full collection, then every
    surviving object (models, catalogues, the ORM's registries) goes to the permanent
    generation, which later collections do not traverse; the young generation's threshold
    is raised (a request allocates thousands of short-lived containers)."""
    if not settings.gc_freeze:
        return
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(settings.gc_young_threshold, older, oldest)


def event_loop_warning(inline_hot_routes: bool, loop: asyncio.AbstractEventLoop) -> str | None:
    """What to say at start-up when the hot routes run on the event loop under uvloop.

    With every request run on the loop, the loop is always busy near saturation, and uvloop
    then reads some connections far later than others: measured (1 worker, 32 connections,
    50,000 items), clients saw p99 0.7-1.9 s while every request the server had read was
    answered within about 0.1 s; with the standard asyncio loop at the same throughput and
    CPU, p99 was 0.1 s and the longest 0.2 s. ``tutor serve`` picks that loop itself."""
    if inline_hot_routes and type(loop).__module__.startswith("uvloop"):
        return (
            "TUTOR_INLINE_HOT_ROUTES is on under uvloop, which serves a busy event loop "
            "unevenly (some requests wait seconds): start uvicorn with --loop asyncio "
            "('tutor serve' does)"
        )
    return None


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        warning = event_loop_warning(app.state.inline_hot_routes, asyncio.get_running_loop())
        if warning:
            log.warning(warning)
        # one request = a few small tensor ops: intra-op threads only add overhead
        torch.set_num_threads(1)
        # the thread pool that runs the (synchronous) routes: a few threads, see the setting;
        # the hot routes have as many of their own (deps.hot_threads)
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.request_threads
        threads = app.state.hot_threads = hot_threads(settings)
        # load the active models and build their catalogues before serving: no request
        # waits seconds for a catalogue build (in a thread: the event loop stays free)
        await anyio.to_thread.run_sync(_warm, app.state.read_sessionmaker)
        _settle_heap(settings)
        warmer = None
        if settings.analytics_warmup_groups:
            from ..analytics import Warmer

            warmer = Warmer(
                app.state.read_sessionmaker,
                max_groups=settings.analytics_warmup_groups,
                settings=settings,
            )
            warmer.start()
        app.state.analytics_warmer = warmer
        try:
            yield
        finally:
            if warmer is not None:
                warmer.stop()
            threads.shutdown(wait=True)
            if app.state.hot_threads is threads:  # (a test may run the start-up twice)
                app.state.hot_threads = None
            app.state.engine.dispose()
            app.state.read_engine.dispose()

    app = FastAPI(
        title="kt-tutor",
        version=__version__,
        description=(
            "Knowledge-tracing tutor: answers in, live mastery per concept, next-question "
            "recommendations with a curriculum, xAPI statements. Every route but /health "
            "needs `Authorization: Bearer <API key>`."
        ),
        lifespan=lifespan,
    )
    engine = create_db_engine(
        settings.database_url,
        sqlite_timeout=settings.sqlite_timeout,
        pool_size=settings.pool_size,
        pool_pre_ping=settings.pool_pre_ping,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    # reads need no transaction of their own: on SQLite a read transaction (plain BEGIN, never
    # waiting for writers); on PostgreSQL autocommit, which saves the BEGIN and ROLLBACK round
    # trips of every GET (at READ COMMITTED each statement sees its own snapshot either way)
    if is_sqlite(settings.database_url):
        read_engine = engine.execution_options(readonly=True)
    else:
        read_engine = create_db_engine(
            settings.database_url,
            pool_size=settings.pool_size,
            pool_pre_ping=settings.pool_pre_ping,
            autocommit=True,
        )
    app.state.read_engine = read_engine
    # and no autoflush: on PostgreSQL's autocommit a flush would write at once (a state a read
    # rebuilt, past the guards of states.keep_rebuilt_states)
    app.state.read_sessionmaker = make_sessionmaker(read_engine, autoflush=False)
    app.state.auth_cache = AuthCache(settings.auth_cache_seconds)
    app.state.inline_hot_routes = settings.inline_hot_routes and not is_sqlite(
        settings.database_url
    )
    #: hot requests that met slow work on the event loop and ran again in a thread
    app.state.route_hops = 0
    #: organisation id -> its ``recent_exclusion`` at its last next-items request here
    app.state.recent_exclusion_seen = {}
    app.state.rate_limiter = (
        RateLimiter(settings.rate_limit_per_minute) if settings.rate_limit_per_minute else None
    )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(NoControlCharacters)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(CloseSessions)

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return detail_response(exc.status, exc.detail)

    @app.exception_handler(OperationalError)
    async def _db_busy(request: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database error on %s %s: %s", request.method, request.url.path, exc.orig)
        return detail_response(
            503, "the database is busy or unreachable; retry", headers={"Retry-After": "1"}
        )

    @app.exception_handler(ObjectDeletedError)
    async def _gone(request: Request, exc: ObjectDeletedError) -> JSONResponse:
        if "Organisation" in str(exc):
            # the organisation of a key remembered by the auth cache was deleted meanwhile
            app.state.auth_cache.clear()
            return detail_response(
                401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"}
            )
        raise exc

    @app.exception_handler(CheckpointError)
    async def _bad_model(request: Request, exc: CheckpointError) -> JSONResponse:
        # a stored model that does not load (corrupt bytes): the service cannot answer with
        # it; /ready says the same
        log.error("model failed to load on %s %s: %s", request.method, request.url.path, exc)
        return detail_response(
            503,
            "the organisation's active model cannot be loaded (corrupt or incompatible "
            "checkpoint); an administrator must activate another model",
        )

    @app.exception_handler(RecursionError)
    async def _too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        # parsing a request nested too deeply; logged, in case it came from our own code
        log.warning("recursion limit on %s %s", request.method, request.url.path)
        return detail_response(422, "the request's JSON is nested too deeply")

    @app.exception_handler(DataError)
    async def _not_storable(request: Request, exc: DataError) -> JSONResponse:
        # the database's own check (a NUL character in text, a number beyond 64 bits): a
        # backstop for what validation should have refused, named without leaking SQL
        log.warning(
            "value refused by the database on %s %s: %s", request.method, request.url.path, exc.orig
        )
        return detail_response(
            422,
            "a value of the request cannot be stored (out of range, or text with a NUL character)",
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        # Starlette runs this outside the other middlewares: the header is set here
        return detail_response(500, "internal error", headers={"X-Content-Type-Options": "nosniff"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return detail_response(422, validation_errors(exc))

    def openapi() -> dict:
        """FastAPI's schema, with the 422 body as this service sends it: ``detail`` is the
        list of field errors (request validation) or one sentence (a check of the service,
        e.g. an unknown concept or a cycle)."""
        if app.openapi_schema:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        err = schema.get("components", {}).get("schemas", {}).get("HTTPValidationError")
        if err is not None:
            items = err["properties"]["detail"]
            err["properties"]["detail"] = {
                "title": "Detail",
                "anyOf": [{k: v for k, v in items.items() if k != "title"}, {"type": "string"}],
            }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

    from . import (
        analytics,
        answers,
        concepts,
        groups,
        health,
        items,
        lean,
        learners,
        models,
        organisation,
        prerequisites,
        xapi,
    )

    app.include_router(health.router)
    # one router per resource; no two of their paths overlap, so this order decides nothing
    # but the order of the OpenAPI document
    for resource in (
        answers,
        learners,
        groups,
        concepts,
        prerequisites,
        items,
        models,
        organisation,
        analytics,
    ):
        app.include_router(resource.router, prefix="/v1")
    app.include_router(xapi.router)
    app.include_router(dashboard_router)
    # the hot requests' plain routes, in front of their FastAPI routes (tutor.api.lean)
    lean.install(app, answers.LEAN + learners.LEAN, prefix="/v1")
    return app
