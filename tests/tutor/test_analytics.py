"""Analytics routes against hand-computed values on a small fixture (SQLite and PostgreSQL).

Group g1 = {u0, u1} (plus u3, who never answers, where a test adds it); u2 (group g2) answers
too and must never count for g1. Items: i0 -> c0, c1; i1 -> c0; i5 -> c1, c2; i6 -> c1.

    u0: i0 1, i1 0, i5 1, i1 1       (10:00, 10:01, 10:02, 10:03)
    u1: i1 0, i6 0, i1 1             (10:00, 10:05, 10:06)
    u2: i1 1                         (g2)

Opportunities of g1 (k-th answer of a learner on a concept's items, in event order):
c0: u0 = i0 1, i1 0, i1 1; u1 = i1 0, i1 1 -> errors by opportunity 0.5 (2), 0.5 (2), 0 (1).
c1: u0 = i0 1, i5 1; u1 = i6 0 -> 0.5 (2), 0 (1). c2: u0 = i5 1 -> 0 (1).
Predicted values are checked against the serving form stepped here answer by answer.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select, text

from tests.tutor.helpers import GROUP_ACCESS, answer_batch, set_org_settings

ANSWERS = [
    ("a1", "u0", "i0", 1, "10:00"),
    ("a2", "u0", "i1", 0, "10:01"),
    ("a3", "u0", "i5", 1, "10:02"),
    ("a4", "u0", "i1", 1, "10:03"),
    ("b1", "u1", "i1", 0, "10:00"),
    ("b2", "u1", "i6", 0, "10:05"),
    ("b3", "u1", "i1", 1, "10:06"),
    ("x1", "u2", "i1", 1, "10:04"),
]
ITEM_CONCEPTS = {"i0": ["c0", "c1"], "i1": ["c0"], "i5": ["c1", "c2"], "i6": ["c1"]}


@pytest.fixture
def posted(client, world):
    from tutor.analytics import clear_caches

    clear_caches()
    batch = answer_batch(ANSWERS)
    # out of order on purpose: the service orders by timestamp
    r = client.post("/v1/answers", json={"answers": batch[::-1]}, headers=world.headers("ingest"))
    assert r.status_code == 201, r.text
    # two learners: every point and item counts here (the defaults hide small numbers; see
    # test_small_numbers_are_hidden_by_default)
    set_org_settings(world, curve_min_learners=1, item_flag_min_learners=1)
    return client


def _history(learner: str) -> list[tuple[str, int, str]]:
    rows = sorted((t, i, c) for _, u, i, c, t in ANSWERS if u == learner)
    return [(i, c, t) for t, i, c in rows]


def _served(dkt_run: Path):
    from tutor.runtime import LoadedModel

    return LoadedModel.from_bytes(0, (dkt_run / "best.pt").read_bytes())


def _serving_replay(model, learner: str) -> tuple[list[float], list[np.ndarray]]:
    """Predicted success before each answer and concept mastery after each, by the serving
    form one answer at a time (the reference the batched analytics must match)."""
    state = model.model.init_state(1)
    before, after = [], []
    hist = _history(learner)
    stamp = [datetime.fromisoformat(f"2024-03-01T{t}:00+00:00") for _, _, t in hist]
    for k, (item, correct, _) in enumerate(hist):
        idx = model.item_idx([item])
        t = model.time_value(stamp[k], stamp[0], k)
        # the prediction of answer k is made at its own time (models that forget decay)
        before.append(float(model.predict(state, idx, t if k else None)[0]))
        state = model.step_many(state, idx.tolist(), [correct], [t])
        after.append(model.concept_mastery(state))
    return before, after


def _mastery(client, world, learner: str, field: str = "predicted_success") -> dict[str, float]:
    r = client.get(f"/v1/learners/{learner}/mastery", headers=world.headers("admin"))
    assert r.status_code == 200, r.text
    return {c["concept_id"]: c[field] for c in r.json()["concepts"]}


def _mastery_rows(client, world, learner: str) -> dict[str, dict]:
    r = client.get(f"/v1/learners/{learner}/mastery", headers=world.headers("admin"))
    assert r.status_code == 200, r.text
    return {c["concept_id"]: c for c in r.json()["concepts"]}


def test_items_have_the_fixture_concepts(posted, world):
    h = world.headers("admin")
    for item, concepts in ITEM_CONCEPTS.items():
        r = posted.get(f"/v1/items/{item}", headers=h)
        assert sorted(r.json()["concepts"]) == concepts


def test_group_mastery_grid(posted, world):
    h = world.headers("teacher")
    r = posted.get("/v1/analytics/groups/g1/mastery", headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["group"] == {"id": "g1", "name": "Class 1", "learners": 2}
    assert body["model"]["id"] == world.model_id and body["model"]["forgets"] is False
    concepts = [c["concept_id"] for c in body["concepts"]]
    assert sorted(concepts) == ["c0", "c1", "c2", "c3"]
    # curriculum order honours the prerequisites c0 -> c1 -> c2
    assert concepts.index("c0") < concepts.index("c1") < concepts.index("c2")
    rows = {row["learner_id"]: row for row in body["learners"]}
    assert list(rows) == ["u0", "u1"]
    assert rows["u0"]["n_answers"] == 4 and rows["u1"]["n_answers"] == 3
    assert rows["u0"]["last_answer"].startswith("2024-03-01T10:03:00")
    assert rows["u1"]["last_answer"].startswith("2024-03-01T10:06:00")
    # each cell is what GET /mastery says: status, reported mastery, own answers
    per = {u: _mastery_rows(posted, world, u) for u in ("u0", "u1")}
    for u, row in rows.items():
        for c, m, st, n in zip(
            concepts, row["mastery"], row["status"], row["answers"], strict=True
        ):
            assert m == pytest.approx(per[u][c]["mastery"], abs=2e-6)
            assert st == per[u][c]["status"] and n == per[u][c]["answers"]
        assert row["mean"] == pytest.approx(np.mean(row["mastery"]), abs=2e-6)
    # own answers per concept, from the fixture table (u1 never answered c2 or c3)
    assert dict(zip(concepts, rows["u0"]["answers"], strict=True)) == {
        "c0": 3,
        "c1": 2,
        "c2": 1,
        "c3": 0,
    }
    assert dict(zip(concepts, rows["u1"]["answers"], strict=True)) == {
        "c0": 2,
        "c1": 1,
        "c2": 0,
        "c3": 0,
    }
    assert dict(zip(concepts, rows["u1"]["status"], strict=True))["c2"] == "estimated"
    for k, c in enumerate(concepts):
        assert body["concept_means"][k] == pytest.approx(
            (per["u0"][c]["mastery"] + per["u1"][c]["mastery"]) / 2, abs=2e-6
        )
        for status in ("mastered", "learning", "struggling"):
            want = sum(per[u][c]["status"] == status for u in ("u0", "u1"))
            assert body["concept_counts"][status][k] == want
    assert body["rule"]["mastery_threshold"] == 0.8 and body["scale"] == "reachable"
    assert "at least 3 own answers" in body["rule_text"]
    # a page holds fewer learners; the means still average the whole group
    page = posted.get("/v1/analytics/groups/g1/mastery?limit=1&offset=1", headers=h).json()
    assert [x["learner_id"] for x in page["learners"]] == ["u1"]
    assert page["concept_means"] == body["concept_means"]
    assert page["offset"] == 1 and page["limit"] == 1


def test_grid_rebuilds_stale_states_and_counts_new_members(posted, world):
    from tutor.db import LearnerState, create_db_engine, make_sessionmaker

    engine = create_db_engine(world.url)
    with make_sessionmaker(engine)() as s, s.begin():
        s.execute(LearnerState.__table__.delete())  # as after a model swap
    engine.dispose()
    h = world.headers("admin")
    r = posted.put("/v1/groups/g1/members", json=["u0", "u1", "u3"], headers=h)
    assert r.status_code == 200, r.text
    body = posted.get("/v1/analytics/groups/g1/mastery", headers=h).json()
    assert [x["learner_id"] for x in body["learners"]] == ["u0", "u1", "u3"]
    u3 = body["learners"][2]
    assert u3["n_answers"] == 0 and u3["last_answer"] is None
    concepts = [c["concept_id"] for c in body["concepts"]]
    for row in body["learners"]:
        ref = _mastery(posted, world, row["learner_id"], "mastery")
        assert row["mastery"] == pytest.approx([ref[c] for c in concepts], abs=2e-6)
    assert set(u3["status"]) == {"not_started"} and set(u3["answers"]) == {0}
    # the rebuilt states were kept
    engine = create_db_engine(world.url)
    with make_sessionmaker(engine)() as s:
        rows = s.execute(select(LearnerState.n_applied)).scalars().all()
    engine.dispose()
    assert sorted(rows) == [0, 3, 4]


def test_learner_timeline(posted, world, dkt_run):
    r = posted.get("/v1/analytics/learners/u0/timeline", headers=world.headers("learner"))
    assert r.status_code == 200, r.text
    body = r.json()
    # most practised first: c0 (3 answers), c1 (2), c2 (1)
    assert [c["concept_id"] for c in body["concepts"]] == ["c0", "c1", "c2"]
    pts = body["points"]
    assert [p["index"] for p in pts] == [1, 2, 3, 4]
    assert [p["event_id"] for p in pts] == ["a1", "a2", "a3", "a4"]
    assert [p["item_id"] for p in pts] == ["i0", "i1", "i5", "i1"]
    assert [p["correct"] for p in pts] == [1, 0, 1, 1]
    assert [sorted(p["concepts"]) for p in pts] == [["c0", "c1"], ["c0"], ["c1", "c2"], ["c0"]]
    assert pts[0]["timestamp"].startswith("2024-03-01T10:00:00")
    assert body["timed"] is True and body["scale"] == "reachable"
    # after the last answer: what GET /mastery reports (own evidence), its answers, and the
    # model's estimate on the organisation's scale beside it
    rows = _mastery_rows(posted, world, "u0")
    assert pts[-1]["mastery"] == pytest.approx([rows[c]["mastery"] for c in ("c0", "c1", "c2")])
    assert pts[-1]["answers"] == [3, 2, 1]
    assert pts[-1]["estimate"] == pytest.approx(
        [rows[c]["estimate"] for c in ("c0", "c1", "c2")], abs=2e-6
    )
    # own answers so far after each answer (i0 -> c0 c1, i1 -> c0, i5 -> c1 c2, i1 -> c0)
    assert [p["answers"] for p in pts] == [[1, 1, 0], [2, 1, 0], [2, 2, 1], [3, 2, 1]]
    # a concept not answered yet reports the estimate (c2 before i5)
    assert pts[0]["mastery"][2] == pts[0]["estimate"][2]
    model = _served(dkt_run)
    _, after = _serving_replay(model, "u0")
    cidx = [model.concept_ids.index(c) + 1 for c in ("c0", "c1", "c2")]
    for p, ref in zip(pts, after, strict=True):
        # the reachable scale stretches float32 noise by 1 / (ceiling - floor)
        assert p["estimate"] == pytest.approx(model.scaled_mastery(ref)[cidx].tolist(), abs=1e-5)
    # chosen concepts, thinned points (the last always kept)
    r = posted.get(
        "/v1/analytics/learners/u0/timeline?concepts=c3,c1&max_points=2",
        headers=world.headers("admin"),
    )
    body = r.json()
    assert [c["concept_id"] for c in body["concepts"]] == ["c3", "c1"]
    assert [p["index"] for p in body["points"]] == [1, 4]
    now = _mastery(posted, world, "u0", "mastery")
    assert body["points"][1]["mastery"] == pytest.approx([now["c3"], now["c1"]], abs=2e-6)
    # on the success scale, the raw predicted success
    set_org_settings(world, mastery_scale="success")
    r = posted.get("/v1/analytics/learners/u0/timeline", headers=world.headers("admin"))
    raw = _mastery(posted, world, "u0")
    assert r.json()["scale"] == "success"
    assert r.json()["points"][-1]["estimate"] == pytest.approx(
        [raw["c0"], raw["c1"], raw["c2"]], abs=2e-6
    )
    r = posted.get(
        "/v1/analytics/learners/u0/timeline?concepts=nope", headers=world.headers("admin")
    )
    assert r.status_code == 422 and "nope" in r.json()["detail"]


def test_a_timeline_shows_at_most_the_concept_limit(posted, world):
    """More than ``TIMELINE_MAX_CONCEPTS`` distinct concepts is a 422 naming the limit, for
    any key and before the learner is looked up (an unknown learner too); repeated ids count
    once."""
    from tutor.analytics.timeline import TIMELINE_MAX_CONCEPTS

    many = ",".join(f"c{k}" for k in range(TIMELINE_MAX_CONCEPTS + 1))
    for who, u in [("admin", "u0"), ("admin", "nope"), ("learner", "u1"), ("ingest", "u0")]:
        r = posted.get(
            f"/v1/analytics/learners/{u}/timeline?concepts={many}", headers=world.headers(who)
        )
        assert r.status_code == 422, (who, u, r.text)
        assert f"at most {TIMELINE_MAX_CONCEPTS} concepts" in r.json()["detail"]
    # at the limit: the concepts are checked against the catalogue as before
    few = ",".join(f"c{k}" for k in range(TIMELINE_MAX_CONCEPTS))
    r = posted.get(
        f"/v1/analytics/learners/u0/timeline?concepts={few}", headers=world.headers("admin")
    )
    assert r.status_code == 422 and "unknown concept" in r.json()["detail"]
    same = ",".join(["c0"] * (TIMELINE_MAX_CONCEPTS + 1))
    r = posted.get(
        f"/v1/analytics/learners/u0/timeline?concepts={same}", headers=world.headers("admin")
    )
    assert r.status_code == 200 and [c["concept_id"] for c in r.json()["concepts"]] == ["c0"]


def test_sort_choices_are_declared(client):
    """The class overview's and the item statistics' ``sort`` choices are in the OpenAPI
    document (an enum), so that a bad one is a 422 from the parameters' validation."""
    from tutor.analytics.items import ITEM_SORTS
    from tutor.analytics.teaching import STUDENT_SORTS

    paths = client.get("/openapi.json").json()["paths"]
    for path, choices in [
        ("/v1/analytics/groups/{group_id}/students", STUDENT_SORTS),
        ("/v1/analytics/groups/{group_id}/items", ITEM_SORTS),
    ]:
        (sort,) = [p for p in paths[path]["get"]["parameters"] if p["name"] == "sort"]
        assert sort["schema"]["enum"] == list(choices), sort


