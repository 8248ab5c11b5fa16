"""The hot request path stays cheap: a bounded number of SQL statements per answer and per
next-items request (counted with a SQLAlchemy event listener, so that a regression fails
here), and the per-process authentication cache: no query for a remembered key, revocation
effective after the time to live, at once when the API deletes a learner or a group."""

from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select, update

from tutor.api import create_app
from tutor.db import ApiKey, Organisation, create_db_engine

#: statements per request once warm (the key cached, the model and catalogue loaded), not
#: counting SQLite's BEGIN: answer = learners locked with organisation, states and replays,
#: then insert and two updates (on PostgreSQL the three writes are one statement);
#: next-items = learner + organisation + state, recent items (on PostgreSQL one statement);
#: mastery = learner + organisation + state (the concepts come from the cached catalogue)
MAX_ANSWER_STATEMENTS = 4
MAX_ANSWER_STATEMENTS_PG = 2
MAX_NEXT_ITEMS_STATEMENTS = 2
MAX_NEXT_ITEMS_STATEMENTS_PG = 1
MAX_MASTERY_STATEMENTS = 1


@contextmanager
def statements(app):  # noqa: ANN001, ANN201
    """The SQL statements the app's engines (the writes' and, on PostgreSQL, the reads' of
    their own) run inside the block (BEGIN excluded)."""
    seen: list[str] = []

    def record(conn, cursor, statement, params, context, executemany):  # noqa: ANN001, ARG001
        if not statement.lstrip().upper().startswith("BEGIN"):
            seen.append(statement)

    engines = _engines(app)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


def _engines(app):  # noqa: ANN001, ANN202
    """The app's engines: the one reads share on SQLite (an option of the same engine, whose
    events and pool are the engine's), two on PostgreSQL."""
    engine, read = app.state.engine, app.state.read_engine
    return [engine] if read.pool is engine.pool else [engine, read]


def _answer(event_id: str, learner: str = "u1", item: str = "i5", **kw) -> dict:
    return {"event_id": event_id, "learner_id": learner, "item_id": item, "correct": 1, **kw}


def _show(stmts: list[str]) -> str:
    return "\n".join(s.split("\n")[0][:120] for s in stmts)


def test_answer_and_next_items_statement_budget(client, world):
    ing, adm = world.headers("ingest"), world.headers("admin")
    for k in range(2):  # warm: keys cached, model and catalogue loaded, the state built
        assert client.post("/v1/answers", json=_answer(f"w{k}"), headers=ing).status_code == 201
        assert client.get("/v1/learners/u1/next-items", headers=adm).status_code == 200
    with statements(client.app) as answer:
        r = client.post("/v1/answers", json=_answer("x1"), headers=ing)
    assert r.status_code == 201, r.text
    pg = world.url.startswith("postgresql")
    assert len(answer) <= (MAX_ANSWER_STATEMENTS_PG if pg else MAX_ANSWER_STATEMENTS), _show(answer)
    with statements(client.app) as nxt:
        r = client.get("/v1/learners/u1/next-items", headers=adm)
    assert r.status_code == 200, r.text
    assert len(nxt) <= (MAX_NEXT_ITEMS_STATEMENTS_PG if pg else MAX_NEXT_ITEMS_STATEMENTS), _show(
        nxt
    )
    with statements(client.app) as mastery:
        r = client.get("/v1/learners/u1/mastery", headers=adm)
    assert r.status_code == 200, r.text
    assert len(mastery) <= MAX_MASTERY_STATEMENTS, _show(mastery)
    for stmt in answer + nxt + mastery:  # authentication came from the cache
        assert "api_keys" not in stmt, stmt
    # a replay: the stored result, no write
    with statements(client.app) as replay:
        again = client.post("/v1/answers", json=_answer("x1"), headers=ing)
    assert again.status_code == 200 and again.json()["replayed"] is True
    assert not any(s.lstrip().upper().startswith(("INSERT", "UPDATE")) for s in replay)


