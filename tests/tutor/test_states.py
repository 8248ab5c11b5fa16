"""Learner states (``tutor.states``): every way of rebuilding a state writes the row the answers
wrote one by one (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from sqlalchemy import delete, select

ANSWERS = [
    ("a1", "u0", "i0", 1, "10:00"),
    ("a2", "u0", "i1", 0, "10:01"),
    ("a3", "u0", "i5", 1, "10:02"),
    ("a4", "u0", "i1", 1, "10:03"),
    ("a5", "u0", "i6", 1, "11:30"),
    ("b1", "u1", "i1", 0, "10:00"),
    ("b2", "u1", "i6", 0, "10:05"),
    ("b3", "u1", "i1", 1, "10:06"),
]


def _post(client: Any, world: Any) -> None:
    # one answer a request, in event order: each folded into the stored state as it came
    for e, u, i, c, t in ANSWERS:
        body = {
            "event_id": e,
            "learner_id": u,
            "item_id": i,
            "correct": c,
            "timestamp": f"2024-03-01T{t}:00Z",
        }
        r = client.post("/v1/answers", json=body, headers=world.headers("ingest"))
        assert r.status_code == 201, r.text


def _rows(world: Any) -> dict[str, tuple]:
    """Learner external id -> (state floats, evidence, answers folded, last event)."""
    from tutor.db import Learner, LearnerState, create_db_engine, make_sessionmaker

    engine = create_db_engine(world.url)
    with make_sessionmaker(engine)() as s:
        rows = s.execute(
            select(Learner.external_id, LearnerState)
            .join(LearnerState, LearnerState.learner_id == Learner.id)
            .where(LearnerState.model_id == world.model_id)
        ).all()
        out = {
            ext: (
                np.frombuffer(st.state, dtype=np.float32).copy(),
                st.evidence,
                st.n_applied,
                st.last_event_id,
            )
            for ext, st in rows
        }
    engine.dispose()
    return out


def _forget_states(world: Any) -> None:
    from tutor.db import LearnerState, create_db_engine, make_sessionmaker

    engine = create_db_engine(world.url)
    with make_sessionmaker(engine)() as s, s.begin():
        s.execute(delete(LearnerState))
    engine.dispose()
    assert _rows(world) == {}


def _same(got: dict[str, tuple], want: dict[str, tuple]) -> None:
    assert set(got) == set(want)
    for ext, (state, evidence, n, last) in want.items():
        g_state, g_evidence, g_n, g_last = got[ext]
        assert (g_n, g_last) == (n, last), ext
        np.testing.assert_allclose(g_state, state, atol=1e-5, err_msg=ext)
        assert g_evidence.keys() == evidence.keys(), ext
        for c, e in evidence.items():
            # (answers, correct, run, evidence mastery, day, answers that day)
            assert g_evidence[c][:3] == e[:3] and g_evidence[c][4:] == e[4:], (ext, c)
            assert g_evidence[c][3] == pytest.approx(e[3], abs=1e-6), (ext, c)


def test_every_rebuild_writes_the_state_the_answers_wrote(client, world):
    """A model swap's rebuild, a class's statuses and one learner's read each replay the
    stored answers through ``states.rebuild_states``: the rows they keep equal the rows the
    answer path wrote answer by answer."""
    from tutor import operations as ops
    from tutor.clock import as_utc
    from tutor.db import Learner, create_db_engine, make_sessionmaker

    _post(client, world)
    answered = _rows(world)
    assert set(answered) == {"u0", "u1"}
    assert answered["u0"][2] == 5 and answered["u0"][3] == "a5"

    # a model swap: every learner of the organisation at once; it also mends a learner's
    # answer count and first-seen time where they disagree with the stored answers
    _forget_states(world)
    engine = create_db_engine(world.url)
    factory = make_sessionmaker(engine)
    with factory() as s, s.begin():
        u0 = s.scalar(select(Learner).where(Learner.external_id == "u0"))
        u0.n_answers, u0.first_seen = 99, datetime(2024, 3, 2, tzinfo=UTC)
    with factory() as s, s.begin():
        assert ops.rebuild_states(s, org=ops.get_org(s, "acme"), batch_size=4) == 6
    with factory() as s:
        u0 = s.scalar(select(Learner).where(Learner.external_id == "u0"))
        assert u0.n_answers == 5
        assert as_utc(u0.first_seen) == datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    engine.dispose()
    swapped = _rows(world)
    _same({k: v for k, v in swapped.items() if k in answered}, answered)
    assert {k: v[2] for k, v in swapped.items() if k not in answered} == dict.fromkeys(
        ["u2", "u3", "u4", "u5"], 0
    )

    # a class's statuses: the group's stale members replayed together and kept
    _forget_states(world)
    r = client.get("/v1/analytics/groups/g1/mastery", headers=world.headers("admin"))
    assert r.status_code == 200, r.text
    _same(_rows(world), answered)

    # one learner's read
    _forget_states(world)
    for ext in answered:
        r = client.get(f"/v1/learners/{ext}/mastery", headers=world.headers("admin"))
        assert r.status_code == 200, r.text
    _same(_rows(world), answered)


def test_a_read_session_never_writes_what_it_holds(world):
    """A read request's session holds the states it rebuilt until
    ``states.keep_rebuilt_states`` writes them under its guards: a later query of the same
    request must not flush them (on PostgreSQL's autocommit that would write at once)."""
    from sqlalchemy import func

    from tutor.api import create_app
    from tutor.db import Learner, LearnerState

    app = create_app(world.settings)
    try:
        with app.state.read_sessionmaker() as s:
            learner = s.scalar(select(Learner).where(Learner.external_id == "u5"))
            s.add(LearnerState(learner_id=learner.id, model_id=world.model_id, state=b"x"))
            s.scalar(select(func.count()).select_from(LearnerState))  # a later query
            s.rollback()
    finally:
        app.state.engine.dispose()
        app.state.read_engine.dispose()
    assert "u5" not in _rows(world)
