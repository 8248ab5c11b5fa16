"""End to end over HTTP: a real uvicorn process on SQLite and on PostgreSQL.

Covers the request path a learning platform uses (answers in, mastery, next items,
idempotent replays), a hot swap of the active model while serving, the authorisation
matrix, crash safety (the server is killed during a stream of answers) and concurrency (50
clients posting for one learner end in the state of the same answers posted serially).
"""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from tests.tutor.helpers import T0, ans, run_server
from tutor.db import Interaction, Learner, LearnerState, create_db_engine, make_sessionmaker


def test_service_over_http(world, psikt_run, tmp_path):
    from tutor import operations as ops

    with (
        run_server(world.url, tmp_path / "server.log") as (base, _),
        httpx.Client(base_url=base, timeout=30) as http,
    ):
        ing, adm = world.headers("ingest"), world.headers("admin")
        assert http.get("/ready").status_code == 200
        assert http.get("/v1/learners/u1/mastery").status_code == 401
        m0 = {
            c["concept_id"]: c["mastery"]
            for c in http.get("/v1/learners/u1/mastery", headers=adm).json()["concepts"]
        }
        # c0's items are i0..i4: correct answers raise c0's mastery
        batch = [ans(f"h{k}", "u1", f"i{k % 5}", 1, k) for k in range(10)]
        r = http.post("/v1/answers", json={"answers": batch}, headers=ing)
        assert r.status_code == 201, r.text
        m1 = {
            c["concept_id"]: c["mastery"]
            for c in http.get("/v1/learners/u1/mastery", headers=adm).json()["concepts"]
        }
        assert m1["c0"] > m0["c0"]
        # replay: same result, nothing stored twice; conflicting replay: 409
        again = http.post("/v1/answers", json={"answers": batch}, headers=ing)
        assert again.status_code == 200
        assert all(x["replayed"] for x in again.json()["results"])
        assert http.get("/v1/learners/u1/history", headers=adm).json()["total"] == 10
        bad = http.post("/v1/answers", json={**batch[0], "correct": 0}, headers=ing)
        assert bad.status_code == 409
        # next items: never a recent item; prerequisites c0 -> c1 -> c2 respected
        nxt = http.get("/v1/learners/u1/next-items?n=6&policy=mixed", headers=adm).json()
        recent = {f"i{k % 5}" for k in range(5, 10)}
        assert nxt["items"] and not recent & {i["item_id"] for i in nxt["items"]}
        fresh = http.get("/v1/learners/u4/next-items?n=10&policy=target", headers=adm).json()
        if not fresh["prerequisites_relaxed"]:
            assert all("c2" not in i["concepts"] for i in fresh["items"])
        # hot swap: register and activate another model while serving
        engine = create_db_engine(world.url)
        with make_sessionmaker(engine)() as s, s.begin():
            acme = ops.get_org(s, "acme")
            new = ops.register_model(s, org=acme, run_dir=psikt_run, activate=True)
            new_id = new.id
        engine.dispose()
        after = http.get("/v1/learners/u1/mastery", headers=adm).json()
        assert after["model"]["id"] == new_id and after["model"]["name"] == "psikt"
        assert after["n_answers"] == 10
        r = http.post("/v1/answers", json=ans("h99", "u1", "i0", 1, 99), headers=ing)
        assert r.status_code == 201 and r.json()["model"]["id"] == new_id
        future = (T0 + timedelta(days=60)).isoformat()
        later = http.get("/v1/learners/u1/mastery", params={"at": future}, headers=adm).json()
        now = http.get("/v1/learners/u1/mastery", headers=adm).json()
        assert [c["mastery"] for c in later["concepts"]] != [c["mastery"] for c in now["concepts"]]


# (role, method, path, expected status)
MATRIX = [
    ("admin", "GET", "/v1/learners/u2/mastery", 200),
    ("admin", "GET", "/v1/learners/x0/mastery", 404),
    ("teacher", "GET", "/v1/learners/u0/mastery", 200),
    ("teacher", "GET", "/v1/learners/u2/mastery", 404),
    ("teacher", "GET", "/v1/learners/x0/history", 404),
    ("learner", "GET", "/v1/learners/u0/next-items", 200),
    ("learner", "GET", "/v1/learners/u1/next-items", 404),
    ("learner", "GET", "/v1/learners/u1/history", 404),
    ("ingest", "GET", "/v1/learners/u0/mastery", 403),
    ("other_admin", "GET", "/v1/learners/u0/history", 404),
    ("other_admin", "GET", "/v1/groups/g1/curriculum", 404),
    ("other_learner", "GET", "/v1/learners/u0/mastery", 404),
    ("teacher", "GET", "/v1/groups/g1/curriculum", 200),
    ("teacher", "GET", "/v1/groups/g2/curriculum", 404),
    ("learner", "GET", "/v1/groups/g1/curriculum", 403),
    ("admin", "POST", "u0", 201),
    ("ingest", "POST", "u0", 201),
    ("learner", "POST", "u0", 201),
    ("learner", "POST", "u1", 404),
    ("teacher", "POST", "u0", 403),
    ("other_admin", "POST", "u0", 404),
    ("other_learner", "POST", "u0", 404),
]


