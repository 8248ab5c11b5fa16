"""tutor.api.lean: the hot requests' plain routes answer the requests they take as the FastAPI
routes behind them would, and pass every other request on to those routes unchanged."""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import contextmanager

import pytest
from pydantic import ValidationError

from tutor.api import answers as answers_api
from tutor.api.lean import PASSED_ON, LeanRoute, int_in


@contextmanager
def counted(app):  # noqa: ANN001, ANN201
    """Per lean route path, the requests its handler answered ("lean") and passed on."""
    seen: dict[str, list[str]] = {}
    routes = [r for r in app.router.routes if isinstance(r, LeanRoute)]
    assert {(r.method, r.path) for r in routes} == {
        ("POST", "/v1/answers"),
        ("GET", "/v1/learners/{learner_id}/mastery"),
        ("GET", "/v1/learners/{learner_id}/next-items"),
    }
    originals = {r: r.handler for r in routes}

    def wrap(route: LeanRoute):  # noqa: ANN202
        inner = originals[route]

        async def handler(request):  # noqa: ANN001, ANN202
            out = None
            try:
                out = await inner(request)
                return out
            finally:  # an error the route body raised (a 404...) was answered there too
                answered = out is not None or sys.exc_info()[0] is not None
                seen.setdefault(route.path, []).append("lean" if answered else "passed on")

        return handler

    for r in routes:
        r.handler = wrap(r)
    try:
        yield seen
    finally:
        for r, h in originals.items():
            r.handler = h


@contextmanager
def without_lean(app):  # noqa: ANN001, ANN201
    """The app as it was before the lean routes: FastAPI's routes alone."""
    routes = app.router.routes
    kept = list(routes)
    routes[:] = [r for r in routes if not isinstance(r, LeanRoute)]
    try:
        yield
    finally:
        routes[:] = kept


def _both(client, method: str, url: str, **kw):  # noqa: ANN001, ANN202
    """The response with the lean routes and without them."""
    lean = client.request(method, url, **kw)
    with without_lean(client.app):
        plain = client.request(method, url, **kw)
    return lean, plain


def _same(a, b) -> None:  # noqa: ANN001
    assert a.status_code == b.status_code, (a.text, b.text)
    assert a.headers.get("content-type") == b.headers.get("content-type")
    if a.content and a.headers.get("content-type", "").startswith("application/json"):
        assert a.json() == b.json()
    else:
        assert a.content == b.content


LEAN_READS = [
    "/v1/learners/u1/next-items",
    "/v1/learners/u1/next-items?n=3",
    "/v1/learners/u1/next-items?n=100&policy=curriculum",
    "/v1/learners/u1/next-items?policy=no-such-policy",  # the route body's 4xx
    "/v1/learners/u1/mastery",
    "/v1/learners/nobody/mastery",  # 404
]
PASSED_ON_READS = [
    "/v1/learners/u1/next-items?n=0",
    "/v1/learners/u1/next-items?n=101",
    "/v1/learners/u1/next-items?n=abc",
    "/v1/learners/u1/next-items?n=05",
    "/v1/learners/u1/next-items?n=%2B5",
    "/v1/learners/u1/next-items?n=3&n=4",
    "/v1/learners/u1/next-items?target=0.6",
    "/v1/learners/u1/next-items?target=7",
    "/v1/learners/u1/next-items?at=2026-01-01T00:00:00Z",
    "/v1/learners/u1/next-items?x=1",
    "/v1/learners/u1/mastery?at=2026-01-01T00:00:00Z",
    "/v1/learners/u1/mastery?at=not-a-time",
]


def test_reads_the_lean_routes_take_answer_as_fastapi_would(client, world):
    adm = world.headers("admin")
    assert client.post(
        "/v1/answers",
        json={"event_id": "e0", "learner_id": "u1", "item_id": "i5", "correct": 1},
        headers=world.headers("ingest"),
    ).is_success
    with counted(client.app) as seen:
        for url in LEAN_READS:
            _same(*_both(client, "GET", url, headers=adm))
    assert seen == {
        "/v1/learners/{learner_id}/next-items": ["lean"] * 4,
        "/v1/learners/{learner_id}/mastery": ["lean"] * 2,
    }


@pytest.mark.parametrize("url", PASSED_ON_READS)
def test_other_reads_are_passed_on_to_fastapi(client, world, url):
    with counted(client.app) as seen:
        lean, plain = _both(client, "GET", url, headers=world.headers("admin"))
    _same(lean, plain)
    assert [v for vs in seen.values() for v in vs] == ["passed on"]


def test_the_key_is_checked_before_fields_either_way(client, world):
    bad = {"Authorization": "Bearer nope"}
    for url in ("/v1/learners/u1/next-items", "/v1/learners/u1/next-items?n=0"):
        lean, plain = _both(client, "GET", url, headers=bad)
        _same(lean, plain)
        assert lean.status_code == 401
    for method in ("HEAD", "PUT"):  # other methods never meet a lean route
        _same(*_both(client, method, "/v1/learners/u1/mastery", headers=world.headers("admin")))


def _answer(event_id: str, **kw) -> dict:
    return {"event_id": event_id, "learner_id": "u1", "item_id": "i5", "correct": 1, **kw}