def test_batch_of_learners_takes_one_locking_query(client, world):
    ing = world.headers("ingest")
    client.post("/v1/answers", json=_answer("w0"), headers=ing)
    batch = [
        _answer(f"b{k}", learner=f"u{k % 4}", timestamp=f"2024-01-01T10:{k:02d}:00Z")
        for k in range(8)
    ]
    before = client.app.state.route_hops
    with statements(client.app) as stmts:
        r = client.post("/v1/answers", json={"answers": batch}, headers=ing)
    assert r.status_code == 201, r.text
    learner_selects = [s for s in stmts if s.lstrip().startswith("SELECT learners.")]
    # the answers are older than the learners' states (a replay): on PostgreSQL the attempt
    # on the event loop stops at the replay and the request runs again in a thread
    hops = client.app.state.route_hops - before
    assert hops == (1 if world.url.startswith("postgresql") else 0)
    assert len(learner_selects) == 1 + hops, _show(stmts)


def _revoke(url: str, key: str) -> None:
    engine = create_db_engine(url)
    with engine.begin() as c:
        c.execute(
            update(ApiKey)
            .where(ApiKey.prefix == key.split("_")[1])
            .values(revoked_at=datetime.now(UTC))
        )
    engine.dispose()


@pytest.fixture
def short_ttl_client(world):
    app = create_app(world.settings.model_copy(update={"auth_cache_seconds": 1.0}))
    with TestClient(app) as c:
        yield c


def test_revoked_key_stops_working_after_the_ttl(short_ttl_client, world):
    c, h = short_ttl_client, world.headers("admin")
    assert c.get("/v1/learners/u1/mastery", headers=h).status_code == 200
    assert len(c.app.state.auth_cache) == 1
    _revoke(world.url, world.keys["admin"])  # as `tutor keys revoke` (another process) does
    # remembered for at most the time to live...
    assert c.get("/v1/learners/u1/mastery", headers=h).status_code == 200
    time.sleep(1.1)
    # ...then looked up again, and refused
    r = c.get("/v1/learners/u1/mastery", headers=h)
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    assert c.get("/v1/learners/u1/mastery", headers=h).status_code == 401


def test_cache_off_revocation_is_immediate(world):
    app = create_app(world.settings.model_copy(update={"auth_cache_seconds": 0}))
    with TestClient(app) as c:
        h = world.headers("ingest")
        assert c.post("/v1/answers", json=_answer("z1"), headers=h).status_code == 201
        assert len(app.state.auth_cache) == 0
        _revoke(world.url, world.keys["ingest"])
        assert c.post("/v1/answers", json=_answer("z2"), headers=h).status_code == 401


def test_unknown_keys_are_not_remembered(client, world):
    bad = {"Authorization": f"Bearer {world.keys['admin']}x"}
    for _ in range(2):
        assert client.get("/v1/learners/u1/mastery", headers=bad).status_code == 401
    assert len(client.app.state.auth_cache) == 0


def test_deleting_a_learner_through_the_api_revokes_its_key_at_once(client, world):
    mine = world.headers("learner")  # u0's own key
    assert client.get("/v1/learners/u0/mastery", headers=mine).status_code == 200
    r = client.delete("/v1/learners/u0", headers=world.headers("admin"))
    assert r.status_code == 204
    assert client.get("/v1/learners/u0/mastery", headers=mine).status_code == 401
    r = client.post("/v1/answers", json=_answer("d1", learner="u0"), headers=mine)
    assert r.status_code == 401


def test_deleting_a_group_through_the_api_narrows_teacher_keys_at_once(client, world):
    teacher = world.headers("teacher")  # group g1 = {u0, u1}
    assert client.get("/v1/learners/u1/mastery", headers=teacher).status_code == 200
    assert client.delete("/v1/groups/g1", headers=world.headers("admin")).status_code == 204
    # the key still authenticates, but no longer sees the group's learners (404, not 403)
    assert client.get("/v1/learners/u1/mastery", headers=teacher).status_code == 404