def test_learning_curves(posted, world, dkt_run):
    r = posted.get("/v1/analytics/groups/g1/learning-curves", headers=world.headers("teacher"))
    assert r.status_code == 200, r.text
    curves = {c["concept_id"]: c["points"] for c in r.json()["curves"]}
    assert set(curves) == {"c0", "c1", "c2"}  # c3: nobody in g1 practised it
    obs = {
        c: [(p["opportunity"], p["learners"], p["observed_error"]) for p in pts]
        for c, pts in curves.items()
    }
    assert obs == {
        "c0": [(1, 2, 0.5), (2, 2, 0.5), (3, 1, 0.0)],
        "c1": [(1, 2, 0.5), (2, 1, 0.0)],
        "c2": [(1, 1, 0.0)],
    }
    # 95% Wilson intervals, by hand: 1 error of 2 -> (0.0945, 0.9055); 0 of 1 -> (0, 0.7935)
    p = curves["c0"][0]
    assert (p["observed_low"], p["observed_high"]) == pytest.approx((0.094531, 0.905469), abs=1e-5)
    p = curves["c2"][0]
    assert (p["observed_low"], p["observed_high"]) == pytest.approx((0.0, 0.793450), abs=1e-5)
    # predicted: 1 - mean prediction before each answer, by the serving form
    model = _served(dkt_run)
    pb = {u: _serving_replay(model, u)[0] for u in ("u0", "u1")}
    # (learner, answer position) at each opportunity, from the fixture table
    at = {
        "c0": [[("u0", 0), ("u1", 0)], [("u0", 1), ("u1", 2)], [("u0", 3)]],
        "c1": [[("u0", 0), ("u1", 1)], [("u0", 2)]],
        "c2": [[("u0", 2)]],
    }
    for c, opps in at.items():
        for point, answers in zip(curves[c], opps, strict=True):
            want = 1 - np.mean([pb[u][k] for u, k in answers])
            assert point["predicted_error"] == pytest.approx(want, abs=2e-6)
    r = posted.get(
        "/v1/analytics/groups/g1/learning-curves?concepts=c0&max_opportunity=2",
        headers=world.headers("admin"),
    )
    body = r.json()
    assert [c["concept_id"] for c in body["curves"]] == ["c0"]
    assert [p["opportunity"] for p in body["curves"][0]["points"]] == [1, 2]


