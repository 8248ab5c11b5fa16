"""The xAPI statement resource (``/xapi/statements``) over the ASGI app, on SQLite and
PostgreSQL, and the statement-to-answer mapping it shares with the file loader."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from tutor.xapi import StatementError, same_statement, statement_to_answer, validate_statement

V = {"X-Experience-API-Version": "1.0.3"}
ADL = "http://adlnet.gov/expapi/verbs/"


def hdr(world, who: str) -> dict[str, str]:
    return {**world.headers(who), **V}


def stmt(
    learner: str = "u0",
    item: str = "i5",
    success: bool | None = True,
    verb: str = "answered",
    sid: str | None = None,
    ts: str | None = "2024-01-01T10:00:00Z",
    **extra,
) -> dict:
    # an account without homePage maps to its bare name, the learner ids of the test world
    st = {
        "actor": {"objectType": "Agent", "account": {"name": learner}},
        "verb": {"id": ADL + verb, "display": {"en-US": verb}},
        "object": {"objectType": "Activity", "id": item},
        **extra,
    }
    if sid is not None:
        st["id"] = sid
    if ts is not None:
        st["timestamp"] = ts
    if success is not None:
        st["result"] = {"success": success, "duration": "PT1M3.5S"}
    return st


def sid() -> str:
    return str(uuid.uuid4())


def history(client, world, learner: str) -> dict:
    r = client.get(f"/v1/learners/{learner}/history", headers=world.headers("admin"))
    assert r.status_code == 200, r.text
    return r.json()


def listing(client, world, who: str = "admin", **params) -> dict:
    r = client.get("/xapi/statements", params=params, headers=hdr(world, who))
    assert r.status_code == 200, r.text
    return r.json()


# ---------------------------------------------------------------------- mapping (no database)
def test_statement_to_answer_maps_as_the_file_loader_does():
    st = validate_statement(
        {
            "id": "A1B2C3D4-0000-4000-8000-000000000001",
            "actor": {"account": {"homePage": "https://lms.example.org/", "name": "alice"}},
            "verb": {"id": ADL + "completed"},
            "object": {
                "id": "https://lms.example.org/q/7",
                "definition": {"extensions": {"https://w3id.org/xapi/kt/extensions/concepts": 3}},
            },
            "result": {"score": {"raw": 4, "max": 4}, "duration": "PT2.5S"},
            "timestamp": "2024-03-01T12:00:00+01:00",
        }
    )
    a = statement_to_answer(st)
    assert a is not None
    assert a.event_id == "a1b2c3d4-0000-4000-8000-000000000001"
    assert (a.learner_id, a.item_id, a.correct) == ("lms.example.org|alice", st["object"]["id"], 1)
    assert a.timestamp == datetime(2024, 3, 1, 11, tzinfo=UTC)
    assert a.elapsed_ms == 2500 and a.concept_ids == ["3"]
    # not answers: another verb, an answer without an outcome, a non-Activity object
    assert statement_to_answer({**st, "verb": {"id": ADL + "experienced"}}) is None
    assert statement_to_answer({**st, "result": {}}) is None
    assert statement_to_answer({**st, "object": {"objectType": "Agent", "mbox": "x"}}) is None
    # timestamp without offset is UTC; no timestamp falls back on the statement's stored
    naive = statement_to_answer({**st, "timestamp": "2024-03-01T12:00:00"})
    assert naive.timestamp == datetime(2024, 3, 1, 12, tzinfo=UTC)
    fallback = statement_to_answer({**st, "timestamp": None, "stored": "2024-05-01T00:00:00Z"})
    assert fallback.timestamp == datetime(2024, 5, 1, tzinfo=UTC)
    bad = [
        ({"actor": {"name": "x"}, "verb": {"id": ADL + "a"}, "object": {"id": "i"}}, "actor"),
        ({**st, "verb": {"id": "answered"}}, "verb.id"),
        ({**st, "object": {"objectType": "Activity"}}, "object.id"),
        ({**st, "id": "not-a-uuid"}, "id"),
        ({**st, "timestamp": "yesterday"}, "timestamp"),
        ({**st, "result": {"success": "yes"}}, "result.success"),
    ]
    for statement, fld in bad:
        with pytest.raises(StatementError) as exc:
            validate_statement(statement)
        assert exc.value.field == fld
    # comparison ignores what the LRS sets, UUID case and timestamp serialisation
    twin = {
        **st,
        "id": st["id"].upper(),
        "timestamp": "2024-03-01T11:00:00Z",
        "stored": "2024-06-01T00:00:00Z",
        "version": "1.0.3",
        "authority": {"mbox": "mailto:lrs@example.org"},
    }
    assert same_statement(st, twin)
    assert not same_statement(st, {**st, "result": {"success": False}})


# ---------------------------------------------------------------------- the resource
def test_version_header_and_keys(client, world):
    r = client.post("/xapi/statements", json=stmt(), headers=world.headers("ingest"))
    assert r.status_code == 400 and "X-Experience-API-Version" in r.json()["detail"]
    assert r.headers["X-Experience-API-Version"] == "1.0.3"
    h = {**world.headers("ingest"), "X-Experience-API-Version": "2.0.0"}
    assert client.post("/xapi/statements", json=stmt(), headers=h).status_code == 400
    r = client.get("/xapi/statements", headers=V)
    assert r.status_code == 401 and r.headers["X-Experience-API-Version"] == "1.0.3"
    assert "X-Experience-API-Consistent-Through" in r.headers
    # learner and teacher keys may not write, an ingest key may not read
    for who in ("learner", "teacher"):
        assert (
            client.post("/xapi/statements", json=stmt(), headers=hdr(world, who)).status_code == 403
        )
    assert client.get("/xapi/statements", headers=hdr(world, "ingest")).status_code == 403
    r = client.post(
        "/xapi/statements",
        json=stmt(),
        headers={**hdr(world, "ingest"), "X-Experience-API-Version": "1.0.1"},
    )
    assert r.status_code == 200, r.text


def test_answer_statement_becomes_answer_once(client, world):
    before = client.get("/v1/learners/u1/mastery", headers=world.headers("admin")).json()
    s1 = stmt("u1", sid=sid())
    r = client.post("/xapi/statements", json=s1, headers=hdr(world, "ingest"))
    assert r.status_code == 200, r.text
    assert r.json() == [s1["id"]]
    hist = history(client, world, "u1")
    assert hist["total"] == 1
    ans = hist["answers"][0]
    assert (ans["event_id"], ans["item_id"], ans["correct"]) == (s1["id"], "i5", 1)
    assert ans["elapsed_ms"] == 63500 and ans["source"] == "xapi"
    assert ans["timestamp"].startswith("2024-01-01T10:00:00")
    after = client.get("/v1/learners/u1/mastery", headers=world.headers("admin")).json()
    assert after["n_answers"] == 1 and after["concepts"] != before["concepts"]
    # replays: the same statement, also with the id upper-cased, a client 'stored', another
    # serialisation of the timestamp; an id-less statement and a non-answer go into one batch
    twin = {**s1, "id": s1["id"].upper(), "timestamp": "2024-01-01T11:00:00+01:00"}
    twin["stored"] = "2030-01-01T00:00:00Z"
    plain = stmt("u1", verb="experienced", success=None)
    r = client.post(
        "/xapi/statements",
        json=[twin, stmt("u1", item="i6", ts=None), plain],
        headers=hdr(world, "admin"),
    )
    assert r.status_code == 200, r.text
    ids = r.json()
    assert ids[0] == s1["id"] and len(ids) == 3 and all(uuid.UUID(i) for i in ids)
    hist = history(client, world, "u1")
    assert hist["total"] == 2  # one new answer (i6); the replay and the non-answer add none
    assert {a["event_id"] for a in hist["answers"]} == {s1["id"], ids[1]}
    got = client.get(
        "/xapi/statements", params={"statementId": ids[2]}, headers=hdr(world, "admin")
    )
    assert got.status_code == 200 and got.json()["verb"]["id"] == ADL + "experienced"
    # an answer without a timestamp takes the time the LRS stored it
    new = client.get(
        "/xapi/statements", params={"statementId": ids[1]}, headers=hdr(world, "admin")
    )
    i6 = next(a for a in hist["answers"] if a["item_id"] == "i6")
    stored = datetime.fromisoformat(new.json()["stored"].replace("Z", "+00:00"))
    assert datetime.fromisoformat(i6["timestamp"]) == stored
    assert new.json()["timestamp"] == new.json()["stored"]


def test_conflicts_store_nothing_of_the_request(client, world):
    h = hdr(world, "ingest")
    s1 = stmt("u2", sid=sid())
    assert client.post("/xapi/statements", json=s1, headers=h).status_code == 200
    s2 = stmt("u2", item="i7", sid=sid())
    clash = {**s1, "result": {"success": False}}
    r = client.post("/xapi/statements", json=[s2, clash], headers=h)
    assert r.status_code == 409 and s1["id"] in r.json()["detail"]
    assert "statement 1" in r.json()["detail"]
    missing = client.get(
        "/xapi/statements", params={"statementId": s2["id"]}, headers=hdr(world, "admin")
    )
    assert missing.status_code == 404
    assert history(client, world, "u2")["total"] == 1
    # an invalid statement: 400 naming its index and field, and nothing stored either
    s3 = stmt("u2", item="i8", sid=sid())
    r = client.post("/xapi/statements", json=[s3, {**stmt("u2"), "verb": {}}], headers=h)
    assert r.status_code == 400 and "statement 1" in r.json()["detail"]
    assert "verb.id" in r.json()["detail"]
    r = client.post("/xapi/statements", json=[s3, {**s3}], headers=h)
    assert r.status_code == 400 and "statement 1: id" in r.json()["detail"]
    # unknown item or learner: 404 naming it (auto-creation is off in the test settings)
    r = client.post("/xapi/statements", json=[s3, stmt("u2", item="nope")], headers=h)
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    homepage = stmt(sid=sid())
    homepage["actor"] = {"account": {"homePage": "https://lms.example.org/", "name": "zed"}}
    r = client.post("/xapi/statements", json=homepage, headers=h)
    assert r.status_code == 404 and "lms.example.org|zed" in r.json()["detail"]
    assert history(client, world, "u2")["total"] == 1
    assert listing(client, world)["statements"] == [
        client.get(
            "/xapi/statements", params={"statementId": s1["id"]}, headers=hdr(world, "admin")
        ).json()
    ]
    # an answer event id already recorded through /v1/answers with other content is a conflict
    e = sid()
    a = {
        "event_id": e,
        "learner_id": "u2",
        "item_id": "i9",
        "correct": 1,
        "timestamp": "2024-01-01T10:00:00Z",
    }
    assert client.post("/v1/answers", json=a, headers=world.headers("ingest")).status_code == 201
    r = client.post("/xapi/statements", json=stmt("u2", item="i9", success=False, sid=e), headers=h)
    assert r.status_code == 409


def test_put_statement(client, world):
    h = hdr(world, "ingest")
    s = stmt("u0", verb="experienced", success=None)
    i = sid()
    r = client.put("/xapi/statements", params={"statementId": i}, json=s, headers=h)
    assert r.status_code == 204, r.text
    assert r.headers["X-Experience-API-Version"] == "1.0.3"
    got = client.get(
        "/xapi/statements", params={"statementId": i.upper()}, headers=hdr(world, "admin")
    )
    assert got.status_code == 200
    body = got.json()
    assert body["id"] == i and body["stored"] and body["actor"] == s["actor"]
    # again, equal: 204; different: 409; id in the body must be the statementId
    again = {**s, "id": i, "version": "1.0.3"}
    assert (
        client.put("/xapi/statements", params={"statementId": i}, json=again, headers=h).status_code
        == 204
    )
    other = {**s, "verb": {"id": ADL + "attempted"}}
    assert (
        client.put("/xapi/statements", params={"statementId": i}, json=other, headers=h).status_code
        == 409
    )
    r = client.put(
        "/xapi/statements", params={"statementId": i}, json={**s, "id": sid()}, headers=h
    )
    assert r.status_code == 400
    assert client.put("/xapi/statements", json=s, headers=h).status_code == 400
    r = client.put("/xapi/statements", params={"statementId": "x"}, json=s, headers=h)
    assert r.status_code == 400
    assert (
        client.put(
            "/xapi/statements", params={"statementId": sid()}, json=[s], headers=h
        ).status_code
        == 400
    )
    assert listing(client, world)["statements"] == [body]
    # a PUT answer is recorded like a POSTed one
    j = sid()
    assert (
        client.put(
            "/xapi/statements", params={"statementId": j}, json=stmt("u0"), headers=h
        ).status_code
        == 204
    )
    assert [a["event_id"] for a in history(client, world, "u0")["answers"]] == [j]
    r = client.get("/xapi/statements", params={"voidedStatementId": j}, headers=hdr(world, "admin"))
    assert r.status_code == 404 and "voiding" in r.json()["detail"]
    r = client.get(
        "/xapi/statements",
        params={"statementId": j, "verb": ADL + "answered"},
        headers=hdr(world, "admin"),
    )
    assert r.status_code == 400


def test_get_filters_and_paging(client, world):
    h = hdr(world, "ingest")
    posted = []
    for k in range(7):
        learner = "u0" if k % 2 == 0 else "u1"
        verb = "answered" if k < 5 else "experienced"
        s = stmt(
            learner,
            item=f"i{k}",
            verb=verb,
            success=None if verb == "experienced" else True,
            ts=f"2024-01-01T10:0{k}:00Z",
        )
        r = client.post("/xapi/statements", json=s, headers=h)
        assert r.status_code == 200, r.text
        posted.append((r.json()[0], learner, verb))
    all_ids = [p[0] for p in posted]
    # newest stored first, all of them
    assert [s["id"] for s in listing(client, world)["statements"]] == all_ids[::-1]
    asc = listing(client, world, ascending="true")
    assert [s["id"] for s in asc["statements"]] == all_ids and asc["more"] == ""
    agent = '{"objectType": "Agent", "account": {"name": "u0"}}'
    u0 = [p[0] for p in posted if p[1] == "u0"]
    assert [s["id"] for s in listing(client, world, agent=agent)["statements"]] == u0[::-1]
    answered = [p[0] for p in posted if p[2] == "answered"]
    got = listing(client, world, verb=ADL + "answered", ascending="true")
    assert [s["id"] for s in got["statements"]] == answered
    both = listing(client, world, verb=ADL + "answered", agent=agent, ascending="true")
    assert [s["id"] for s in both["statements"]] == [i for i in answered if i in u0]
    # since (exclusive) and until (inclusive) on the stored time
    third = client.get(
        "/xapi/statements", params={"statementId": all_ids[2]}, headers=hdr(world, "admin")
    ).json()
    since = listing(client, world, since=third["stored"], ascending="true")
    assert [s["id"] for s in since["statements"]] == all_ids[3:]
    until = listing(client, world, until=third["stored"], ascending="true")
    assert [s["id"] for s in until["statements"]] == all_ids[:3]
    # paging through 'more', newest first, with a filter kept across pages
    seen, url, pages = [], None, 0
    page = listing(client, world, limit=2)
    while True:
        pages += 1
        assert len(page["statements"]) <= 2
        seen += [s["id"] for s in page["statements"]]
        url = page["more"]
        if not url:
            break
        assert url.startswith("/xapi/statements?")
        r = client.get(url, headers=hdr(world, "admin"))
        assert r.status_code == 200, r.text
        page = r.json()
    assert seen == all_ids[::-1] and pages == 4
    first = listing(client, world, agent=agent, limit=1, ascending="true")
    second = client.get(first["more"], headers=hdr(world, "admin")).json()
    assert [first["statements"][0]["id"], second["statements"][0]["id"]] == u0[:2]
    # invalid parameters are 400
    for params in (
        {"since": "soon"},
        {"agent": "{}"},
        {"agent": "x"},
        {"limit": -1},
        {"cursor": "!!"},
        {"statementId": "nope"},
    ):
        r = client.get("/xapi/statements", params=params, headers=hdr(world, "admin"))
        assert r.status_code == 400, params


def test_keys_see_only_their_learners_statements(client, world):
    h = hdr(world, "ingest")
    ids = {}
    for learner in ("u0", "u1", "u2"):
        r = client.post(
            "/xapi/statements", json=stmt(learner, verb="experienced", success=None), headers=h
        )
        ids[learner] = r.json()[0]
    outsider = stmt(verb="experienced", success=None)
    outsider["actor"] = {"mbox": "mailto:guest@example.org"}
    ids["guest"] = client.post("/xapi/statements", json=outsider, headers=h).json()[0]

    def visible(who: str) -> set[str]:
        return {s["id"] for s in listing(client, world, who)["statements"]}

    assert visible("admin") == set(ids.values())
    assert visible("learner") == {ids["u0"]}
    assert visible("teacher") == {ids["u0"], ids["u1"]}
    assert visible("other_admin") == set() and visible("other_learner") == set()
    for who, learner, code in [
        ("learner", "u0", 200),
        ("learner", "u1", 404),
        ("learner", "guest", 404),
        ("teacher", "u1", 200),
        ("teacher", "u2", 404),
        ("other_admin", "u0", 404),
        ("other_learner", "u0", 404),
    ]:
        r = client.get(
            "/xapi/statements", params={"statementId": ids[learner]}, headers=hdr(world, who)
        )
        assert r.status_code == code, (who, learner)
    # an agent filter does not widen what a key sees
    agent = '{"account": {"name": "u1"}}'
    assert listing(client, world, "learner", agent=agent)["statements"] == []
    guest = listing(client, world, agent='{"mbox": "mailto:guest@example.org"}')
    assert [s["id"] for s in guest["statements"]] == [ids["guest"]]
    # the other organisation's statements are its own, even with the same id
    r = client.post(
        "/xapi/statements",
        json=stmt("x0", item="ix", verb="experienced", success=None, sid=ids["u0"]),
        headers=hdr(world, "other_admin"),
    )
    assert r.status_code == 200, r.text
    assert visible("other_learner") == {ids["u0"]}
    mine = client.get(
        "/xapi/statements", params={"statementId": ids["u0"]}, headers=hdr(world, "admin")
    )
    assert mine.json()["actor"]["account"]["name"] == "u0"
