"""Plain routes in front of FastAPI's for the hot requests (``POST /v1/answers``, ``GET
/v1/learners/{id}/next-items`` and ``GET .../mastery``).

FastAPI's per-request machinery (its request handler, the dependency solver, the validation
of every declared parameter, the body read as ``json.loads`` then validated) cost about 0.2
ms of CPU a request, a seventh of a next-items request at 50,000 items (measured in one
process, requests alternating one by one with and without a plain route, 2026-12-07). A
:class:`LeanRoute` answers the requests whose parameters it can take at a glance with the
same route body (the same view dependency, :func:`tutor.api.deps.run_route`, the same
function): its handler returns None for anything else (an unknown or repeated query
parameter, a value not in its plainest form, a body that does not validate as it is), and
the request then goes on to the FastAPI route as if the lean one were not there: its body
replayed, so validation errors, their order (a malformed JSON body before the key, the key
before the fields) and every response stay FastAPI's. The FastAPI routes stay the ones the
OpenAPI document describes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute, Match, NoMatchFound, compile_path, get_route_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: set on a request's scope once its lean route has passed it on to FastAPI's
PASSED_ON = "tutor.lean_passed_on"

#: a lean route's handler: the response, or None to pass the request on to FastAPI's route
LeanHandler = Callable[[Request], Awaitable[Response | None]]


class LeanRoute(BaseRoute):
    """``method path`` answered by ``handler`` where it can (see the module), else by the
    FastAPI route of the same path behind it. Matches that method only (a HEAD or another
    method goes to FastAPI's routes, e.g. for its 405)."""

    def __init__(self, method: str, path: str, handler: LeanHandler) -> None:
        self.method, self.path, self.handler = method, path, handler
        self.path_regex, self.path_format, self.param_convertors = compile_path(path)
        #: the router to pass requests on to (set by :func:`install`)
        self.router: ASGIApp | None = None

    def with_prefix(self, prefix: str) -> LeanRoute:
        return LeanRoute(self.method, prefix + self.path, self.handler)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] != self.method or PASSED_ON in scope:
            return Match.NONE, {}
        found = self.path_regex.match(get_route_path(scope))
        if found is None:
            return Match.NONE, {}
        params = dict(scope.get("path_params", {}))
        for key, value in found.groupdict().items():
            params[key] = self.param_convertors[key].convert(value)
        return Match.FULL, {"endpoint": self.handler, "path_params": params}

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NoMatchFound(name, path_params)  # reached by its FastAPI route's name

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        body = None
        if self.method in ("POST", "PUT", "PATCH"):
            try:
                body = await request.body()
            except ClientDisconnect:  # gone, or cut off by the body limit: FastAPI's way
                await self._pass_on(scope, _disconnected, send)
                return
        response = await self.handler(request)
        if response is not None:
            await response(scope, receive, send)
            return
        await self._pass_on(scope, _replay(body, receive) if body is not None else receive, send)

    async def _pass_on(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.router is not None, "a LeanRoute is served through install()"
        scope[PASSED_ON] = True
        await self.router(scope, receive, send)


async def _disconnected() -> Message:
    return {"type": "http.disconnect"}


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` that first hands out the body the lean route read."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def install(app: FastAPI, routes: list[LeanRoute], prefix: str = "") -> None:
    """Put ``routes`` (with ``prefix``) in front of every route of ``app``."""
    lean = [r.with_prefix(prefix) for r in routes]
    for route in lean:
        route.router = app.router
    app.router.routes[0:0] = lean


def plain_query(
    request: Request, allowed: dict[str, Callable[[str], Any]]
) -> dict[str, Any] | None:
    """The query's parameters converted by ``allowed[name]``, where each one is in
    ``allowed``, given once and converted without an error (ValueError); else None."""
    pairs = request.query_params.multi_items()
    out: dict[str, Any] = {}
    for name, raw in pairs:
        convert = allowed.get(name)
        if convert is None or name in out:
            return None
        try:
            out[name] = convert(raw)
        except ValueError:
            return None
    return out


def int_in(low: int, high: int) -> Callable[[str], int]:
    """A converter of a plain decimal integer within ``low .. high`` (no sign, space or
    leading zero: the forms any validator reads alike)."""

    def convert(raw: str) -> int:
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
            raise ValueError(raw)
        value = int(raw)
        if str(value) != raw or not low <= value <= high:
            raise ValueError(raw)
        return value

    return convert


def is_json(request: Request) -> bool:
    """The body is declared plain JSON (``application/json``, any parameters)."""
    kind = request.headers.get("content-type", "")
    return kind.partition(";")[0].strip().lower() == "application/json"