def test_learning_curves_agree_with_sql_window_functions(posted, world):
    """The numpy opportunities equal ROW_NUMBER() OVER (PARTITION BY learner, concept)."""
    from tutor.db import create_db_engine

    sql = text(
        """
        SELECT c.external_id, o.opp, COUNT(*), AVG(1.0 - o.correct)
        FROM (
            SELECT ic.concept_id, i.correct,
                   ROW_NUMBER() OVER (PARTITION BY i.learner_id, ic.concept_id
                                      ORDER BY i.timestamp, i.event_id) AS opp
            FROM interactions i
            JOIN item_concepts ic ON ic.item_id = i.item_id
            JOIN group_memberships gm ON gm.learner_id = i.learner_id
            JOIN groups g ON g.id = gm.group_id
            WHERE g.external_id = 'g1'
        ) o JOIN concepts c ON c.id = o.concept_id
        GROUP BY c.external_id, o.opp
        """
    )
    engine = create_db_engine(world.url)
    with engine.connect() as conn:
        want = {(r[0], int(r[1])): (int(r[2]), float(r[3])) for r in conn.execute(sql)}
    engine.dispose()
    body = posted.get(
        "/v1/analytics/groups/g1/learning-curves", headers=world.headers("admin")
    ).json()
    got = {
        (c["concept_id"], p["opportunity"]): (p["learners"], p["observed_error"])
        for c in body["curves"]
        for p in c["points"]
    }
    assert set(got) == set(want)
    for k, (n, err) in want.items():
        assert got[k][0] == n and got[k][1] == pytest.approx(err, abs=1e-6)


