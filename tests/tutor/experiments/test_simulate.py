"""The policy-evaluation simulator (tutor/experiments/simulate.py): learners learn, forget, respect
prerequisites; settings, cohorts, statistics and calibration."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from data_loaders import open_dataset
from data_loaders.simulate import SimulatedPopulation, SimulationParams
from tutor.experiments.simulate import (
    SETTINGS,
    SimLearner,
    SimulationError,
    SimWorld,
    WorldExtras,
    calibrate,
    junyi_graph_stats,
    load_setting,
    make_world,
    real_stats,
    simulated_stats,
    world_graph_stats,
    write_dataset,
)

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "tutor" / "sample" / "assist2009_pid"
JUNYI = ROOT / "tests" / "fixtures" / "junyi" / "junyi_Exercise_table.csv"
DAY = 86_400_000


def learner(world: SimWorld, index: int = 0) -> SimLearner:
    return SimLearner(world, world.initial_state(), index, np.random.default_rng(1))


def root_concept(world: SimWorld) -> int:
    return next(c for c in range(world.n_concepts) if not world.prereq_matrix[c].any())


def single_concept_item(world: SimWorld, concept: int) -> int:
    ic = world.item_concepts
    return int(np.flatnonzero((ic[:, 0] == concept) & (ic[:, 1] < 0))[0])


def test_default_extras_reproduce_the_base_world() -> None:
    params = SimulationParams(learners=30, answers=20)
    a = SimulatedPopulation(params, seed=4).generate()
    b = SimWorld(params, seed=4).generate()
    assert np.array_equal(a.item, b.item) and np.array_equal(a.correct, b.correct)


def test_learners_learn_with_practice() -> None:
    world = make_world(SETTINGS["default"], learners=20, seed=2)
    c = root_concept(world)
    item = single_concept_item(world, c)
    gains = []
    for i in range(world.n_learners):
        sim = learner(world, i)
        t0 = sim.clock_ms
        before = sim.true_mastery(t0)[c]
        for k in range(8):
            sim.answer(item, t0 + k * 30_000)
        gains.append(sim.true_mastery()[c] - before)
    assert min(gains) > 0
    assert np.mean(gains) > 0.3  # eight answers on an unknown concept teach a lot


def test_learners_forget_with_time() -> None:
    world = make_world(SETTINGS["forgetting"], learners=10, seed=2)
    c = root_concept(world)
    item = single_concept_item(world, c)
    sim = learner(world)
    t0 = sim.clock_ms
    for k in range(10):
        sim.answer(item, t0 + k * 30_000)
    now = sim.clock_ms
    m = [sim.true_mastery(now + d * DAY)[c] for d in (0, 1, 3, 7, 30)]
    assert all(a > b for a, b in zip(m, m[1:], strict=False))  # falls when unpractised
    assert m[-1] == pytest.approx(world.prior[0, c], abs=1e-3)  # towards the prior
    assert sim.true_mastery(now)[c] == m[0]  # looking ahead changes nothing


def test_prerequisites_gate_learning() -> None:
    world = make_world(SETTINGS["prerequisites"], learners=10, seed=3)
    assert world.extras.prereq_floor == 0.0
    post, pre = next(  # a concept whose one prerequisite is a root concept
        (b, a)
        for a, b in world.prerequisites
        if world.prereq_matrix[b].sum() == 1 and not world.prereq_matrix[a].any()
    )
    ic = world.item_concepts
    item_post = int(np.flatnonzero((ic[:, 0] == post) & (ic[:, 1] < 0))[0])
    item_pre = single_concept_item(world, pre)
    state = world.initial_state()
    world.prior[:, :] = 0.05  # nobody knows anything
    state.mastery[:, :] = 0.05
    sim = SimLearner(world, state, 0, np.random.default_rng(0))
    t = sim.clock_ms
    m0 = sim.true_mastery(t)[post]
    for k in range(5):
        sim.answer(item_post, t + k * 1000)
    blocked_gain = sim.true_mastery()[post] - m0
    for k in range(20):  # learn the prerequisite first
        sim.answer(item_pre, t + (5 + k) * 1000)
    m1 = sim.true_mastery()[post]
    for k in range(5):
        sim.answer(item_post, t + (30 + k) * 1000)
    open_gain = sim.true_mastery()[post] - m1
    assert open_gain > 5 * max(blocked_gain, 1e-3)
    assert blocked_gain < 0.05


def test_answers_follow_mastery_and_difficulty() -> None:
    world = make_world(SETTINGS["default"], learners=5, seed=1)
    sim = learner(world)
    c = root_concept(world)
    items = np.flatnonzero((world.item_concepts[:, 0] == c) & (world.item_concepts[:, 1] < 0))
    easy = int(items[np.argmin(world.item_difficulty[items])])
    hard = int(items[np.argmax(world.item_difficulty[items])])
    t = sim.clock_ms
    assert sim.p_correct(easy, t) >= sim.p_correct(hard, t)
    p = world.params
    assert p.guess <= sim.p_correct(hard, t) <= 1 - p.slip


def test_common_random_numbers_make_answers_reproducible() -> None:
    world = make_world(SETTINGS["default"], learners=3, seed=1)
    u = np.random.default_rng(5).random(20)
    runs = []
    for _ in range(2):
        sim = SimLearner(world, world.initial_state(), 1, np.random.default_rng(99), u)
        runs.append([sim.answer(k % world.n_items, sim.clock_ms + k) for k in range(20)])
    assert runs[0] == runs[1]


def test_cohorts_share_the_world_not_the_learners() -> None:
    world = make_world(SETTINGS["default"], learners=50, seed=0)
    a, b, a2 = world.cohort(40, seed=1), world.cohort(40, seed=2), world.cohort(40, seed=1)
    assert a.prerequisites == world.prerequisites
    assert np.array_equal(a.item_difficulty, world.item_difficulty)
    assert not np.allclose(a.prior, b.prior)
    assert np.array_equal(a.prior, a2.prior)
    assert not np.allclose(a.prior[:40], world.prior[:40])
    assert world.n_learners == 50 and a.n_learners == 40


def test_extras_shift_prior_and_difficulty() -> None:
    params = SimulationParams(learners=50)
    base = SimWorld(params, 1)
    shifted = SimWorld(params, 1, WorldExtras(prior_shift=1.0, difficulty_low=0.3))
    assert (shifted.prior > base.prior).all()
    assert shifted.item_difficulty.min() >= 0.3 - 1e-9
    order = np.argsort(base.item_difficulty)
    assert np.array_equal(order, np.argsort(shifted.item_difficulty))


def test_bad_input_is_refused() -> None:
    world = make_world(SETTINGS["default"], learners=2, seed=0)
    sim = learner(world)
    with pytest.raises(SimulationError, match="not one of"):
        sim.answer(world.n_items, sim.clock_ms)
    with pytest.raises(SimulationError, match="earlier than"):
        sim.answer(0, sim.clock_ms - 1)
    with pytest.raises(SimulationError, match="unknown simulator setting"):
        load_setting("nope")
    with pytest.raises(SimulationError, match="prereq_floor"):
        SimWorld(SimulationParams(), 0, WorldExtras(prereq_floor=2))
    with pytest.raises(SimulationError, match="guess and slip"):
        SimWorld(SimulationParams(guess=0.6, slip=0.5), 0)
    with pytest.raises(SimulationError, match="at least 1"):
        world.cohort(0, 1)


def test_dataset_has_the_extras(tmp_path: Path) -> None:
    world = make_world(SETTINGS["prerequisites"], learners=20, seed=0)
    counts = write_dataset(world, world.generate(), tmp_path / "ds")
    ds = open_dataset(tmp_path / "ds")
    assert counts["interactions"] == ds.info()["interactions"] > 0
    assert ds.manifest["notes"]["simulation_extras"]["prereq_floor"] == 0.0


def test_statistics_real_and_simulated() -> None:
    real = real_stats(SAMPLE)
    assert real.learners > 100 and 0.4 < real.correct_rate < 0.9
    assert len(real.error_by_opportunity) == 10
    sim = simulated_stats(make_world(SETTINGS["default"], learners=100, seed=0))
    assert sim.learners == 100
    # simulated learners improve with practice on a concept
    assert sim.error_by_opportunity[0] > sim.error_by_opportunity[-1]
    j = junyi_graph_stats(JUNYI)
    assert j["nodes"] > 0 and 0 <= j["share_0_prereqs"] <= 1
    g = world_graph_stats(make_world(SETTINGS["default"], learners=2))
    assert g["share_0_prereqs"] + g["share_1_prereq"] + g["share_2plus_prereqs"] == pytest.approx(1)


def test_calibration_moves_towards_the_real_statistics() -> None:
    real = real_stats(SAMPLE)
    base = replace(SETTINGS["default"], params=replace(SETTINGS["default"].params, concepts=6))
    setting, sim, loss = calibrate(real, base=base, learners=80, trials=6, refine=4, seed=0)
    again = calibrate(real, base=base, learners=80, trials=6, refine=4, seed=0)
    assert again[2] == loss  # deterministic
    assert abs(sim.correct_rate - real.correct_rate) < 0.1
    assert setting.params.answers == round(real.length_quantiles["mean"])