def test_hot_route_bodies_are_their_documented_models(client, world):
    """The hot routes write their bodies without pydantic (``deps.json_response``): each body
    must still be exactly its response model, every field present (defaults included) and
    of its type."""
    from tutor.api.schemas import AnswerBatchResult, AnswerResult, Mastery, NextItems

    ing, adm = world.headers("ingest"), world.headers("admin")
    batch = {"answers": [_answer("b1", item="i3"), _answer("b2", item="i4", correct=0)]}
    cases = [
        (client.post("/v1/answers", json=_answer("m1"), headers=ing), AnswerResult),
        (client.post("/v1/answers", json=_answer("m1"), headers=ing), AnswerResult),  # replay
        (client.post("/v1/answers", json=batch, headers=ing), AnswerBatchResult),
        (client.get("/v1/learners/u1/mastery", headers=adm), Mastery),
        (
            client.get(
                "/v1/learners/u1/mastery", params={"at": "2031-01-01T00:00:00Z"}, headers=adm
            ),
            Mastery,
        ),
        (client.get("/v1/learners/u1/next-items?n=3", headers=adm), NextItems),
        (client.get("/v1/learners/u2/next-items", headers=adm), NextItems),
    ]
    for r, model in cases:
        assert r.status_code in (200, 201), r.text
        body = r.json()
        assert body == model.model_validate(body).model_dump(mode="json"), model.__name__
    assert cases[3][0].json()["concepts"], "a mastery with concepts"
    assert cases[5][0].json()["items"], "next items with items"


def test_start_up_freezes_the_loaded_heap(world):
    """``gc_freeze``: the objects loaded at start-up (the model, its catalogue) leave the
    collector's generations, the young generation's threshold is the setting's, and the
    service answers as before."""
    import gc

    before = gc.get_threshold()
    gc.unfreeze()  # (an earlier test's app may have frozen this process's heap)
    app = create_app(
        world.settings.model_copy(update={"gc_freeze": True, "gc_young_threshold": 5_000})
    )
    try:
        with TestClient(app) as c:
            assert gc.get_freeze_count() > 10_000  # the model, catalogue and libraries
            assert gc.get_threshold()[0] == 5_000
            h = world.headers("admin")
            assert c.get("/v1/learners/u1/next-items", headers=h).status_code == 200
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_gc_freeze_off_leaves_the_collector_alone(world):
    import gc

    gc.unfreeze()  # (an earlier test's app may have frozen this process's heap)
    with TestClient(create_app(world.settings)) as c:
        assert c.get("/v1/learners/u1/mastery", headers=world.headers("admin")).is_success
        assert gc.get_freeze_count() == 0


def test_start_up_prepares_what_the_first_learner_request_reads(world):
    """A worker's warm-up loads the active model, its catalogue and its reachable-mastery
    reference, so the first learner request computes none of them."""
    from tutor import service
    from tutor.runtime import REFERENCE_STREAK

    app = create_app(world.settings)
    with TestClient(app):
        with app.state.read_sessionmaker() as s:
            org = s.scalars(select(Organisation).where(Organisation.slug == "acme")).one()
            model = service.active_model(s, org=org)
        assert REFERENCE_STREAK in model._references


def test_every_request_session_is_closed(world, monkeypatch):
    """The request's session (a plain dependency, closed by the ``CloseSessions``
    middleware) goes back to the pool after a success, a refusal and a route that fails."""
    from tutor import service

    app = create_app(world.settings)
    pools = [engine.pool for engine in _engines(app)]
    ing, adm = world.headers("ingest"), world.headers("admin")
    with TestClient(app, raise_server_exceptions=False) as c:
        calls = [
            lambda: c.post("/v1/answers", json=_answer("s1"), headers=ing),
            lambda: c.get("/v1/learners/u1/next-items", headers=adm),
            lambda: c.get("/v1/learners/u1/mastery", headers=adm),
            lambda: c.get("/v1/learners/nobody/mastery", headers=adm),
            lambda: c.get("/v1/learners/u1/next-items", headers=ing),
        ]
        for call in calls:
            r = call()
            assert r.status_code in (200, 201, 403, 404), r.text
            assert [pool.checkedout() for pool in pools] == [0] * len(pools), r.request.url

        def boom(*a, **k):  # noqa: ANN002, ANN003, ARG001
            raise RuntimeError("boom")

        monkeypatch.setattr(service, "learner_mastery", boom)
        r = c.get("/v1/learners/u1/mastery", headers=adm)
        assert r.status_code == 500
        assert [pool.checkedout() for pool in pools] == [0] * len(pools)