def test_authorisation_matrix(world, tmp_path):
    with (
        run_server(world.url, tmp_path / "server.log") as (base, _),
        httpx.Client(base_url=base, timeout=30) as http,
    ):
        failures = []
        for k, (who, method, path, want) in enumerate(MATRIX):
            if method == "GET":
                r = http.get(path, headers=world.headers(who))
            else:
                r = http.post(
                    "/v1/answers", json=ans(f"m{k}", path, "i1", 1, k), headers=world.headers(who)
                )
            if r.status_code != want:
                failures.append(f"{who} {method} {path}: {r.status_code} (want {want}) {r.text}")
            if r.status_code >= 400:
                assert "detail" in r.json()
        assert not failures, "\n".join(failures)
        # nothing of the refused writes reached the other organisation or u1
        assert (
            http.get("/v1/learners/u1/history", headers=world.headers("admin")).json()["total"] == 0
        )
        assert (
            http.get("/v1/learners/x0/history", headers=world.headers("other_admin")).json()[
                "total"
            ]
            == 0
        )


def _consistency(url: str) -> dict[str, int]:
    """Per learner: interactions stored, the learner's counter and the state's; event ids
    stored more than once."""
    engine = create_db_engine(url)
    with make_sessionmaker(engine)() as s:
        dup = s.scalar(
            select(func.count()).select_from(
                select(Interaction.event_id)
                .group_by(Interaction.org_id, Interaction.event_id)
                .having(func.count() > 1)
                .subquery()
            )
        )
        rows = s.execute(
            select(Learner.external_id, Learner.n_answers, func.count(Interaction.id))
            .outerjoin(Interaction, Interaction.learner_id == Learner.id)
            .group_by(Learner.id)
        ).all()
        states = {
            lid: n for lid, n in s.execute(select(LearnerState.learner_id, LearnerState.n_applied))
        }
        ids = dict(s.execute(select(Learner.external_id, Learner.id)).all())
    engine.dispose()
    out = {"duplicates": int(dup or 0)}
    for ext, n_answers, n_stored in rows:
        assert n_answers == n_stored, f"{ext}: counter {n_answers} != stored {n_stored}"
        if ids[ext] in states:
            assert states[ids[ext]] == n_stored, f"{ext}: state folded {states[ids[ext]]}"
        out[ext] = n_stored
    return out


def test_crash_safety(world, tmp_path):
    acked: list[str] = []
    stop = threading.Event()

    def stream(base: str) -> None:
        with httpx.Client(base_url=base, timeout=10) as http:
            k = 0
            while not stop.is_set():
                eid = f"c{k}"
                try:
                    r = http.post(
                        "/v1/answers",
                        json=ans(eid, f"u{k % 3}", f"i{k % 20}", k % 2, k),
                        headers=world.headers("ingest"),
                    )
                except httpx.HTTPError:
                    return  # the server died mid-request
                if 200 <= r.status_code < 300:
                    acked.append(eid)
                k += 1

    with run_server(world.url, tmp_path / "server.log") as (base, proc):
        t = threading.Thread(target=stream, args=(base,))
        t.start()
        while len(acked) < 40:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stop.set()
        t.join(10)
    n_acked = len(acked)
    counts = _consistency(world.url)
    assert counts["duplicates"] == 0
    # restart: every acknowledged answer is there exactly once, and the service goes on
    with (
        run_server(world.url, tmp_path / "server2.log") as (base, _),
        httpx.Client(base_url=base, timeout=30) as http,
    ):
        seen: list[str] = []
        for u in ("u0", "u1", "u2"):
            hist = http.get(
                f"/v1/learners/{u}/history?limit=1000", headers=world.headers("admin")
            ).json()
            seen += [a["event_id"] for a in hist["answers"]]
        assert len(seen) == len(set(seen))
        missing = set(acked) - set(seen)
        assert not missing, f"acknowledged but lost: {sorted(missing)[:5]}"
        assert len(seen) - n_acked <= 1  # at most the one in flight when killed
        r = http.post(
            "/v1/answers", json=ans("after", "u0", "i3", 1, 10_000), headers=world.headers("ingest")
        )
        assert r.status_code == 201
        assert (
            http.get("/v1/learners/u0/mastery", headers=world.headers("admin")).status_code == 200
        )
    _consistency(world.url)


def test_concurrent_clients_equal_serial(world, tmp_path):
    answers = [ans(f"k{k}", "u3", f"i{(7 * k) % 20}", int(k % 3 != 0), k) for k in range(50)]
    with run_server(world.url, tmp_path / "server.log") as (base, _):

        def post(a: dict) -> int:
            with httpx.Client(base_url=base, timeout=60) as http:
                return http.post("/v1/answers", json=a, headers=world.headers("ingest")).status_code

        shuffled = answers[::2][::-1] + answers[1::2]
        with ThreadPoolExecutor(50) as pool:
            codes = list(pool.map(post, shuffled))
        assert codes == [201] * 50
        with httpx.Client(base_url=base, timeout=60) as http:
            for a in answers:
                r = http.post(
                    "/v1/answers",
                    json={**a, "learner_id": "u4", "event_id": "s" + a["event_id"]},
                    headers=world.headers("ingest"),
                )
                assert r.status_code == 201
            adm = world.headers("admin")
            conc = http.get("/v1/learners/u3/mastery", headers=adm).json()
            serial = http.get("/v1/learners/u4/mastery", headers=adm).json()
    a = [c["mastery"] for c in conc["concepts"]]
    b = [c["mastery"] for c in serial["concepts"]]
    assert a == pytest.approx(b, abs=1e-6)
    assert conc["n_answers"] == serial["n_answers"] == 50
    _consistency(world.url)
