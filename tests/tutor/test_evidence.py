"""The evidence filter and statuses (tutor.evidence): monotone in own answers, bounded
questions to mastery from any start, and nothing mastered without own answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tutor import evidence as ev

DAY = datetime(2026, 3, 2, 9, tzinfo=UTC)


@pytest.mark.parametrize("seed", range(5))
def test_a_correct_answer_never_lowers_and_a_wrong_one_never_raises(seed):
    rng = np.random.default_rng(seed)
    for prior in (0.0, 0.05, 0.24, 0.5, 0.99, float("nan")):
        own: ev.Evidence = {}
        for _ in range(60):
            before = own["c"].p if "c" in own else (prior if prior == prior else 0.1)
            correct = bool(rng.random() < 0.5)
            ev.fold(own, ["c"], correct, DAY, {"c": prior})
            after = own["c"].p
            assert (after >= before) if correct else (after <= before), (prior, before, after)
            assert 0.0 <= after <= 1.0


@pytest.mark.parametrize("prior", [0.0, 0.02, 0.24, 0.5, 1.0])
def test_three_correct_answers_master_a_concept_whatever_the_model_says(prior):
    # a model stuck at 0.24 (a concept with little or skewed data) cannot hold a learner back
    rule = ev.EvidenceRule()
    own: ev.Evidence = {}
    statuses = []
    for _ in range(3):
        ev.fold(own, ["c"], True, DAY, {"c": prior})
        statuses.append(ev.status(own["c"], rule, any_answers=True))
    assert statuses[:2] == ["learning", "learning"] and statuses[2] == "mastered"


def test_nothing_is_mastered_without_own_answers():
    rule = ev.EvidenceRule()
    assert ev.status(None, rule, any_answers=False) == "not_started"
    assert ev.status(None, rule, any_answers=True) == "estimated"
    assert not ev.is_mastered(None, rule)
    assert "estimated from answers on other concepts" in ev.basis(None, rule, any_answers=True)


def test_struggling_after_wrong_runs_or_many_questions_and_the_daily_cap():
    rule = ev.EvidenceRule(struggle_run=3, struggle_answers=6, daily_cap=4)
    own: ev.Evidence = {}
    for k in range(3):
        ev.fold(own, ["c"], False, DAY + timedelta(minutes=k), {"c": 0.3})
    assert ev.status(own["c"], rule, any_answers=True) == "struggling"
    assert (
        ev.basis(own["c"], rule, any_answers=True)
        == "0 of 3 own answers correct, the last 3 wrong; struggling"
    )
    ev.fold(own, ["c"], True, DAY, {})
    assert ev.status(own["c"], rule, any_answers=True) == "learning"  # the run is broken
    assert ev.capped(own["c"], rule, DAY.date().isoformat())
    # a new day resets the cap
    ev.fold(own, ["c"], True, DAY + timedelta(days=1), {})
    assert own["c"].n_day == 1 and not ev.capped(
        own["c"], rule, (DAY + timedelta(days=1)).date().isoformat()
    )
    # alternating answers never reach mastery: struggling after 6 questions
    alt: ev.Evidence = {}
    for k in range(6):
        ev.fold(alt, ["c"], k % 2 == 0, DAY, {"c": 0.3})
    assert ev.status(alt["c"], rule, any_answers=True) == "struggling"
    assert "no mastery after 6 questions" in ev.basis(alt["c"], rule, any_answers=True)


def test_evidence_round_trips_as_json_and_rules_are_validated():
    own = ev.fold({}, ["a", "b"], True, DAY, {"a": 0.4})
    assert ev.load(ev.dump(own)) == own
    for bad in ({"mastery_threshold": 1.0}, {"min_answers": 0}, {"daily_cap": -1}):
        with pytest.raises(ValueError):
            ev.EvidenceRule(**bad)


def test_a_first_answer_is_bounded_by_what_either_scale_showed():
    # GET /mastery may show the success scale (0.70) while the filter starts from the
    # reachable estimate (0.0): a correct answer must not report less than 0.70
    own = ev.fold({}, ["c"], True, DAY, {"c": 0.0}, {"c": (0.0, 0.70)})
    assert own["c"].p >= 0.70
    wrong = ev.fold({}, ["c"], False, DAY, {"c": 0.5}, {"c": (0.15, 0.5)})
    assert wrong["c"].p <= 0.15
