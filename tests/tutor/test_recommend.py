"""Recommendation policies on a hand-made learner view (no database, no model).

Catalogue: concepts a -> b -> c (prerequisite chain) and d (free); two items per concept
(plus a third for a). Mastery comes from the learner's own evidence (tutor.evidence).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest

from tutor import evidence as ev
from tutor.catalogue import Catalogue
from tutor.recommend import POLICIES, LearnerView, recommend
from tutor.settings import POLICIES as SETTING_POLICIES

CONCEPTS = ["a", "b", "c", "d"]
ITEMS = ["a1", "a2", "b1", "b2", "c1", "c2", "d1", "d2", "a3"]
ITEM_CONCEPT = [0, 0, 1, 1, 2, 2, 3, 3, 0]
P = [0.9, 0.75, 0.6, 0.69, 0.3, 0.2, 0.5, 0.71, 0.95]
DAY = datetime(2026, 1, 5, 10, tzinfo=UTC)


def evidence(when: datetime = DAY, **answers: str) -> ev.Evidence:
    """Own answers per concept as strings of 1/0, e.g. evidence(a="111")."""
    out: ev.Evidence = {}
    for concept, seq in answers.items():
        for x in seq:
            ev.fold(out, [concept], x == "1", when, {concept: 0.3})
    return out


def view(
    p_items=P,
    own: ev.Evidence | None = None,
    estimate=(0.5, 0.5, 0.5, 0.5),
    forgets=False,
    recent=(),
    edges=((0, 1), (1, 2)),
    order=(0, 3, 1, 2),
    rule: ev.EvidenceRule | None = None,
) -> LearnerView:
    cat = Catalogue(
        version=0,
        item_db=np.arange(1, len(ITEMS) + 1),
        item_ext=ITEMS,
        item_concepts=[np.array([c]) for c in ITEM_CONCEPT],
        concept_db=np.arange(1, 5),
        concept_ext=CONCEPTS,
        concept_name=[f"Concept {c.upper()}" for c in CONCEPTS],
        prerequisites=list(edges),
        link_item=np.arange(len(ITEMS)),
        link_concept=np.array(ITEM_CONCEPT),
    )
    parents: list[list[int]] = [[] for _ in CONCEPTS]
    for a, b in edges:
        parents[b].append(a)
    v = {
        "edges": np.array(edges, dtype=np.int64).reshape(-1, 2),
        "curriculum_pos": list(order),
        "curriculum_rank": {c: k for k, c in enumerate(order)},
        "parents": parents,
        "after": [[] for _ in CONCEPTS],
        "data_edges": [],
        "prerequisite_source": "organisation",
    }
    model = SimpleNamespace(model_id=1, name="fake", forgets=forgets)
    own = own or {}
    return LearnerView(
        cat=cat,
        view=v,
        model=model,
        p_items=np.asarray(p_items, dtype=float),
        estimate=np.asarray(estimate, dtype=float),
        evidence=own,
        rule=rule or ev.EvidenceRule(),
        today=DAY.date().isoformat(),
        recent=list(recent),
        any_answers=bool(own),
    )


def run(lv, policy, n=3, **kw):
    args = {"target": 0.7, "review_threshold": 0.6, **kw}
    return recommend(lv, n=n, policy=policy, **args)


def ids(out) -> list[str]:
    return [i["item_id"] for i in out["items"]]


def test_one_registry_behind_the_settings_and_unknown_policy_refused():
    assert tuple(POLICIES) == SETTING_POLICIES
    assert all(p.description for p in POLICIES.values())
    with pytest.raises(Exception, match="unknown policy"):
        run(view(), "hardest")


def test_target_picks_closest_to_target_among_open_items():
    # nothing mastered: b and c wait for their prerequisites
    out = run(view(), "target")
    assert ids(out) == ["d2", "a2", "d1"]
    assert all(i["policy"] == "target" for i in out["items"])
    assert "0.71" in out["items"][0]["reason"] and "Concept D" in out["items"][0]["reason"]


def test_an_estimate_never_counts_as_mastered():
    # the model is sure of a (estimate 1.0) but the learner never answered it: b stays closed
    out = run(view(estimate=(1.0, 0.5, 0.5, 0.5)), "target", n=9)
    assert not any(i.startswith(("b", "c")) for i in ids(out))
    lv = view(estimate=(1.0, 0.5, 0.5, 0.5), own=evidence(d="1"))
    assert lv.status(0) == "estimated" and not lv.mastered[0]


def test_own_evidence_opens_prerequisites_and_recent_items_are_skipped():
    out = run(view(own=evidence(a="111"), recent=[7]), "target")
    assert ids(out)[0] == "b2"  # 0.69, open now that a is mastered by its own answers
    assert "d2" not in ids(out)  # answered recently
    assert not any(i.startswith("c") for i in ids(out))  # c still needs b


def test_curriculum_follows_the_order_skipping_mastered_and_blocked():
    out = run(view(own=evidence(a="111")), "curriculum", n=2)
    # order a, d, b, c: a is mastered -> d next
    assert ids(out) == ["d2", "d1"]
    reason = out["items"][0]["reason"]
    assert reason.startswith("Next in the curriculum: Concept D (step 2 of 4")


def test_review_picks_mastered_concepts_that_decayed_and_says_why_it_is_empty():
    yesterday = DAY - timedelta(days=1)
    own = evidence(yesterday, a="111", d="111")
    lv = view(own=own, estimate=(0.9, 0.5, 0.5, 0.4), forgets=True)
    out = run(lv, "review", n=2)
    assert out["items"] and all(i["concepts"] == ["d"] for i in out["items"])
    assert out["items"][0]["reason"].startswith(
        "Review Concept D: mastered, last practised 2026-01-04; the model predicts its mastery "
        "has fallen to 0.40"
    )
    # practised today: no review today (one review question a day per concept)
    today = run(
        view(own=evidence(a="111", d="111"), estimate=(0.9, 0.5, 0.5, 0.4), forgets=True), "review"
    )
    assert today["items"] == [] and "no mastered concept" in today["note"]
    empty = run(view(own=evidence(d="11")), "review")
    assert empty["items"] == [] and "does not model forgetting" in empty["note"]
    # mixed reviews first, then goes on
    mixed = run(lv, "mixed", n=2)
    assert mixed["items"][0]["policy"] == "review" and mixed["items"][1]["policy"] != "review"


def test_mixed_stays_on_the_current_concept_until_mastered():
    lv = view(own=evidence(d="1"), recent=[6])
    out = run(lv, "mixed", n=3)
    assert out["items"][0]["policy"] == "continue" and out["items"][0]["concepts"] == ["d"]
    assert (
        "Keep practising Concept D until it is mastered (1 of 1 correct"
        in (out["items"][0]["reason"])
    )
    # once d is mastered the learner moves on to the curriculum's next open concept (a)
    done = run(view(own=evidence(d="111"), recent=[6, 7]), "mixed", n=1)
    assert done["items"][0]["policy"] == "curriculum" and done["items"][0]["concepts"] == ["a"]


def test_an_always_correct_learner_moves_through_every_concept():
    own: ev.Evidence = {}
    recent: list[int] = []
    per_concept: dict[str, int] = {}
    for _ in range(40):
        out = run(view(own=own, recent=recent[:5]), "mixed", n=1)
        if not out["items"]:
            break
        assert not view(own=own).mastered.all(), "everything mastered, still recommended"
        item = out["items"][0]
        c = item["concepts"][0]
        per_concept[c] = per_concept.get(c, 0) + 1
        ev.fold(own, [c], True, DAY, {c: 0.3})
        recent.insert(0, ITEMS.index(item["item_id"]))
    lv = view(own=own)
    assert lv.mastered.all(), per_concept
    assert max(per_concept.values()) <= 4, per_concept
    assert all(x != y for x, y in zip(recent, recent[1:], strict=False)), "twice in a row"
    assert run(lv, "mixed")["note"].startswith("Every concept is mastered")


def test_a_concept_whose_questions_were_all_just_answered_waits_for_later():
    # b (two questions) has both just answered, 2 of 3 correct for mastery; d is open
    own = evidence(a="111", b="11")
    out = run(view(own=own, recent=[3, 2]), "mixed", n=2)
    assert [i["concepts"] for i in out["items"]] == [["d"], ["d"]]
    assert out["items"][0]["reason"].startswith(
        "Back to Concept B later: all 2 of its questions were answered within the last 2 "
        "answers. Next in the curriculum: Concept D"
    )
    # with nothing else open (d mastered, c waits for b) the learner stays on b: the least
    # recently answered question comes back rather than nothing
    own = evidence(a="111", b="11", d="111")
    out = run(view(own=own, recent=[3, 2]), "mixed", n=1)
    assert ids(out) == ["b1"] and out["items"][0]["policy"] == "continue"
    # a question not answered recently keeps the learner on the concept
    out = run(view(own=evidence(a="111", b="1"), recent=[2]), "mixed", n=1)
    assert ids(out) == ["b2"] and out["items"][0]["policy"] == "continue"


def test_items_that_are_their_concepts_are_practised_again():
    # logs without question ids (ASSISTments 2015): one item per concept, standing for the
    # skill's questions; answering it again is more practice of the skill, not a repeat
    one = Catalogue(
        version=0,
        item_db=np.arange(1, 5),
        item_ext=["a", "b", "c", "d"],
        item_concepts=[np.array([k]) for k in range(4)],
        concept_db=np.arange(1, 5),
        concept_ext=CONCEPTS,
        concept_name=[f"Concept {c.upper()}" for c in CONCEPTS],
        prerequisites=[(0, 1), (1, 2)],
        link_item=np.arange(4),
        link_concept=np.arange(4),
    )
    lv = view(own=evidence(a="1"), recent=[0])
    assert one.items_are_concepts and not lv.cat.items_are_concepts
    lv = replace(lv, cat=one, p_items=np.full(4, 0.6))
    out = run(lv, "mixed", n=1)
    assert ids(out) == ["a"] and out["items"][0]["policy"] == "continue"


def test_the_curriculum_takes_concepts_with_unseen_questions_first():
    # a is mastered; d's questions were both just answered (its evidence is 2 wrong, so it is
    # no focus to stay on: the latest answer was on a): b, next after d in the order, first
    own = evidence(a="111", d="00")
    out = run(view(own=own, recent=[0, 7, 6]), "curriculum", n=1)
    assert out["items"][0]["concepts"] == ["b"]
    assert out["items"][0]["reason"].startswith(
        "Back to Concept D later: all 2 of its questions were answered within the last 3 "
        "answers. Next in the curriculum: Concept B"
    )


def test_a_struggling_learner_steps_back_to_a_prerequisite_or_easier_items():
    # b needs a; a was mastered long ago... but take a learner whose a is only learning
    own = evidence(a="1", b="0000")
    lv = view(own=own, recent=[2], edges=((0, 1), (1, 2)))
    assert lv.status(1) == "struggling"
    out = run(lv, "mixed", n=2)
    # b is closed (a not mastered), so the focus is not b: the learner works on a
    assert all(i["concepts"] == ["a"] for i in out["items"])
    # with a mastered, b open and 4 wrong in a row: one question back on the prerequisite a,
    # then b's easiest items
    own = evidence(a="111", b="0000")
    out = run(view(own=own, recent=[2]), "mixed", n=2)
    first, second = out["items"]
    assert first["policy"] == "step-back" and first["concepts"] == ["a"]
    assert first["reason"].startswith(
        "Step back to Concept A (mastered), a prerequisite of Concept B: 4 wrong in a row"
    )
    assert second["policy"] == "step-back" and second["item_id"] == "b2"  # 0.69 > 0.6
    assert "Easier question on Concept B: 4 wrong in a row" in second["reason"]
    # a prerequisite that is not yet mastered is where a struggling learner goes back to
    own = evidence(a="11", c="000")
    lv = view(own=own, recent=[4], edges=((0, 2),), order=(0, 1, 2, 3))
    out = run(lv, "mixed", n=1)
    assert out["items"][0]["policy"] != "step-back" or out["items"][0]["concepts"] == ["a"]


def test_step_back_goes_to_an_open_unmastered_prerequisite():
    # c's prerequisite b is open (a mastered) but not mastered; c was answered anyway
    own = evidence(a="111", b="1", c="000")
    lv = view(own=own, recent=[4], edges=((0, 1), (1, 2)))
    lv.view["edges"] = np.array([(0, 1)], dtype=np.int64)  # c's gate off: it is the focus
    out = run(lv, "mixed", n=2)
    first = out["items"][0]
    assert first["policy"] == "step-back" and first["concepts"] == ["b"]
    assert (
        "Step back to Concept B, a prerequisite of Concept C: 3 wrong in a row" in (first["reason"])
    )


def test_the_daily_cap_moves_a_learner_on():
    rule = ev.EvidenceRule(daily_cap=3)
    own = evidence(d="010")
    out = run(view(own=own, recent=[6], rule=rule), "mixed", n=2)
    assert all(i["concepts"] != ["d"] for i in out["items"])
    everything = evidence(a="000", b="000", c="000", d="000")
    capped = run(view(own=everything, rule=rule, edges=()), "mixed")
    assert capped["items"] == [] and "today's 3 questions" in capped["note"]


def test_relaxed_when_nothing_is_open():
    blocked = view(edges=((3, 0), (0, 1), (1, 2)), recent=[6, 7])
    out = run(blocked, "target")
    assert out["prerequisites_relaxed"] is True and out["items"]


def test_target_items_are_distinct_and_closest():
    out = run(view(own=evidence(a="111")), "target", n=4)
    assert len(set(ids(out))) == len(ids(out))
    gaps = [abs(i["predicted_success"] - 0.7) for i in out["items"]]
    assert gaps[0] == min(gaps)


def test_skill_builder_stays_until_three_in_a_row_or_the_cap():
    # a is first in the curriculum: stay until 3 correct in a row
    assert run(view(own=evidence(a="1011")), "skill-builder", n=1)["items"][0]["concepts"] == ["a"]
    moved = run(view(own=evidence(a="10111")), "skill-builder", n=1)["items"][0]
    assert moved["concepts"] == ["d"] and moved["policy"] == "skill-builder"
    # ten attempts today without three in a row: on to the next concept
    capped = run(view(own=evidence(a="0" * 10)), "skill-builder", n=1)["items"][0]
    assert capped["concepts"] == ["d"]


def test_lowest_mastery_and_random_baselines():
    out = run(view(own=evidence(a="111", d="0")), "lowest-mastery", n=1)
    # b (estimate 0.5) is open now; d's own evidence is low: d is the lowest
    assert (
        out["items"][0]["concepts"] == ["d"]
        and "Lowest mastery: Concept D" in (out["items"][0]["reason"])
    )
    a = run(view(), "random", n=4, seed=1)
    b = run(view(), "random", n=4, seed=1)
    assert ids(a) == ids(b) and len(set(ids(a))) == 4


def test_a_struggling_concept_with_nothing_easier_moves_on():
    # d (no prerequisites) failed 3 times and both its items were just answered: nothing to
    # step back to, so the learner moves on and the reason says why
    out = run(view(own=evidence(d="000"), recent=[7, 6]), "mixed", n=1)
    first = out["items"][0]
    assert first["concepts"] != ["d"] and first["policy"] == "curriculum"
    assert first["reason"].startswith("Moving on from Concept D (3 wrong in a row on Concept D")


def test_items_without_concepts_are_practice_only():
    lv = view(own=evidence(a="111", b="111", c="111", d="111"))
    # add an untagged item: nothing to learn from it, so mixed still says everything is done
    lv.cat.item_ext = [*ITEMS, "x1"]
    lv.cat.item_concepts = [*lv.cat.item_concepts, np.array([], dtype=np.int64)]
    lv.cat.item_db = np.arange(1, len(ITEMS) + 2)
    lv.p_items = np.append(lv.p_items, 0.7)
    out = run(lv, "mixed")
    assert out["items"] == [] and out["note"] == "Every concept is mastered."
    assert "x1" in ids(run(lv, "target", n=9))  # the target rule still offers it as practice


def test_the_random_baseline_is_no_tutoring():
    # random ignores the gates and the cap (it only skips recent items): the baseline of
    # choosing without a tutor
    rule = ev.EvidenceRule(daily_cap=3)
    out = run(view(own=evidence(d="000"), rule=rule, recent=[0]), "random", n=9, seed=3)
    assert len(ids(out)) == 8 and "a1" not in ids(out)


def test_items_of_many_concatenates_each_concepts_items():
    cat = view().cat
    for concepts in ([], [0], [3, 0], [1, 2, 3], [2, 2]):
        want = [p for c in concepts for p in cat.items_of(c).tolist()]
        assert cat.items_of_many(np.array(concepts, dtype=np.int64)).tolist() == want


def test_item_predictions_read_only_the_items_asked_as_the_full_array_would():
    from tutor.catalogue import logit
    from tutor.policies import ItemPredictions

    p_sets = np.array([0.5, 0.2, 0.8, 0.65])
    item_sig = np.array([3, 1, 1, 2, 0, 2])
    offset = np.array([0.0, 0.4, -0.4, 1.0, 0.0, -2.0])
    full = 1.0 / (1.0 + np.exp(-(logit(p_sets[item_sig]) + offset)))
    shifted = ItemPredictions(p_sets, item_sig, offset, shift=True)
    assert len(shifted) == 6
    np.testing.assert_allclose(shifted.full(), full)
    np.testing.assert_allclose(shifted[np.array([5, 1])], full[[5, 1]])
    assert float(shifted[3]) == pytest.approx(full[3])
    assert not np.allclose(shifted[np.array([1, 2])][0], shifted[np.array([1, 2])][1])
    plain = ItemPredictions(p_sets, item_sig, offset, shift=False)
    np.testing.assert_allclose(plain.full(), p_sets[item_sig])