REFUSED_BODIES = [
    (b"{", "application/json"),
    (b"", "application/json"),
    (b"[]", "application/json"),
    (json.dumps(_answer("r1", correct=2)).encode(), "application/json"),
    (json.dumps(_answer("r2", extra=1)).encode(), "application/json"),
    (json.dumps(_answer("r3", correct=1.0)).encode(), "application/json"),
    (json.dumps(_answer("r4", timestamp="yesterday")).encode(), "application/json"),
    (json.dumps({"answers": []}).encode(), "application/json"),
    (json.dumps(_answer("r5")).encode(), "text/plain"),
    (json.dumps(_answer("r6")).encode(), ""),
]


@pytest.mark.parametrize(("body", "kind"), REFUSED_BODIES)
def test_answers_the_lean_route_cannot_take_get_fastapis_answer(client, world, body, kind):
    headers = {**world.headers("ingest"), "content-type": kind}
    with counted(client.app) as seen:
        lean, plain = _both(client, "POST", "/v1/answers", content=body, headers=headers)
    _same(lean, plain)
    assert lean.status_code >= 400
    assert seen == {"/v1/answers": ["passed on"]}
    # a malformed body is refused before the key is looked at, as FastAPI does
    bad = {"Authorization": "Bearer nope", "content-type": kind}
    _same(*_both(client, "POST", "/v1/answers", content=body, headers=bad))


def test_answers_through_the_lean_route(client, world):
    ing = world.headers("ingest")
    with counted(client.app) as seen:
        one = client.post("/v1/answers", json=_answer("a1"), headers=ing)
        again = client.post("/v1/answers", json=_answer("a1"), headers=ing)
        batch = client.post(
            "/v1/answers",
            content=json.dumps({"answers": [_answer("a2"), _answer("a3", correct=False)]}),
            headers={**ing, "content-type": "application/json; charset=utf-8"},
        )
        clash = client.post("/v1/answers", json=_answer("a1", correct=0), headers=ing)
        no_key = client.post("/v1/answers", json=_answer("a4"), headers={})
    assert seen == {"/v1/answers": ["lean"] * 5}
    assert (one.status_code, again.status_code, batch.status_code) == (201, 200, 201)
    assert again.json() == {**one.json(), "replayed": True}
    assert [r["correct"] for r in batch.json()["results"]] == [1, 0]
    assert clash.status_code == 409
    assert no_key.status_code == 401
    with without_lean(client.app):  # FastAPI's route sees the answers the lean one stored
        replay = client.post("/v1/answers", json=_answer("a1"), headers=ing)
    assert replay.status_code == 200 and replay.json() == again.json()


BODIES = [
    _answer("b1"),
    _answer("b2", correct=True, timestamp="2026-01-02T03:04:05Z"),
    _answer("b3", correct=0, timestamp="2026-01-02T03:04:05.123456+02:00", elapsed_ms=1500),
    _answer("b4", timestamp="2026-01-02", attempt=None),
    _answer("b5", timestamp=1_767_225_600),
    _answer("b6", timestamp="1767225600"),
    _answer("b7", learner_id="élève ☃", item_id="項目"),
    _answer("b8", elapsed_ms=10.0),
    _answer("b9", attempt="3"),
    {"answers": [_answer("b10"), _answer("b11", correct=False)]},
    {"answers": [_answer("b12", bad=1)]},
]


@pytest.mark.parametrize("doc", BODIES)
@pytest.mark.parametrize("ascii_only", [True, False])
def test_a_body_the_lean_route_reads_is_read_as_fastapi_reads_it(doc, ascii_only):
    """Where the lean route's parse (pydantic on the raw JSON) takes a body, FastAPI's
    (``json.loads`` then pydantic) gives the same answers."""
    raw = json.dumps(doc, ensure_ascii=ascii_only).encode()
    try:
        lean = answers_api._BODY.validate_json(raw)
    except ValidationError:
        lean = None
    try:
        plain = answers_api._BODY.validate_python(json.loads(raw))
    except ValidationError:
        plain = None
    if lean is not None:
        assert plain is not None and lean.model_dump() == plain.model_dump()
    assert (lean is None) == (plain is None), (lean, plain)


def test_int_in_takes_plain_decimals_only():
    convert = int_in(1, 100)
    assert [convert(s) for s in ("1", "5", "100")] == [1, 5, 100]
    for raw in ("0", "101", "05", "+5", "-1", " 5", "5 ", "5.0", "٥", "", "1e2", "9" * 30):
        with pytest.raises(ValueError):
            convert(raw)


def test_a_passed_on_request_gets_the_body_the_lean_route_read():
    """The route behind gets the whole body the lean route read (a streamed body in one
    message), and the request is marked so that the lean route lets it through."""
    got = []

    async def router(scope, receive, send):  # noqa: ANN001, ANN202, ARG001
        got.append(await receive())

    async def decline(request):  # noqa: ANN001, ANN202, ARG001
        return None

    route = LeanRoute("POST", "/x", decline)
    route.router = router
    messages = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"c", "more_body": False},
    ]

    async def receive():  # noqa: ANN202
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": [], "query_string": b""}
    assert route.matches(scope)[0].name == "FULL"
    asyncio.run(route.handle(scope, receive, None))
    assert got == [{"type": "http.request", "body": b"abc", "more_body": False}]
    assert scope[PASSED_ON] and route.matches(scope)[0].name == "NONE"
