"""Recommendation policies on a hand-made learner view (no database, no model).

Catalogue: concepts a -> b -> c (prerequisite chain) and d (free); two items per concept.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tutor.recommend import Catalogue, LearnerView, recommend

CONCEPTS = ["a", "b", "c", "d"]
ITEMS = ["a1", "a2", "b1", "b2", "c1", "c2", "d1", "d2"]


def view(
    p_items,
    mastery,
    mastery_then=None,
    recent=(),
    edges=((0, 1), (1, 2)),
    order=(0, 3, 1, 2),
) -> LearnerView:
    item_concepts = [np.array([k // 2]) for k in range(len(ITEMS))]
    cat = Catalogue(
        version=0,
        item_db=np.arange(1, len(ITEMS) + 1),
        item_ext=ITEMS,
        item_concepts=item_concepts,
        concept_db=np.arange(1, 5),
        concept_ext=CONCEPTS,
        concept_name=[c.upper() for c in CONCEPTS],
        prerequisites=list(edges),
        link_item=np.arange(len(ITEMS)),
        link_concept=np.array([k // 2 for k in range(len(ITEMS))]),
    )
    parents = [[] for _ in CONCEPTS]
    for a, b in edges:
        parents[b].append(a)
    v = {
        "edges": np.array(edges, dtype=np.int64).reshape(-1, 2),
        "curriculum_pos": list(order),
        "parents": parents,
        "prerequisite_source": "organisation",
    }
    model = SimpleNamespace(model_id=1, name="fake", forgets=mastery_then is not None)
    return LearnerView(
        cat,
        v,
        model,
        np.asarray(p_items, dtype=float),
        np.asarray(mastery, dtype=float),
        None if mastery_then is None else np.asarray(mastery_then, dtype=float),
        set(recent),
    )


def run(lv, policy, n=3, **kw):
    args = {"target": 0.7, "mastery_threshold": 0.8, "review_threshold": 0.6, **kw}
    return recommend(lv, n=n, policy=policy, **args)


P = [0.9, 0.75, 0.6, 0.69, 0.3, 0.2, 0.5, 0.71]


def test_target_picks_closest_to_target_among_allowed_items():
    # nothing mastered: b and c are blocked by their prerequisites
    out = run(view(P, [0.5, 0.5, 0.5, 0.5]), "target")
    ids = [i["item_id"] for i in out["items"]]
    assert ids == ["d2", "a2", "d1"]
    assert all(i["policy"] == "target" for i in out["items"])
    assert "0.71" in out["items"][0]["reason"]


def test_prerequisites_open_when_mastered_and_recent_items_are_skipped():
    out = run(view(P, [0.9, 0.5, 0.5, 0.5], recent=[7]), "target")
    ids = [i["item_id"] for i in out["items"]]
    assert ids[0] == "b2"  # 0.69, allowed now that a is mastered
    assert "d2" not in ids  # answered recently
    assert not any(i.startswith("c") for i in ids)  # c still needs b


def test_curriculum_follows_the_order_skipping_mastered_and_blocked():
    out = run(view(P, [0.9, 0.5, 0.5, 0.5]), "curriculum", n=2)
    # order a, d, b, c: a is mastered -> d next
    assert [i["item_id"] for i in out["items"]] == ["d2", "d1"]
    assert "next concept in the curriculum: d" in out["items"][0]["reason"]


def test_review_picks_decayed_concepts_and_is_empty_without_forgetting():
    lv = view(P, [0.9, 0.5, 0.5, 0.4], mastery_then=[0.9, 0.5, 0.5, 0.85])
    out = run(lv, "review", n=2)
    assert out["items"] and all(i["concepts"] == ["d"] for i in out["items"])
    assert "fell from 0.85 to 0.40" in out["items"][0]["reason"]
    assert run(view(P, [0.9, 0.5, 0.5, 0.4]), "review")["items"] == []


def test_mixed_combines_review_curriculum_and_target():
    lv = view(P, [0.9, 0.5, 0.5, 0.4], mastery_then=[0.9, 0.5, 0.5, 0.85])
    out = run(lv, "mixed", n=4)
    policies = [i["policy"] for i in out["items"]]
    assert policies[0] == "review"
    assert "curriculum" in policies and policies[-1] == "target"
    ids = [i["item_id"] for i in out["items"]]
    assert len(ids) == len(set(ids)) == 4


def test_relaxed_when_nothing_is_allowed_and_unknown_policy_refused():
    everything_blocked = view(P, [0.0] * 4, edges=((3, 0), (0, 1), (1, 2)), recent=[6, 7])
    out = run(everything_blocked, "target")
    assert out["prerequisites_relaxed"] is True and out["items"]
    with pytest.raises(Exception, match="unknown policy"):
        run(view(P, [0.5] * 4), "hardest")