def test_reads_take_connections_already_in_autocommit(client, world, monkeypatch):
    """PostgreSQL: GET requests take their connections from a pool of their own whose
    connections are in autocommit from the start, and return them without a reset: no read
    switches a connection's mode (SQLAlchemy's per-connection isolation option, on a pool
    shared with the writes, set it at every checkout and reset it at every return)."""
    import psycopg

    if not world.url.startswith("postgresql"):
        pytest.skip("PostgreSQL only (SQLite reads in a plain read transaction)")
    adm, ing = world.headers("admin"), world.headers("ingest")
    reads = [
        lambda: client.get("/v1/learners/u1/mastery", headers=adm),
        lambda: client.get("/v1/learners/u1/next-items", headers=adm),
    ]
    for read in reads:  # warm: the read pool's connection opened (set to autocommit once)
        assert read().status_code == 200
    switches, mode = [], psycopg.Connection.autocommit

    def record(conn, value):  # noqa: ANN001
        switches.append(value)
        mode.fset(conn, value)

    monkeypatch.setattr(psycopg.Connection, "autocommit", property(mode.fget, record))
    for read in reads * 3:
        assert read().status_code == 200
    assert switches == []
    # and an answer still commits in a transaction of its own, on the writes' pool
    r = client.post("/v1/answers", json=_answer("ac1"), headers=ing)
    assert r.status_code == 201, r.text
    assert switches == []
    with client.app.state.read_engine.connect() as c:
        assert c.connection.dbapi_connection.autocommit is True
    with client.app.state.engine.connect() as c:
        assert c.connection.dbapi_connection.autocommit is False


def test_next_items_reads_recent_items_with_the_learner(client, world):
    """On PostgreSQL the learner's statement also reads the items of their last answers, as
    many as the organisation excluded at its previous request; a larger exclusion set since
    is read with a query of its own, once. Either way the recent items stay out."""
    ing, adm = world.headers("ingest"), world.headers("admin")
    answered = [f"i{k}" for k in range(8)]
    for k, item in enumerate(answered):
        body = _answer(f"r{k}", item=item, timestamp=f"2025-01-01T00:0{k}:00Z")
        assert client.post("/v1/answers", json=body, headers=ing).status_code == 201
    url = "/v1/learners/u1/next-items?n=100&policy=random"
    pg = world.url.startswith("postgresql")

    def recommended(expected_statements: int) -> set[str]:
        with statements(client.app) as seen:
            r = client.get(url, headers=adm)
        assert r.status_code == 200, r.text
        if pg:
            assert len(seen) == expected_statements, _show(seen)
        return {it["item_id"] for it in r.json()["items"]}

    for exclusion, first, then in [(2, 1, 1), (6, 2, 1), (3, 1, 1)]:
        r = client.patch(
            "/v1/organisation/settings", json={"recent_exclusion": exclusion}, headers=adm
        )
        assert r.status_code == 200, r.text
        got = recommended(first)  # a larger window than the last request's: one more query
        assert got and not got & set(answered[-exclusion:]), (exclusion, got)
        assert set(answered[:-exclusion]) <= got  # the items before the window come back
        assert recommended(then) == got


def test_a_cancelled_hot_request_waits_for_its_body_and_keeps_context():
    """A hot body holds its request's session: a cancellation of the request (a server
    stopping) goes on only once the body has ended, as with the framework's threads; the
    body sees the caller's context variables."""
    import asyncio
    import contextvars
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from tutor.api.deps import in_hot_thread

    var = contextvars.ContextVar("var", default="unset")
    started, seen = threading.Event(), []

    def body() -> int:
        seen.append(var.get())
        started.set()
        time.sleep(0.3)
        seen.append("ended")
        return 1

    async def main() -> None:
        var.set("the request's")
        with ThreadPoolExecutor(1) as pool:
            assert await in_hot_thread(pool, lambda: var.get()) == "the request's"
            task = asyncio.ensure_future(in_hot_thread(pool, body))
            while not started.is_set():
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert seen == ["the request's", "ended"]

    asyncio.run(main())