def _same_numbers(a: object, b: object, tol: float = 2e-6) -> bool:
    """``a == b`` with floats equal within ``tol``: the responses round to 6 decimals, and a
    state stepped forward one answer at a time and one replayed in a batch agree to float32
    precision, not bit for bit (batched and single matrix products sum in other orders)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_numbers(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_numbers(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=0, abs_tol=tol)
    return a == b


def test_item_statistics(posted, world, dkt_run):
    h = world.headers("teacher")
    r = posted.get("/v1/analytics/groups/g1/items", headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 4
    items = {i["item_id"]: i for i in body["items"]}
    assert [i["item_id"] for i in body["items"]][0] == "i1"  # most attempts first
    got = {k: (v["attempts"], v["learners"], v["observed_success"]) for k, v in items.items()}
    assert got == {"i0": (1, 1, 1.0), "i1": (4, 2, 0.5), "i5": (1, 1, 1.0), "i6": (1, 1, 0.0)}
    assert items["i0"]["concepts"] == ["c0", "c1"]
    model = _served(dkt_run)
    pb = {u: _serving_replay(model, u)[0] for u in ("u0", "u1")}
    preds: dict[str, list[float]] = {}
    for u in ("u0", "u1"):
        for (item, _, _), p in zip(_history(u), pb[u], strict=True):
            preds.setdefault(item, []).append(p)
    for item, ps in preds.items():
        assert items[item]["predicted_success"] == pytest.approx(np.mean(ps), abs=2e-6)
        # DKT has no item parameters: difficulty = 1 - predicted success
        assert items[item]["difficulty"] == pytest.approx(1 - np.mean(ps), abs=2e-6)
        assert items[item]["discrimination"] is None
        assert items[item]["flagged"] is False  # fewer than 20 attempts
    assert "1 - mean predicted success" in body["difficulty_source"]
    # sorting and paging
    r = posted.get("/v1/analytics/groups/g1/items?sort=observed_success&desc=false", headers=h)
    assert [i["item_id"] for i in r.json()["items"]] == ["i6", "i1", "i0", "i5"]
    r = posted.get("/v1/analytics/groups/g1/items?sort=gap&limit=2&offset=1", headers=h)
    gaps = sorted(
        ((abs(items[k]["observed_success"] - np.mean(v)), k) for k, v in preds.items()),
        key=lambda g: (-g[0], g[1]),
    )
    assert [i["item_id"] for i in r.json()["items"]] == [k for _, k in gaps[1:3]]
    assert posted.get("/v1/analytics/groups/g1/items?sort=x", headers=h).status_code == 422
    # flags: thresholds from the organisation's settings; z from the predictions
    set_org_settings(world, item_flag_min_attempts=4, item_flag_z=0.01)
    body = posted.get("/v1/analytics/groups/g1/items", headers=h).json()
    i1 = next(i for i in body["items"] if i["item_id"] == "i1")
    ps = np.array(preds["i1"])
    z = (2 - ps.sum()) / math.sqrt((ps * (1 - ps)).sum())
    assert body["thresholds"] == {
        "item_flag_min_attempts": 4,
        "item_flag_min_learners": 1,
        "item_flag_z": 0.01,
    }
    assert i1["flagged"] is bool(abs(z) > 0.01)
    if i1["flagged"]:
        assert f"z = {z:.1f}" in i1["flag_reason"]
    assert all(not i["flagged"] for i in body["items"] if i["item_id"] != "i1")


def test_learners_at_risk(posted, world):
    h = world.headers("admin")
    posted.put("/v1/groups/g1/members", json=["u0", "u1", "u3"], headers=h)
    # inactivity over 0.001 days (86 s): u0's last answer is 3 minutes before u1's
    set_org_settings(world, risk_low_mastery=0.99, risk_inactive_days=0.001, risk_window_answers=2)
    r = posted.get("/v1/analytics/groups/g1/at-risk", headers=world.headers("teacher"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["thresholds"]["risk_low_mastery"] == 0.99
    assert body["thresholds"]["risk_window_answers"] == 2
    assert body["covered_concepts"] == ["c0", "c1", "c2"]
    # an imported history (2024): inactivity is measured against the group's latest answer
    assert body["reference"] == "the group's latest answer" and body["timed"] is True
    assert body["reference_time"].startswith("2024-03-01T10:06:00")
    rows = {x["learner_id"]: x for x in body["learners"]}
    assert set(rows) == {"u0", "u1", "u3"} and body["total"] == 3
    grid = posted.get("/v1/analytics/groups/g1/mastery", headers=h).json()
    for g in grid["learners"][:2]:
        # the mean of the learner's own evidence, over the concepts it practised
        own = [m for m, n in zip(g["mastery"], g["answers"], strict=True) if n > 0]
        assert rows[g["learner_id"]]["mean_mastery"] == pytest.approx(np.mean(own), abs=2e-6)
    assert any("concepts practised" in x for x in rows["u1"]["reasons"])
    assert rows["u3"]["mean_mastery"] is None  # no answers: no mastery to judge
    assert rows["u0"]["days_inactive"] == pytest.approx(3 / 1440, abs=1e-4)
    assert rows["u1"]["days_inactive"] == 0
    assert any(
        "no answer for 0 days before the group's latest answer" in x for x in rows["u0"]["reasons"]
    )
    assert not any("no answer for" in x for x in rows["u1"]["reasons"])
    assert all("low mastery" in " | ".join(rows[u]["reasons"]) for u in ("u0", "u1"))
    assert rows["u3"]["reasons"] == ["no answers yet"]
    assert rows["u3"]["mastery_change"] is None and rows["u3"]["days_inactive"] is None
    # ranked: the most pressing (sum of the reasons' weights) first, reasons weighed too
    sev = [x["severity"] for x in body["learners"]]
    assert sev == sorted(sev, reverse=True)
    assert rows["u0"]["severity"] == 3.0  # low mastery (2) + inactive (1)
    assert rows["u0"]["reasons"][0].startswith("low mastery")
    assert [x["learner_id"] for x in body["learners"]][-1] == "u3"
    # mastery change = mean estimate over the covered concepts now - before the last 2 answers
    first_two = _covered_mean_after(posted, world, "u1", 1)
    est = _mastery(posted, world, "u1", "estimate")
    assert rows["u1"]["mastery_change"] == pytest.approx(
        np.mean([est[c] for c in ("c0", "c1", "c2")]) - first_two, abs=2e-6
    )
    # a live group (an answer now): inactivity against now, so u0 (2024) is inactive
    set_org_settings(world, risk_low_mastery=0.01, risk_mastery_drop=0.99, risk_inactive_days=30)
    new = {"event_id": "live1", "learner_id": "u1", "item_id": "i6", "correct": 1}
    assert posted.post("/v1/answers", json=new, headers=world.headers("ingest")).status_code == 201
    body = posted.get("/v1/analytics/groups/g1/at-risk", headers=h).json()
    assert body["reference"] == "now"
    rows = {x["learner_id"]: x for x in body["learners"]}
    days = (datetime.now(UTC) - datetime(2024, 3, 1, 10, 3, tzinfo=UTC)).days
    assert rows["u0"]["days_inactive"] == pytest.approx(days, abs=1.1)
    assert rows["u0"]["reasons"] == [
        f"no answer for {rows['u0']['days_inactive']:.0f} days (threshold 30)"
    ]
    assert "u1" not in rows


def test_answers_without_a_clock_count_for_no_activity(posted, world):
    """Answers imported without timestamps (a synthetic clock, source import-untimed) give
    no last activity, no inactivity and a timeline by answer number."""
    from tutor.analytics import clear_caches
    from tutor.db import Interaction, Learner, create_db_engine, make_sessionmaker

    engine = create_db_engine(world.url)
    with make_sessionmaker(engine)() as s, s.begin():
        u1 = s.scalar(select(Learner.id).where(Learner.external_id == "u1"))
        s.execute(
            Interaction.__table__.update()
            .where(Interaction.learner_id == u1)
            .values(source="import-untimed")
        )
    engine.dispose()
    clear_caches()
    set_org_settings(world, risk_inactive_days=0.001)
    h = world.headers("teacher")
    risk = posted.get("/v1/analytics/groups/g1/at-risk", headers=h).json()
    assert risk["reference_time"].startswith("2024-03-01T10:03:00")  # u0's, the only clock
    rows = {x["learner_id"]: x for x in risk["learners"]}
    assert "u1" not in rows or not any("no answer for" in x for x in rows["u1"]["reasons"])
    students = posted.get("/v1/analytics/groups/g1/students", headers=h).json()
    by = {x["learner_id"]: x for x in students["students"]}
    assert by["u1"]["last_activity"] is None and by["u1"]["days_inactive"] is None
    assert by["u0"]["last_activity"].startswith("2024-03-01T10:03:00")
    tl = posted.get("/v1/analytics/learners/u1/timeline", headers=h).json()
    assert tl["timed"] is False
    # its CSV carries no made-up dates
    import csv
    import io

    r = posted.get("/v1/analytics/learners/u1/timeline?format=csv", headers=h)
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 3 and {x["timestamp"] for x in rows} == {""}
    assert [x["index"] for x in rows] == ["1", "2", "3"]
    assert posted.get("/v1/analytics/learners/u0/timeline", headers=h).json()["timed"] is True


def _covered_mean_after(client, world, learner: str, k: int) -> float:
    """Mean estimate over c0..c2 after the learner's first ``k`` answers (from the
    timeline, which replays through the serving form)."""
    r = client.get(
        f"/v1/analytics/learners/{learner}/timeline?concepts=c0,c1,c2",
        headers=world.headers("admin"),
    )
    return float(np.mean(r.json()["points"][k - 1]["estimate"]))


def test_model_card_dkt(posted, world):
    r = posted.get("/v1/analytics/model-card", headers=world.headers("teacher"))
    assert r.status_code == 200, r.text
    card = r.json()
    assert card["model"]["id"] == world.model_id and card["model"]["name"] == "dkt"
    assert len(card["model"]["sha256"]) == 64
    assert card["training"]["run"]["model"] == "dkt"
    assert card["training"]["dataset"]["counts"]["learners"] == 60
    assert card["training"]["vocabulary"] == {"items": 20, "concepts": 4}
    assert card["training"]["validation"]["auc"] > 0
    # no results.json in this run: no test metrics, no calibration
    assert card["metrics"] is None and card["calibration"] is None
    assert card["prerequisite_graph"] is None and card["traits"] is None


def test_model_card_psikt_with_results(client, world, psikt_run, tmp_path):
    import json
    import shutil

    from tutor import operations as ops
    from tutor.analytics import clear_caches
    from tutor.db import Organisation, create_db_engine, make_sessionmaker

    clear_caches()
    run = tmp_path / "psikt"
    shutil.copytree(psikt_run, run)
    results = {
        "subset": "test learners",
        "test": {"n": 100, "auc": 0.7, "acc": 0.7},
        "calibration": [
            {"bin_low": 0.0, "bin_high": 0.5, "n": 0, "predicted": None, "observed": None},
            {"bin_low": 0.5, "bin_high": 1.0, "n": 100, "predicted": 0.7, "observed": 0.68},
        ],
    }
    (run / "results.json").write_text(json.dumps(results))
    engine = create_db_engine(world.url)
    with make_sessionmaker(engine)() as s, s.begin():
        org = s.scalar(select(Organisation).where(Organisation.slug == "acme"))
        ops.register_model(s, org=org, run_dir=run, activate=True)
    engine.dispose()
    r = client.post(
        "/v1/answers", json={"answers": answer_batch(ANSWERS)}, headers=world.headers("ingest")
    )
    assert r.status_code == 201, r.text
    h = world.headers("admin")
    card = client.get("/v1/analytics/model-card", headers=h).json()
    assert card["model"]["name"] == "psikt" and card["model"]["forgets"] is True
    assert card["metrics"]["test"]["auc"] == 0.7
    assert card["calibration"][1]["n"] == 100
    graph = card["prerequisite_graph"]
    assert [n["concept_id"] for n in graph["nodes"]] == ["c0", "c1", "c2", "c3"]
    from tutor.runtime import LoadedModel

    p = LoadedModel.from_bytes(0, (run / "best.pt").read_bytes()).model.prerequisite_graph()
    want = {(f"c{i}", f"c{j}") for i, j in zip(*np.nonzero(p.numpy() > 0.5), strict=True)}
    assert {(e["source"], e["target"]) for e in graph["edges"]} == want
    assert all(e["probability"] > 0.5 for e in graph["edges"])
    traits = card["traits"]
    assert traits["learners"] == 3 and set(traits) >= {"alpha", "mu", "sigma", "gamma"}
    assert traits["alpha"]["mean"] > 0
    # a model that forgets: the grid at a later date differs and equals /mastery?at=
    later = "2024-06-01T00:00:00Z"
    grid = client.get(f"/v1/analytics/groups/g1/mastery?at={later}", headers=h).json()
    now = client.get("/v1/analytics/groups/g1/mastery", headers=h).json()
    assert grid["at"].startswith("2024-06-01") and grid["model"]["forgets"] is True
    assert grid["learners"][0]["mastery"] != now["learners"][0]["mastery"]
    ref = client.get(f"/v1/learners/u0/mastery?at={later}", headers=h).json()
    ref = {c["concept_id"]: c["mastery"] for c in ref["concepts"]}
    cols = [c["concept_id"] for c in grid["concepts"]]
    assert grid["learners"][0]["mastery"] == pytest.approx([ref[c] for c in cols], abs=1e-5)
    # learning curves through PSI-KT's forward (on the clock) equal its serving form
    set_org_settings(world, curve_min_learners=1)
    curves = client.get("/v1/analytics/groups/g1/learning-curves", headers=h).json()
    curves = {c["concept_id"]: c["points"] for c in curves["curves"]}
    assert set(curves) == {"c0", "c1", "c2"}
    model = LoadedModel.from_bytes(0, (run / "best.pt").read_bytes())
    pb = {u: _serving_replay(model, u)[0] for u in ("u0", "u1")}
    want = 1 - np.mean([pb["u0"][1], pb["u1"][2]])  # c0, second opportunity
    assert curves["c0"][1]["predicted_error"] == pytest.approx(want, abs=2e-5)
    items = client.get("/v1/analytics/groups/g1/items", headers=h).json()
    assert "psikt" in items["difficulty_source"]
    assert all(i["difficulty"] is not None for i in items["items"])


def test_access_rules(posted, world):
    group_routes = [
        "/v1/analytics/groups/{g}/mastery",
        "/v1/analytics/groups/{g}/learning-curves",
        "/v1/analytics/groups/{g}/items",
        "/v1/analytics/groups/{g}/at-risk",
    ]
    for route in group_routes:
        for (who, g), code in GROUP_ACCESS.items():
            r = posted.get(route.format(g=g), headers=world.headers(who))
            assert r.status_code == code, (route, who, g, r.text)
    timeline = "/v1/analytics/learners/{u}/timeline"
    expect = {
        ("admin", "u2"): 200,
        ("teacher", "u1"): 200,
        ("teacher", "u2"): 404,  # in g2 only
        ("learner", "u0"): 200,  # itself
        ("learner", "u1"): 404,
        ("other_admin", "u0"): 404,
        ("other_learner", "u0"): 404,
        ("ingest", "u0"): 403,
    }
    for (who, u), code in expect.items():
        r = posted.get(timeline.format(u=u), headers=world.headers(who))
        assert r.status_code == code, (who, u, r.text)
    card = "/v1/analytics/model-card"
    for who, code in [("admin", 200), ("teacher", 200), ("learner", 403), ("ingest", 403)]:
        assert posted.get(card, headers=world.headers(who)).status_code == code, who
    assert posted.get("/v1/analytics/groups/g1/mastery").status_code == 401
    # another organisation without a model: 404 naming it, not a crash
    r = posted.get("/v1/analytics/model-card", headers=world.headers("other_admin"))
    assert r.status_code == 404 and "model" in r.json()["detail"]


def test_an_invalid_parameter_is_a_422_before_the_group_or_role_check(posted, world):
    """Query parameters are validated before the route looks up the group or learner and
    the key's role: a bad parameter is a 422 whatever the key may see (and a 404 or 403
    only once the parameters are valid)."""
    bad = [
        "/v1/analytics/groups/{g}/students?limit=0",
        "/v1/analytics/groups/{g}/reteach?offset=-1",
        "/v1/analytics/groups/{g}/suggested-groups?max_groups=0",
        "/v1/analytics/groups/{g}/mastery?at=yesterday",
        "/v1/analytics/groups/{g}/learning-curves?max_opportunity=0",
        "/v1/analytics/groups/{g}/items?desc=maybe",
        "/v1/analytics/groups/{g}/students?sort=nope",
        "/v1/analytics/groups/{g}/items?sort=gaps",
        "/v1/analytics/learners/{u}/timeline?concepts=" + ",".join(f"c{k}" for k in range(51)),
        "/v1/analytics/groups/{g}/at-risk?format=xml",
        "/v1/analytics/learners/{u}/timeline?max_points=1",
        "/v1/learners/{u}/mastery?at=2024-01-01T00:00:00",
        "/v1/learners/{u}/next-items?n=0",
        "/v1/groups?limit=0",
    ]
    cases = [
        ("admin", "nope", "nope", 404),
        ("teacher", "g2", "u2", 404),
        ("other_admin", "g1", "u0", 404),
        ("ingest", "g1", "u0", 403),
    ]
    for route in bad:
        for who, g, u, code in cases:
            url = route.format(g=g, u=u)
            r = posted.get(url, headers=world.headers(who))
            assert r.status_code == 422, (who, url, r.text)
            if "/groups?" not in url:
                r = posted.get(url.partition("?")[0], headers=world.headers(who))
                assert r.status_code == code, (who, url, r.text)
    assert posted.get("/v1/analytics/groups/nope/items?desc=maybe").status_code == 401


def test_caches_follow_new_answers_and_empty_groups(posted, world):
    h = world.headers("admin")
    curves = "/v1/analytics/groups/g1/learning-curves?concepts=c0"
    before = posted.get(curves, headers=h).json()["curves"][0]["points"]
    assert [p["learners"] for p in before] == [2, 2, 1]
    grid = posted.get("/v1/analytics/groups/g1/mastery", headers=h).json()
    items = posted.get("/v1/analytics/groups/g1/items", headers=h).json()
    new = {"event_id": "b4", "learner_id": "u1", "item_id": "i0", "correct": 0}
    new["timestamp"] = "2024-03-01T10:07:00Z"
    assert posted.post("/v1/answers", json=new, headers=world.headers("ingest")).status_code == 201
    after = posted.get(curves, headers=h).json()["curves"][0]["points"]
    assert [(p["learners"], p["observed_error"]) for p in after] == [(2, 0.5), (2, 0.5), (2, 0.5)]
    grid2 = posted.get("/v1/analytics/groups/g1/mastery", headers=h).json()
    assert grid2["learners"][1]["n_answers"] == 4
    assert grid2["learners"][1]["mastery"] != grid["learners"][1]["mastery"]
    ref = _mastery(posted, world, "u1", "mastery")
    cols = [c["concept_id"] for c in grid2["concepts"]]
    assert grid2["learners"][1]["mastery"] == pytest.approx([ref[c] for c in cols], abs=2e-6)
    items2 = posted.get("/v1/analytics/groups/g1/items", headers=h).json()
    i0 = {i["item_id"]: i for i in items2["items"]}["i0"]
    assert (i0["attempts"], i0["learners"], i0["observed_success"]) == (2, 2, 0.5)
    assert items2["total"] == items["total"]
    timeline = posted.get("/v1/analytics/learners/u1/timeline", headers=h).json()
    assert timeline["points"][-1]["event_id"] == "b4"
    # a group without members answers every route with empty results
    assert posted.put("/v1/groups/g3", json={"name": "Empty"}, headers=h).status_code == 201
    grid = posted.get("/v1/analytics/groups/g3/mastery", headers=h).json()
    assert grid["learners"] == [] and grid["group"]["learners"] == 0
    assert set(grid["concept_means"]) == {None}
    assert posted.get("/v1/analytics/groups/g3/learning-curves", headers=h).json()["curves"] == []
    assert posted.get("/v1/analytics/groups/g3/items", headers=h).json()["total"] == 0
    risk = posted.get("/v1/analytics/groups/g3/at-risk", headers=h).json()
    assert risk["learners"] == [] and risk["covered_concepts"] == []


def test_warm_up_fills_the_caches_at_start_and_after_activation(posted, world, monkeypatch):
    from fastapi.testclient import TestClient

    from tutor import analytics
    from tutor.analytics import replay
    from tutor.api import create_app

    h = world.headers("admin")
    curves = "/v1/analytics/groups/g1/learning-curves"
    items = "/v1/analytics/groups/g1/items"
    expected = posted.get(curves, headers=h).json(), posted.get(items, headers=h).json()
    analytics.clear_caches()
    settings = world.settings.model_copy(update={"analytics_warmup_groups": 5})
    with TestClient(create_app(settings)) as c:
        warmer = c.app.state.analytics_warmer
        assert warmer.idle.wait(60), "the start-up warm-up did not finish"
        assert warmer.last["groups"] == 2  # g1 and g2 (the groups with members)
        assert warmer.last["learners"] == 3

        # every answer is cached: the routes read none from the database any more
        def no_fetch(*args, **kwargs):
            raise AssertionError("answers fetched after the warm-up")

        monkeypatch.setattr(replay, "_fetch_answers", no_fetch)
        assert (c.get(curves, headers=h).json(), c.get(items, headers=h).json()) == expected
        assert c.get("/v1/analytics/groups/g1/at-risk", headers=h).status_code == 200
        monkeypatch.undo()
        # activating a model starts another pass
        passes = warmer.passes
        r = c.post(f"/v1/models/{world.model_id}/activate", headers=h)
        assert r.status_code == 200, r.text
        assert warmer.idle.wait(60) and warmer.passes == passes + 1
    assert c.app.state.analytics_warmer._thread is None  # stopped with the app


def test_warm_up_stops_within_a_group_and_caches_nothing_half_done(posted, world, monkeypatch):
    """A stop asked while a group is replayed ends the pass at the replay's next batch (a
    worker that ends while its warm-up thread is inside PyTorch aborts); what it had not
    finished is not cached, and a later pass or request computes the same numbers."""
    import threading

    from tutor import analytics
    from tutor.analytics import replay, warm_up
    from tutor.blocking import Stopped, checkpoint, stoppable
    from tutor.db import create_db_engine, make_sessionmaker

    h = world.headers("admin")
    curves = "/v1/analytics/groups/g1/learning-curves"
    expected = posted.get(curves, headers=h).json()
    analytics.clear_caches()
    # outside stoppable work (a request) a checkpoint does nothing, set stop or not
    checkpoint()
    stop = threading.Event()
    with stoppable(stop):
        checkpoint()
        stop.set()
        with pytest.raises(Stopped):
            checkpoint()
    checkpoint()

    real = replay.scored_batches
    batches = []

    def stop_after_first_batch(*args, **kwargs):
        for out in real(*args, **kwargs):
            batches.append(out)
            stop.set()  # as Warmer.stop does from another thread
            yield out

    monkeypatch.setattr(replay, "scored_batches", stop_after_first_batch)
    stop.clear()
    engine = create_db_engine(world.url)
    try:
        out = warm_up(make_sessionmaker(engine), max_groups=5, stop=stop)
    finally:
        engine.dispose()
    assert len(batches) == 1 and out["groups"] == 0 and out["learners"] == 0
    assert replay._SEQS._rows == 0  # the per-learner cache holds nothing of the replay
    monkeypatch.undo()
    assert posted.get(curves, headers=h).json() == expected


def test_at_risk_after_new_answers_equals_a_fresh_computation(posted, world):
    """The state some answers back is stepped forward from the cached one after new answers
    (not replayed from the start): the same numbers as computed from nothing."""
    from tutor.analytics import clear_caches

    h = world.headers("admin")
    set_org_settings(world, risk_low_mastery=0.99, risk_window_answers=2)
    posted.get("/v1/analytics/groups/g1/at-risk", headers=h)
    for k, (item, correct) in enumerate([("i6", 1), ("i0", 0), ("i5", 1)]):
        new = {"event_id": f"c{k}", "learner_id": "u1", "item_id": item, "correct": correct}
        new["timestamp"] = f"2024-03-01T10:2{k}:00Z"
        assert (
            posted.post("/v1/answers", json=new, headers=world.headers("ingest")).status_code == 201
        )
        stepped = posted.get("/v1/analytics/groups/g1/at-risk", headers=h).json()
        clear_caches()
        fresh = posted.get("/v1/analytics/groups/g1/at-risk", headers=h).json()
        # the fresh call caches the snapshot the next one steps from
        assert _same_numbers(stepped, fresh), (stepped, fresh)
    rows = {x["learner_id"]: x for x in fresh["learners"]}
    est = _mastery(posted, world, "u1", "estimate")
    before = _covered_mean_after(posted, world, "u1", 6 - 2)
    assert rows["u1"]["mastery_change"] == pytest.approx(
        np.mean([est[c] for c in ("c0", "c1", "c2")]) - before, abs=2e-5
    )
