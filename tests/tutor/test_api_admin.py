"""The admin routes: catalogue, learners, groups, models and settings (SQLite and PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import func, select


def org_info(client, world) -> dict:
    r = client.get("/v1/organisation", headers=world.headers("admin"))
    assert r.status_code == 200, r.text
    return r.json()


def test_concepts_round_trip(client, world):
    h = world.headers("admin")
    v0 = org_info(client, world)["catalogue_version"]
    r = client.put("/v1/concepts/cnew", json={"name": "Fractions"}, headers=h)
    assert r.status_code == 201, r.text
    assert r.json() == {"id": "cnew", "name": "Fractions", "level": None, "items": 0}
    r = client.put("/v1/concepts/cnew", json={"name": "Fractions II", "level": 4}, headers=h)
    assert r.status_code == 200 and r.json()["name"] == "Fractions II"
    assert r.json()["level"] == 4
    assert org_info(client, world)["catalogue_version"] == v0 + 2
    r = client.put("/v1/concepts/cnew", json={"level": 1e9}, headers=h)
    assert r.status_code == 422 and "level" in r.text
    assert client.get("/v1/concepts/cnew", headers=h).json()["name"] == "Fractions II"
    page = client.get("/v1/concepts?limit=2&offset=1", headers=h).json()
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 1
    assert [c["id"] for c in page["concepts"]] == ["c1", "c2"]
    n_c1 = client.get("/v1/items?concept=c1&limit=1", headers=h).json()["total"]
    assert page["concepts"][0]["items"] == n_c1 >= 5
    # a concept that items still use: 409 saying how many
    r = client.delete("/v1/concepts/c1", headers=h)
    assert r.status_code == 409, r.text
    assert f"{n_c1} item" in r.json()["detail"] and "'c1'" in r.json()["detail"]
    assert client.delete("/v1/concepts/cnew", headers=h).status_code == 204
    r = client.get("/v1/concepts/cnew", headers=h)
    assert r.status_code == 404 and "cnew" in r.json()["detail"]
    assert client.delete("/v1/concepts/cnew", headers=h).status_code == 404
    # unknown body fields are refused
    r = client.put("/v1/concepts/c9", json={"title": "x"}, headers=h)
    assert r.status_code == 422 and "title" in str(r.json()["detail"])


def test_prerequisites_replace_and_refuse_cycles(client, world):
    h = world.headers("admin")
    edges = client.get("/v1/prerequisites", headers=h).json()
    assert edges == [
        {"prerequisite": "c0", "concept": "c1"},
        {"prerequisite": "c1", "concept": "c2"},
    ]
    v0 = org_info(client, world)["catalogue_version"]
    cyc = [*edges, {"prerequisite": "c2", "concept": "c0"}]
    r = client.put("/v1/prerequisites", json=cyc, headers=h)
    assert r.status_code == 422 and "cycle" in r.json()["detail"]
    assert all(f"'{c}'" in r.json()["detail"] for c in ("c0", "c1", "c2"))
    r = client.put("/v1/prerequisites", json=[{"prerequisite": "c0", "concept": "zz"}], headers=h)
    assert r.status_code == 422 and "zz" in r.json()["detail"]
    assert client.get("/v1/prerequisites", headers=h).json() == edges
    assert org_info(client, world)["catalogue_version"] == v0
    new = [{"prerequisite": "c3", "concept": "c0"}]
    r = client.put("/v1/prerequisites", json=new, headers=h)
    assert r.status_code == 200 and r.json() == new
    assert client.get("/v1/prerequisites", headers=world.headers("teacher")).json() == new
    assert org_info(client, world)["catalogue_version"] == v0 + 1
    assert client.put("/v1/prerequisites", json=[], headers=h).json() == []


def test_items_round_trip(client, world):
    h = world.headers("admin")
    page = client.get("/v1/items?concept=c1", headers=h).json()
    assert page["total"] >= 5 and all("c1" in it["concepts"] for it in page["items"])
    assert client.get("/v1/items?limit=3", headers=h).json()["total"] == 20
    body = {"concepts": ["c1", "cq"], "metadata": {"difficulty": 2}}
    r = client.put("/v1/items/q1", json=body, headers=h)
    assert r.status_code == 422 and "cq" in r.json()["detail"]
    assert client.get("/v1/concepts/cq", headers=h).status_code == 404
    r = client.put("/v1/items/q1?create_concepts=true", json=body, headers=h)
    assert r.status_code == 201, r.text
    assert r.json() == {
        "id": "q1",
        "concepts": ["c1", "cq"],
        "metadata": {"difficulty": 2},
        "active": True,
    }
    assert client.get("/v1/concepts/cq", headers=h).json()["items"] == 1
    r = client.put("/v1/items/q1", json={"concepts": ["c2"], "metadata": {"x": 1}}, headers=h)
    assert r.status_code == 200
    assert client.get("/v1/items/q1", headers=h).json() == {
        "id": "q1",
        "concepts": ["c2"],
        "metadata": {"x": 1},
        "active": True,
    }
    assert [i["id"] for i in client.get("/v1/items?concept=cq", headers=h).json()["items"]] == []
    r = client.delete("/v1/items/q1", headers=h)
    assert r.status_code == 200 and r.json()["active"] is False
    assert client.get("/v1/items/q1", headers=h).json()["active"] is False
    inactive = client.get("/v1/items?active=false", headers=h).json()
    assert [i["id"] for i in inactive["items"]] == ["q1"]
    assert client.delete("/v1/items/nope", headers=h).status_code == 404


def test_deactivated_item_is_not_recommended(client, world):
    h = world.headers("admin")
    url = "/v1/learners/u0/next-items?policy=target&n=100"
    before = [i["item_id"] for i in client.get(url, headers=h).json()["items"]]
    assert before
    gone = before[0]
    ans = {"event_id": "d1", "learner_id": "u3", "item_id": gone, "correct": 1}
    assert client.post("/v1/answers", json=ans, headers=world.headers("ingest")).status_code == 201
    orig = client.get(f"/v1/items/{gone}", headers=h).json()
    assert client.delete(f"/v1/items/{gone}", headers=h).status_code == 200
    after = [i["item_id"] for i in client.get(url, headers=h).json()["items"]]
    assert gone not in after and set(after) == set(before) - {gone}
    # the history that mentions it stays valid
    hist = client.get("/v1/learners/u3/history", headers=h).json()
    assert [a["item_id"] for a in hist["answers"]] == [gone]
    assert client.get("/v1/learners/u3/mastery", headers=h).json()["n_answers"] == 1
    # PUT with active: true brings it back
    body = {"concepts": orig["concepts"], "metadata": orig["metadata"], "active": True}
    assert client.put(f"/v1/items/{gone}", json=body, headers=h).status_code == 200
    again = [i["item_id"] for i in client.get(url, headers=h).json()["items"]]
    assert gone in again


def test_learners_round_trip_and_cascade(client, world):
    h = world.headers("admin")
    page = client.get("/v1/learners?limit=2", headers=h).json()
    assert page["total"] == 6 and [x["id"] for x in page["learners"]] == ["u0", "u1"]
    r = client.put("/v1/learners/n1", json={"name": "Ada"}, headers=h)
    assert r.status_code == 201 and r.json()["name"] == "Ada" and r.json()["n_answers"] == 0
    r = client.put("/v1/learners/n1", json={"name": "Ada L."}, headers=h)
    assert r.status_code == 200 and r.json()["name"] == "Ada L."
    ans = {"event_id": "e1", "learner_id": "n1", "item_id": "i5", "correct": 1}
    assert client.post("/v1/answers", json=ans, headers=world.headers("ingest")).status_code == 201
    assert client.get("/v1/learners/n1", headers=h).json()["n_answers"] == 1
    assert (
        client.put("/v1/groups/g1/members", json=["u0", "u1", "n1"], headers=h).status_code == 200
    )
    assert client.delete("/v1/learners/n1", headers=h).status_code == 204
    assert client.get("/v1/learners/n1", headers=h).status_code == 404
    assert client.delete("/v1/learners/n1", headers=h).status_code == 404
    assert client.get("/v1/groups/g1", headers=h).json()["members"] == ["u0", "u1"]
    from tutor.db import Interaction, LearnerState, create_db_engine, make_sessionmaker

    engine = create_db_engine(world.url)
    with make_sessionmaker(engine)() as s:
        assert s.scalar(select(func.count()).select_from(Interaction)) == 0
        assert s.scalar(select(func.count()).select_from(LearnerState)) == 0
    engine.dispose()
    # the event id is free again: a recreated learner starts from nothing
    assert client.put("/v1/learners/n1", json={}, headers=h).status_code == 201
    assert client.post("/v1/answers", json=ans, headers=world.headers("ingest")).status_code == 201


def test_teacher_and_learner_scopes(client, world):
    t = world.headers("teacher")
    page = client.get("/v1/learners", headers=t).json()
    assert page["total"] == 2 and [x["id"] for x in page["learners"]] == ["u0", "u1"]
    assert client.get("/v1/learners/u1", headers=t).status_code == 200
    assert client.get("/v1/learners/u2", headers=t).status_code == 404
    assert [g["id"] for g in client.get("/v1/groups", headers=t).json()["groups"]] == ["g1"]
    assert client.get("/v1/groups/g1", headers=t).json()["members"] == ["u0", "u1"]
    assert client.get("/v1/groups/g2", headers=t).status_code == 404
    lk = world.headers("learner")
    assert client.get("/v1/learners/u0", headers=lk).json()["id"] == "u0"
    assert client.get("/v1/learners/u1", headers=lk).status_code == 404
    assert client.get("/v1/learners", headers=lk).status_code == 403
    assert client.get("/v1/models", headers=t).status_code == 403


def test_non_admin_keys_may_not_write(client, world):
    mid = world.model_id
    writes = [
        ("PUT", "/v1/concepts/c0", {"name": "x"}),
        ("DELETE", "/v1/concepts/c3", None),
        ("PUT", "/v1/prerequisites", []),
        ("PUT", "/v1/items/i0", {"concepts": ["c0"]}),
        ("DELETE", "/v1/items/i0", None),
        ("PUT", "/v1/learners/u0", {"name": "x"}),
        ("DELETE", "/v1/learners/u0", None),
        ("PUT", "/v1/groups/g1", {"name": "x"}),
        ("PUT", "/v1/groups/g1/members", []),
        ("DELETE", "/v1/groups/g1", None),
        ("POST", f"/v1/models/{mid}/activate", None),
        ("POST", f"/v1/models/{mid}/rebuild-states", None),
        ("PATCH", "/v1/organisation/settings", {"default_policy": "target"}),
    ]
    for who in ("learner", "ingest", "teacher"):
        for method, path, body in writes:
            r = client.request(method, path, json=body, headers=world.headers(who))
            assert r.status_code == 403, (who, method, path, r.text)
    h = world.headers("admin")
    assert client.get("/v1/concepts/c0", headers=h).json()["name"] == ""
    assert client.get("/v1/items/i0", headers=h).json()["active"] is True
    assert client.get("/v1/groups/g1", headers=h).json()["members"] == ["u0", "u1"]


def test_an_invalid_request_is_a_422_before_the_role_check(client, world):
    """The body and parameters are validated before the route looks at the key's role or
    at what it may see: an invalid write is a 422 for any key, a 403 only once valid."""
    writes = [
        ("PUT", "/v1/concepts/c0", {"title": "x"}),
        ("PUT", "/v1/items/i0?create_concepts=maybe", {"concepts": ["c0"]}),
        ("PUT", "/v1/learners/u0", {"name": "x", "extra": 1}),
        ("PUT", "/v1/groups/g1", {"name": ["x"]}),
        ("PUT", "/v1/groups/g9/members", [""]),
        # too long for an id: refused by the route's validation (a control character in the
        # path would be refused by the NoControlCharacters middleware before any route)
        ("DELETE", "/v1/learners/" + "x" * 201, None),
    ]
    for who in ("admin", "teacher", "learner", "other_admin"):
        for method, path, body in writes:
            r = client.request(method, path, json=body, headers=world.headers(who))
            assert r.status_code == 422, (who, method, path, r.text)
    assert client.put("/v1/groups/g1", json={"name": ["x"]}).status_code == 401


def test_control_characters_never_reach_the_database(client, world):
    """Ids in bodies (an item's concepts, prerequisites, group members) are ``Id``s, and names
    are storable text: a NUL is a 422 (PostgreSQL cannot store one) and nothing is written."""
    from tutor.db import Concept, Group, Item, Learner, create_db_engine, make_sessionmaker

    h = world.headers("admin")

    def counts() -> tuple[int, ...]:
        engine = create_db_engine(world.url)
        with make_sessionmaker(engine)() as s:
            out = tuple(
                s.scalar(select(func.count()).select_from(t))
                for t in (Concept, Item, Learner, Group)
            )
        engine.dispose()
        return out

    before, v0 = counts(), org_info(client, world)["catalogue_version"]
    r = client.put("/v1/items/x?create_concepts=true", json={"concepts": ["a\u0000b"]}, headers=h)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][:2] == ["body", "concepts"]
    assert client.get("/v1/items/x", headers=h).status_code == 404
    for method, path, body in [
        ("PUT", "/v1/items/x?create_concepts=true", {"concepts": ["c0", "a\u001fb"]}),
        ("PUT", "/v1/prerequisites", [{"prerequisite": "c0", "concept": "a\u0000"}]),
        ("PUT", "/v1/prerequisites", [{"prerequisite": "\u0000", "concept": "c1"}]),
        ("PUT", "/v1/groups/g1/members", ["u0", "u\u0000"]),
        ("PUT", "/v1/concepts/cnul", {"name": "a\u0000b"}),
        ("PUT", "/v1/concepts/c0", {"name": "a\u0000b"}),
        ("PUT", "/v1/learners/nnul", {"name": "a\u0000b"}),
        ("PUT", "/v1/learners/u0", {"display_name": "\u0000"}),
        ("PUT", "/v1/groups/gnul", {"name": "a\u0000b"}),
        ("PUT", "/v1/groups/g1", {"name": "Class\u0000"}),
    ]:
        r = client.request(method, path, json=body, headers=h)
        assert r.status_code == 422, (method, path, r.text)
    assert counts() == before
    assert org_info(client, world)["catalogue_version"] == v0
    assert client.get("/v1/concepts/c0", headers=h).json()["name"] == ""
    assert client.get("/v1/groups/g1", headers=h).json()["members"] == ["u0", "u1"]
    assert client.get("/v1/groups/g1", headers=h).json()["name"] == "Class 1"
    assert len(client.get("/v1/prerequisites", headers=h).json()) == 2
    # tabs and newlines stay allowed in names (free text); only ids refuse them
    r = client.put("/v1/groups/g1", json={"name": "Class\t1\n"}, headers=h)
    assert r.status_code == 200 and r.json()["name"] == "Class\t1\n"


def test_non_finite_numbers_in_free_json_are_422_on_both_databases(client, world):
    """Request bodies are parsed by Python's JSON parser, which reads ``NaN`` and
    ``Infinity``: in an item's metadata they were stored as NaN on SQLite and a vague 422 on
    PostgreSQL. Now a 422 that says so on both, and nothing is written. The JSON columns'
    own text then round-trips as written (``tutor.db.session.json_dumps``)."""
    from tutor.db.session import json_dumps, json_loads

    h = {**world.headers("admin"), "content-type": "application/json"}
    for raw in (b'{"x": NaN}', b'{"x": [1, Infinity]}', b'{"x": {"y": -Infinity}}'):
        body = b'{"concepts": ["c0"], "metadata": ' + raw + b"}"
        r = client.put("/v1/items/x", content=body, headers=h)
        assert r.status_code == 422, r.text
        detail = r.json()["detail"][0]
        assert detail["loc"][:2] == ["body", "metadata"] and "finite" in detail["msg"], detail
    assert client.get("/v1/items/x", headers=h).status_code == 404
    meta = {"x": 1.5, "big": 2**70 + 1, "neg": -(2**63) - 1, "é": [None, "a\tb"], "n": 1e16}
    r = client.put("/v1/items/x", json={"concepts": ["c0"], "metadata": meta}, headers=h)
    assert r.status_code == 201, r.text
    assert client.get("/v1/items/x", headers=h).json()["metadata"] == meta
    # orjson writes what it can; the standard library what it refuses (a 70-bit integer), and
    # reads what orjson refuses (a NaN an older SQLite database may hold)
    assert json_loads(json_dumps(meta)) == meta
    assert json_dumps({"a": 2**70}) == '{"a": 1180591620717411303424}'
    # orjson reads an integer beyond 64 bits as a float: those texts take the standard library
    for text in ('{"a": 1180591620717411303425}', b'{"a": -9223372036854775809}'):
        assert isinstance(json_loads(text)["a"], int)
    assert json_loads('{"a": NaN}')["a"] != json_loads('{"a": NaN}')["a"]


def test_other_organisations_ids_are_404(client, world):
    oa, h = world.headers("other_admin"), world.headers("admin")
    mid = world.model_id
    for method, path, body in [
        ("GET", "/v1/concepts/c0", None),
        ("DELETE", "/v1/concepts/c0", None),
        ("GET", "/v1/items/i0", None),
        ("DELETE", "/v1/items/i0", None),
        ("GET", "/v1/learners/u0", None),
        ("DELETE", "/v1/learners/u0", None),
        ("GET", "/v1/groups/g1", None),
        ("PUT", "/v1/groups/g1/members", []),
        ("DELETE", "/v1/groups/g1", None),
        ("GET", f"/v1/models/{mid}", None),
        ("POST", f"/v1/models/{mid}/activate", None),
        ("POST", f"/v1/models/{mid}/rebuild-states", None),
    ]:
        r = client.request(method, path, json=body, headers=oa)
        assert r.status_code == 404, (method, path, r.text)
    assert client.get("/v1/models", headers=oa).json() == []
    assert client.get("/v1/learners", headers=oa).json()["total"] == 1
    assert client.get("/v1/items/ix", headers=h).status_code == 404
    assert client.get("/v1/learners/x0", headers=h).status_code == 404
    assert client.get("/v1/concepts/cx", headers=h).status_code == 404
    # another organisation's learner is unknown here: 422 naming it, nothing changed
    r = client.put("/v1/groups/g1/members", json=["u0", "x0", "ghost"], headers=h)
    assert r.status_code == 422 and "x0" in r.json()["detail"] and "ghost" in r.json()["detail"]
    assert client.get("/v1/groups/g1", headers=h).json()["members"] == ["u0", "u1"]
    # the other organisation's own catalogue is untouched by acme's
    assert client.get("/v1/learners/u0", headers=h).status_code == 200
    assert client.get("/v1/concepts", headers=oa).json()["concepts"][0]["id"] == "cx"


def test_groups_round_trip(client, world):
    h = world.headers("admin")
    r = client.put("/v1/groups/g3", json={"name": "Class 3"}, headers=h)
    assert r.status_code == 201 and r.json()["members"] == [] and r.json()["name"] == "Class 3"
    assert client.put("/v1/groups/g3", json={"name": "C3"}, headers=h).status_code == 200
    r = client.put("/v1/groups/g3/members", json=["u4", "u3", "u4"], headers=h)
    assert r.status_code == 200 and r.json()["members"] == ["u3", "u4"]
    r = client.put("/v1/groups/g3/members", json=["u4", "u5"], headers=h)
    assert r.json()["members"] == ["u4", "u5"] and r.json()["n_members"] == 2
    groups = client.get("/v1/groups", headers=h).json()
    assert groups["total"] == 3
    assert {g["id"]: g["n_members"] for g in groups["groups"]} == {"g1": 2, "g2": 1, "g3": 2}
    assert client.delete("/v1/groups/g3", headers=h).status_code == 204
    assert client.get("/v1/groups/g3", headers=h).status_code == 404
    assert client.get("/v1/learners/u4", headers=h).status_code == 200
    assert client.put("/v1/groups/g3/members", json=[], headers=h).status_code == 404


def test_model_activation_switches_and_rebuilds(client, world, dkt_run):
    from tutor import operations as ops
    from tutor.db import create_db_engine, make_sessionmaker

    h = world.headers("admin")
    ans = {"event_id": "m1", "learner_id": "u0", "item_id": "i5", "correct": 1}
    assert client.post("/v1/answers", json=ans, headers=world.headers("ingest")).status_code == 201
    engine = create_db_engine(world.url)
    with make_sessionmaker(engine)() as s, s.begin():
        mv = ops.register_model(s, org=ops.get_org(s, "acme"), run_dir=dkt_run, label="second")
        new_id = mv.id
    engine.dispose()
    models = client.get("/v1/models", headers=h).json()
    assert [(m["id"], m["active"]) for m in models] == [(world.model_id, True), (new_id, False)]
    assert models[1]["label"] == "second" and models[1]["sha256"] == models[0]["sha256"]
    assert models[0]["states"] >= 1 and models[1]["states"] == 0
    r = client.post(f"/v1/models/{new_id}/activate", headers=h)
    assert r.status_code == 200 and r.json()["active"] is True
    assert org_info(client, world)["active_model_id"] == new_id
    m = client.get("/v1/learners/u0/mastery", headers=h)
    assert m.status_code == 200 and m.json()["model"]["id"] == new_id  # lazy rebuild
    assert m.json()["n_answers"] == 1
    r = client.post(f"/v1/models/{new_id}/rebuild-states", headers=h)
    assert r.status_code == 200 and r.json() == {"model_id": new_id, "learners": 6, "skipped": 0}
    assert client.get(f"/v1/models/{new_id}", headers=h).json()["states"] == 6
    assert client.get("/v1/models/999999", headers=h).status_code == 404
    assert client.post(f"/v1/models/{world.model_id}/activate", headers=h).status_code == 200
    m = client.get("/v1/learners/u0/mastery", headers=h).json()
    assert m["model"]["id"] == world.model_id


def test_settings_patch_changes_default_policy(client, world):
    h = world.headers("admin")
    url = "/v1/learners/u0/next-items"
    assert client.get(url, headers=h).json()["policy"] == "mixed"
    r = client.patch(
        "/v1/organisation/settings",
        json={"default_policy": "target", "target_success": 0.6},
        headers=h,
    )
    assert r.status_code == 200, r.text
    assert r.json()["settings"] == {"default_policy": "target", "target_success": 0.6}
    assert r.json()["effective_settings"]["mastery_threshold"] == 0.8
    body = client.get(url, headers=h).json()
    assert body["policy"] == "target" and body["target"] == 0.6
    for bad, name in [
        ({"colour": "red"}, "colour"),
        ({"default_policy": "coin-toss"}, "default_policy"),
        ({"mastery_threshold": 1.0}, "mastery_threshold"),
        ({"review_threshold": True}, "review_threshold"),
        ({"recent_exclusion": -1}, "recent_exclusion"),
        ({"recent_exclusion": 2.5}, "recent_exclusion"),
        ({"target_success": 0.5, "oops": 1}, "oops"),
    ]:
        r = client.patch("/v1/organisation/settings", json=bad, headers=h)
        assert r.status_code == 422 and name in r.json()["detail"], (bad, r.text)
    assert org_info(client, world)["settings"]["target_success"] == 0.6
    r = client.patch("/v1/organisation/settings", json={"default_policy": None}, headers=h)
    assert r.json()["settings"] == {"target_success": 0.6}
    assert client.get(url, headers=h).json()["policy"] == "mixed"


def test_register_a_run_whose_results_hold_nan(db_url, dkt_run, tmp_path):
    """results.json with NaN (an empty calibration bin) registers on PostgreSQL too."""
    import json
    import shutil

    from tutor import operations as ops
    from tutor.db import create_db_engine, make_sessionmaker

    run = tmp_path / "run"
    shutil.copytree(dkt_run, run)
    (run / "results.json").write_text(json.dumps({"test": {"auc": 0.7, "ece": float("nan")}}))
    engine = create_db_engine(db_url)
    with make_sessionmaker(engine)() as s, s.begin():
        org = ops.create_org(s, slug="nan")
        mv = ops.register_model(s, org=org, run_dir=run)
        assert mv.info["results"]["test"] == {"auc": 0.7, "ece": None}
    engine.dispose()


def test_rebuilding_states_leaves_answers_free_to_be_stored(client, world, monkeypatch):
    """``rebuild-states`` replays a batch outside any write and writes it in a short
    transaction of its own. While the second batch is replayed, answers are stored for a
    learner of the first batch (already written) and for one of the second: neither waits
    for the rebuild (before, its one transaction held SQLite's write lock, or the written
    rows on PostgreSQL, to its end: the answer waited past its 2 s timeout), and neither is
    undone by a stale replay (the second batch's learner is skipped; before, its answer
    count and state were reset to the replay's)."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    from tutor import operations, service, states
    from tutor.db import Learner, LearnerState, Organisation, create_db_engine, make_sessionmaker

    h = world.headers("admin")
    monkeypatch.setattr(operations, "LIVE_BATCH", 2)
    check = create_db_engine(world.url)
    acme = select(Organisation.id).where(Organisation.slug == "acme").scalar_subquery()
    with make_sessionmaker(check)() as s:
        order = s.scalars(
            select(Learner.external_id).where(Learner.org_id == acme).order_by(Learner.id)
        ).all()
    assert len(order) == 6
    early, current = order[0], order[2]  # the first batch's, the second's
    before = {
        ext: client.get(f"/v1/learners/{ext}/mastery", headers=h).json()["n_answers"]
        for ext in (early, current)
    }
    engine = create_db_engine(world.url, sqlite_timeout=2)
    replays, stored = [], []
    replay = states.replay_histories

    def answer_meanwhile(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        replays.append(1)
        if len(replays) == 2:  # the second batch's replay: another client answers
            with make_sessionmaker(engine)() as s, s.begin():
                if world.url.startswith("postgresql"):
                    s.execute(text("SET LOCAL lock_timeout = '2s'"))
                org = s.scalar(select(Organisation).where(Organisation.slug == "acme"))
                now = datetime.now(UTC)
                answers = [
                    service.AnswerIn(
                        event_id=f"during-{ext}",
                        learner_id=ext,
                        item_id="i3",
                        correct=1,
                        timestamp=now,
                    )
                    for ext in (early, current)
                ]
                stored.extend(service.record_answers(s, org=org, answers=answers))
        return replay(*args, **kwargs)

    monkeypatch.setattr(states, "replay_histories", answer_meanwhile)
    try:
        r = client.post(f"/v1/models/{world.model_id}/rebuild-states", headers=h)
    finally:
        engine.dispose()
    assert r.status_code == 200, r.text
    assert len(replays) == 3 and len(stored) == 2 and not any(a["replayed"] for a in stored)
    assert r.json() == {"model_id": world.model_id, "learners": 5, "skipped": 1}
    try:
        with make_sessionmaker(check)() as s:
            for learner in s.scalars(select(Learner).where(Learner.org_id == acme)):
                row = s.get(LearnerState, (learner.id, world.model_id))
                assert row is not None and row.n_applied == learner.n_answers, learner.external_id
    finally:
        check.dispose()
    for ext in (early, current):
        m = client.get(f"/v1/learners/{ext}/mastery", headers=h).json()
        assert m["n_answers"] == before[ext] + 1, ext