def test_slow_routes_filling_their_threads_hold_up_no_answer(world, monkeypatch):
    """Every thread of the other routes busy (two slow learner lists, ``request_threads`` =
    2): an answer, mastery and next-items still run, in the hot routes' own threads, and the
    slow requests then finish too."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from tutor import learners_admin

    release, entered = threading.Event(), threading.Semaphore(0)
    real = learners_admin.learners_page

    def slow(*a, **k):  # noqa: ANN002, ANN003, ANN202
        entered.release()
        assert release.wait(30), "never released"
        return real(*a, **k)

    monkeypatch.setattr(learners_admin, "learners_page", slow)
    settings = world.settings.model_copy(update={"request_threads": 2})
    ing, adm = world.headers("ingest"), world.headers("admin")
    with TestClient(create_app(settings)) as c, ThreadPoolExecutor(2) as pool:
        lists = [pool.submit(c.get, "/v1/learners", headers=adm) for _ in range(2)]
        try:
            for _ in range(2):
                assert entered.acquire(timeout=30)  # both framework threads are held
            r = c.post("/v1/answers", json=_answer("e0"), headers=ing)
            assert r.status_code == 201, r.text
            assert c.get("/v1/learners/u1/mastery", headers=adm).status_code == 200
            assert c.get("/v1/learners/u1/next-items", headers=adm).status_code == 200
            assert not any(f.done() for f in lists)  # still held meanwhile
        finally:
            release.set()
        assert [f.result(30).status_code for f in lists] == [200, 200]


@pytest.mark.parametrize("inline", [True, False])
def test_hot_routes_run_on_the_event_loop_until_slow_work(world, monkeypatch, inline):
    """On PostgreSQL (and with ``inline_hot_routes``) an answer, next-items and mastery run on
    the event loop, not in a worker thread; a request that meets slow work there (a late
    answer replays the history) runs again in a thread. SQLite runs every route in a
    thread."""
    import threading

    from tutor import service

    threads: list[str] = []
    for name in ("record_answers", "learner_mastery"):
        real = getattr(service, name)

        def spy(*a, _real=real, **k):  # noqa: ANN002, ANN003, ANN202
            threads.append(threading.current_thread().name)
            return _real(*a, **k)

        monkeypatch.setattr(service, name, spy)
    settings = world.settings.model_copy(update={"inline_hot_routes": inline})
    app = create_app(settings)
    on_loop = inline and world.url.startswith("postgresql")
    ing, adm = world.headers("ingest"), world.headers("admin")
    with TestClient(app) as c:
        for k in range(2):  # the first answer builds the learner's state (a replay)
            body = _answer(f"e{k}", timestamp=f"2025-03-01T10:0{k}:00Z")
            assert c.post("/v1/answers", json=body, headers=ing).status_code == 201
        hops, threads[:] = app.state.route_hops, []
        assert c.post("/v1/answers", json=_answer("e2"), headers=ing).status_code == 201
        assert c.get("/v1/learners/u1/mastery", headers=adm).status_code == 200
        assert c.get("/v1/learners/u1/next-items", headers=adm).status_code == 200
        in_pool = ["tutor-hot" in t for t in threads]
        assert in_pool == [not on_loop] * 2, threads
        assert app.state.route_hops == hops
        # a late answer: a replay of the history, in a thread
        threads[:] = []
        late = _answer("e-late", timestamp="2025-03-01T09:00:00Z")
        r = c.post("/v1/answers", json=late, headers=ing)
        assert r.status_code == 201, r.text
        assert app.state.route_hops == hops + (1 if on_loop else 0)
        assert ["tutor-hot" in t for t in threads] == ([False, True] if on_loop else [True])
        mastery = c.get("/v1/learners/u1/mastery", headers=adm).json()
    assert r.json()["replayed"] is False and mastery["n_answers"] == 4
    answered = next(m for m in mastery["concepts"] if m["answers"])
    assert answered["answers"] == 4  # every answer folded in, the late one in its place
