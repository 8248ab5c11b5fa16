"""Curriculum designer: distances, ordering score, search, prerequisites, mastery, fallback."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest

from tutor.curriculum import (
    GAMMA,
    Curriculum,
    design_curriculum,
    distance_matrix,
    ordering_score,
)


def _ids(n: int) -> list[str]:
    return [f"c{i}" for i in range(n)]


def _random_dag(rng: np.random.Generator, ids: list[str], p: float) -> list[tuple[str, str]]:
    perm = rng.permutation(len(ids))
    return [
        (ids[perm[i]], ids[perm[j]])
        for i in range(len(ids))
        for j in range(i + 1, len(ids))
        if rng.random() < p
    ]


def _respects(order: list[str], edges, mastered=frozenset()) -> bool:
    pos = {c: i for i, c in enumerate(order)}
    return all(pre in mastered or pos[pre] < pos[post] for pre, post in edges if post in pos)


def _brute_force(dist: np.ndarray, ids: list[str], edges) -> float:
    best = -math.inf
    for perm in itertools.permutations(range(len(ids))):
        if _respects([ids[i] for i in perm], edges):
            best = max(best, ordering_score(perm, dist))
    return best


# ----------------------------------------------------------------------------- distances


def test_distance_matrix_known_vectors():
    v = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    d = distance_matrix(v)
    assert d.shape == (5, 5)
    assert np.allclose(d, d.T)
    assert np.all(np.diag(d) == 0.0)
    assert np.all((d >= 0.0) & (d <= 2.0))
    assert d[0, 1] == pytest.approx(1.0)
    assert d[0, 2] == pytest.approx(2.0)
    assert d[0, 3] == pytest.approx(1.0 - 1.0 / math.sqrt(2.0))
    assert d[1, 3] == pytest.approx(1.0 - 1.0 / math.sqrt(2.0))
    # A zero vector: no NaN, distance 1 to everything else.
    assert np.allclose(d[4, :4], 1.0) and np.allclose(d[:4, 4], 1.0)


def test_distance_matrix_random_properties_and_bad_input():
    v = np.random.default_rng(0).normal(size=(40, 7))
    d = distance_matrix(v)
    assert np.allclose(d, d.T) and np.all(np.diag(d) == 0.0)
    assert d.min() >= 0.0 and d.max() <= 2.0
    with pytest.raises(ValueError):
        distance_matrix(np.array([1.0, 2.0]))
    with pytest.raises(ValueError):
        distance_matrix(np.array([[1.0, np.nan]]))


# ----------------------------------------------------------------------------- ordering score


def test_ordering_score_matches_formula_by_hand():
    d = np.array([[0.0, 1.0, 0.2], [1.0, 0.0, 0.6], [0.2, 0.6, 0.0]])
    k = 3
    sums = d.sum(axis=1)
    n = (k - 1) * d / sums[:, None]
    rows = [np.delete(d[i], i) for i in range(k)]
    mean = np.array([r.mean() for r in rows])
    std = np.array([r.std() for r in rows])
    anchor = -(mean + std) / mean.mean()
    order = [2, 1, 0]
    expected = (
        anchor[2]
        + 1.0 * n[2, 1]  # w_1 = 1: contrast only
        + GAMMA * n[1, 0]  # w_2 = GAMMA
        + (1 - GAMMA) * (1 - n[0, 2])  # nearest non-adjacent predecessor of 0 is 2
    )
    assert ordering_score(order, d) == pytest.approx(expected)
    assert ordering_score([2], d) == pytest.approx(anchor[2])
    assert ordering_score([], d) == 0.0
    with pytest.raises(ValueError):
        ordering_score([0, 0], d)
    with pytest.raises(ValueError):
        ordering_score([3], d)


def test_curriculum_score_equals_ordering_score_and_sum_of_gains():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(12, 5))
    ids = _ids(12)
    d = distance_matrix(v)
    for width in (1, 4):
        cur = design_curriculum(v, ids, beam=width)
        order = [ids.index(c) for c in cur.order()]
        assert sorted(order) == list(range(12))
        assert cur.score == pytest.approx(ordering_score(order, d))
        assert sum(s.score_gain for s in cur.steps) == pytest.approx(cur.score)
        assert [s.position for s in cur.steps] == list(range(12))
    assert design_curriculum(v, ids).method == "greedy"
    assert design_curriculum(v, ids, beam=3).method == "beam"


# ----------------------------------------------------------------------------- intuitions


def test_first_concept_is_the_central_one():
    # Vectors on an arc from 0 to 80 degrees: 40 degrees is central (lowest mean and spread).
    angles = np.deg2rad([0, 70, 20, 80, 10, 40, 60, 30, 50])
    v = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    ids = [f"a{int(round(np.rad2deg(a)))}" for a in angles]
    cur = design_curriculum(v, ids)
    assert cur.order()[0] == "a40"
    assert cur.steps[0].reason.startswith("a central start")


def test_early_contrast_switches_cluster():
    rng = np.random.default_rng(1)
    a = np.array([1.0, 0.0, 0.0]) + 0.05 * rng.normal(size=(5, 3))
    b = np.array([0.0, 1.0, 0.0]) + 0.05 * rng.normal(size=(5, 3))
    v = np.concatenate([a, b])
    ids = [f"A{i}" for i in range(5)] + [f"B{i}" for i in range(5)]
    for width in (1, 4):
        order = design_curriculum(v, ids, beam=width).order()
        assert order[0][0] != order[1][0], order
    steps = design_curriculum(v, ids).steps
    assert "contrasts with the previous concept" in steps[1].reason


def test_late_steps_revisit_similar_concepts():
    rng = np.random.default_rng(2)
    v = rng.normal(size=(10, 6))
    cur = design_curriculum(v, _ids(10))
    assert any("builds on the similar concept" in s.reason for s in cur.steps[2:])
    assert all("revisits" not in s.reason for s in cur.steps[:2])


# ----------------------------------------------------------------------------- search quality


@pytest.mark.parametrize("seed", range(8))
def test_beam_vs_greedy_vs_brute_force(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(3, 7))
    v = rng.normal(size=(c, 4))
    ids = _ids(c)
    edges = _random_dag(rng, ids, 0.25) if seed % 2 else []
    d = distance_matrix(v)
    optimum = _brute_force(d, ids, edges)
    greedy = design_curriculum(v, ids, prerequisites=edges)
    narrow = design_curriculum(v, ids, prerequisites=edges, beam=c)
    # Wide enough to hold every (placed set, last concept) state: exact.
    wide = design_curriculum(v, ids, prerequisites=edges, beam=c * math.comb(c, c // 2))
    assert greedy.score <= narrow.score + 1e-12
    assert narrow.score <= optimum + 1e-9
    assert wide.score == pytest.approx(optimum, abs=1e-9)
    assert _respects(wide.order(), edges)


def test_greedy_and_beam_reach_optimum_on_constructed_cases():
    # A centre vector plus four orthogonal axes: symmetric, so greedy is already optimal.
    v = np.array([[1.0, 1, 1, 1], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    ids = _ids(5)
    greedy = design_curriculum(v, ids)
    assert greedy.order()[0] == "c0"
    assert greedy.score == pytest.approx(_brute_force(distance_matrix(v), ids, []))
    # Five vectors on an arc: greedy misses the optimum, a beam of two finds it.
    angles = np.deg2rad([0, 20, 40, 60, 80])
    v = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    optimum = _brute_force(distance_matrix(v), ids, [])
    assert design_curriculum(v, ids).score < optimum - 0.1
    assert design_curriculum(v, ids, beam=2).score == pytest.approx(optimum)


# ----------------------------------------------------------------------------- prerequisites


@pytest.mark.parametrize("seed", range(6))
def test_prerequisites_respected_on_random_dags(seed):
    rng = np.random.default_rng(100 + seed)
    n = 25
    ids = _ids(n)
    edges = _random_dag(rng, ids, 0.15)
    v = rng.normal(size=(n, 8))
    mastered = {ids[i] for i in rng.choice(n, size=4, replace=False)}
    for vectors, width in ((v, 1), (v, 3), (None, 1)):
        cur = design_curriculum(vectors, ids, prerequisites=edges, mastered=mastered, beam=width)
        order = cur.order()
        assert sorted(order) == sorted(set(ids) - mastered)
        assert _respects(order, edges, mastered)
        for step in cur.steps:
            expected = [p for p in ids if (p, step.concept_id) in set(edges)]
            assert step.prerequisites == expected


def test_prerequisite_blocks_central_concept():
    angles = np.deg2rad([0, 20, 40, 60, 80])
    v = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    ids = ["a0", "a20", "a40", "a60", "a80"]
    assert design_curriculum(v, ids).order()[0] == "a40"
    cur = design_curriculum(v, ids, prerequisites=[("a0", "a40")])
    assert cur.order()[0] != "a40"
    assert cur.order().index("a0") < cur.order().index("a40")
    step = cur.steps[cur.order().index("a40")]
    assert step.prerequisites == ["a0"] and "after its prerequisites a0" in step.reason


def test_cycle_raises_naming_its_concepts():
    ids = ["a", "b", "c", "d"]
    edges = [("d", "a"), ("a", "b"), ("b", "c"), ("c", "a")]
    with pytest.raises(ValueError, match="cycle") as err:
        design_curriculum(None, ids, prerequisites=edges)
    msg = str(err.value)
    assert all(f"'{c}'" in msg for c in "abc") and "'d'" not in msg
    with pytest.raises(ValueError, match="'a'"):
        design_curriculum(np.eye(4), ids, prerequisites=[("a", "a")])


def test_unknown_ids_and_bad_input_raise():
    ids = ["a", "b"]
    with pytest.raises(ValueError, match="'zzz'"):
        design_curriculum(np.eye(2), ids, prerequisites=[("a", "zzz")])
    with pytest.raises(ValueError, match="'yyy'"):
        design_curriculum(None, ids, prerequisites=[("yyy", "b")])
    with pytest.raises(ValueError, match="shape"):
        design_curriculum(np.eye(3), ids)
    with pytest.raises(ValueError, match="duplicates"):
        design_curriculum(None, ["a", "a"])
    with pytest.raises(ValueError, match="beam"):
        design_curriculum(np.eye(2), ids, beam=0)


# ----------------------------------------------------------------------------- mastery


def test_mastered_skipped_but_satisfy_prerequisites():
    angles = np.deg2rad([0, 20, 40, 60, 80])
    v = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    ids = ["a0", "a20", "a40", "a60", "a80"]
    edges = [("a0", "a40"), ("a40", "a80")]
    cur = design_curriculum(v, ids, prerequisites=edges, mastered={"a0", "not-a-concept"})
    order = cur.order()
    assert "a0" not in order and sorted(order) == ["a20", "a40", "a60", "a80"]
    # a40 is central among the rest and its only prerequisite is mastered: it may start.
    assert order[0] == "a40"
    assert order.index("a40") < order.index("a80")
    # Mastery given as probabilities with a threshold.
    by_prob = design_curriculum(
        v, ids, prerequisites=edges, mastered={"a0": 0.97, "a20": 0.5}, mastery_threshold=0.9
    )
    assert by_prob.order() == order
    everything = design_curriculum(v, ids, prerequisites=edges, mastered=set(ids))
    assert everything.order() == [] and everything.score == 0.0


# ----------------------------------------------------------------------------- fallback, scale


def test_no_vectors_gives_stable_topological_order():
    ids = ["c", "a", "b", "d"]
    cur = design_curriculum(None, ids, prerequisites=[("b", "c")])
    assert isinstance(cur, Curriculum)
    assert cur.method == "topological" and cur.score is None
    assert cur.order() == ["a", "b", "c", "d"]
    assert all(s.score_gain is None for s in cur.steps)
    assert cur.steps[2].reason == "after its prerequisites b"
    assert design_curriculum(None, ids).order() == ids


def test_zero_vectors_and_tiny_inputs_have_finite_scores():
    v = np.zeros((4, 3))
    v[0] = [1.0, 0.0, 0.0]
    cur = design_curriculum(v, _ids(4), beam=2)
    assert math.isfinite(cur.score) and sorted(cur.order()) == _ids(4)
    one = design_curriculum(np.ones((1, 3)), ["x"])
    assert one.order() == ["x"] and one.score == 0.0


def test_scales_to_hundreds_of_concepts():
    rng = np.random.default_rng(7)
    n = 300
    ids = _ids(n)
    edges = _random_dag(rng, ids, 0.01)
    v = rng.normal(size=(n, 16))
    start = time.perf_counter()
    cur = design_curriculum(v, ids, prerequisites=edges, beam=2)
    assert time.perf_counter() - start < 5.0  # sanity bound, not a benchmark
    assert len(cur.order()) == n and _respects(cur.order(), edges)
