"""tutor.runtime: concept sets (predictions once per distinct set of concepts), the reachable
range of concept mastery and mastery measured on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tutor.runtime import SECONDS_PER_DAY, ConceptSets, LoadedModel, concept_mastery_many


def _load(run: Path) -> LoadedModel:
    return LoadedModel.from_bytes(1, (run / "best.pt").read_bytes())


@pytest.mark.parametrize("which", ["dkt_run", "psikt_run"])
def test_reference_is_a_new_learner_and_a_learner_after_a_streak(which, request):
    model = _load(request.getfixturevalue(which))
    streak = 3
    floor, ceiling = model.mastery_reference(streak)
    n_c = len(model.concept_ids)
    t0 = 0.0 if model.forgets else None
    new = model.concept_mastery(model.model.init_state(1), t0)
    np.testing.assert_allclose(floor, new, atol=1e-6)
    dt = 45.0 / SECONDS_PER_DAY if model.time_unit == "days" else 1.0
    for c in range(1, n_c + 1):
        own = model.sets.items_of(c)
        items = [int(own[k % len(own)]) for k in range(streak)]
        # one learner, answer by answer, through the serving path
        state = model.step_many(
            model.model.init_state(1), items, [1] * streak, [k * dt for k in range(streak)]
        )
        at = (streak - 1) * dt if model.forgets else None
        assert model.concept_mastery(state, at)[c] == pytest.approx(ceiling[c], abs=1e-5)
    # the models learned the skills: right answers raise predicted success on the concept
    assert (ceiling[1:] > floor[1:]).all(), (floor, ceiling)
    assert model.mastery_reference(streak) is model.mastery_reference(streak)  # cached
    assert model.mastery_reference(1)[0] is not floor  # one entry per streak length


def test_scaled_mastery_places_mastery_on_the_reachable_range(dkt_run):
    model = _load(dkt_run)
    floor, ceiling = model.mastery_reference(3)
    ok = ceiling - floor >= 0.02
    ok[0] = False
    assert ok.any()
    assert model.scaled_mastery(floor)[ok] == pytest.approx(0.0, abs=1e-9)
    assert model.scaled_mastery(ceiling)[ok] == pytest.approx(1.0, abs=1e-9)
    mid = (floor + ceiling) / 2
    assert model.scaled_mastery(mid)[ok] == pytest.approx(0.5, abs=1e-6)
    assert (model.scaled_mastery(floor - 0.1)[ok] == 0.0).all()  # below a new learner
    assert (model.scaled_mastery(ceiling + 0.1)[ok] == 1.0).all()  # beyond the streak
    # a concept the model barely moves on keeps its predicted success
    m = np.full_like(floor, 0.42)
    assert model.scaled_mastery(m)[~ok][1:] == pytest.approx(0.42)
    model._references[3] = (floor.copy(), floor + 0.01)
    assert model.scaled_mastery(m)[1:] == pytest.approx(0.42)
    with pytest.raises(ValueError, match="streak"):
        model.mastery_reference(0)


# items 1..7: 1, 2 -> {1}; 3 -> {2}; 4 -> {1, 2}; 5 -> {2, 1} (same set); 6 -> none;
# 7 -> {2} listed twice (a concept counts once for the item)
Q = np.array([[0, 0], [1, 0], [1, 0], [2, 0], [1, 2], [2, 1], [0, 0], [2, 2]])


def _dense_mastery(q: np.ndarray, p_items: np.ndarray) -> np.ndarray:
    """The definition: concept c's mastery is the mean prediction over its items."""
    out = np.zeros(q.max() + 1)
    for c in range(1, q.max() + 1):
        own = [i for i in range(1, len(q)) if c in q[i]]
        out[c] = np.mean(p_items[own])
    return out


def test_background_work_asked_to_stop_ends_at_a_step(dkt_run):
    """The loop that steps a model over histories and the many-learner mastery read end at
    their next step or chunk once a stoppable block's stop is set (the analytics warm-up),
    and run as before elsewhere."""
    import threading

    from tutor.blocking import Stopped, stoppable
    from tutor.runtime import step_through

    model = _load(dkt_run)
    items = np.ones((2, 5), dtype=np.int64)
    correct, times = np.ones((2, 5)), np.zeros((2, 5))
    seen = []
    stop = threading.Event()

    def visit(t, state):  # noqa: ANN001
        seen.append(t)
        if t == 2:
            stop.set()  # as Warmer.stop does from another thread

    step_through(model, items, correct, times, visit=visit)
    assert seen == [0, 1, 2, 3, 4, 5]
    seen.clear()
    stop.clear()
    with stoppable(stop), pytest.raises(Stopped):
        step_through(model, items, correct, times, visit=visit)
    assert seen == [0, 1, 2]
    state = model.model.init_state(3)
    assert concept_mastery_many(model, state).shape[0] == 3
    with stoppable(stop), pytest.raises(Stopped):
        concept_mastery_many(model, state)


def test_concept_sets_group_items_by_their_concepts():
    sets = ConceptSets.build(Q, 2, per_set=True)
    sig = sets.item_sig
    assert sig[1] == sig[2] and sig[4] == sig[5] and sig[0] == sig[6]
    assert len({sig[1], sig[3], sig[4], sig[6], sig[7]}) == 5  # {2, 2} is not {2}
    assert len(sets.sig_item) == 5 and (sig[sets.sig_item] == np.arange(5)).all()
    assert sets.items_of(1).tolist() == [1, 2, 4, 5] and sets.items_of(2).tolist() == [3, 4, 5, 7]
    # a concept-level model predicts per set: mastery from the sets equals the definition
    p_sets = np.array([0.1, 0.2, 0.3, 0.4, 0.5])[: len(sets.sig_item)]
    np.testing.assert_allclose(sets.mastery(p_sets), _dense_mastery(Q, p_sets[sig]), rtol=1e-6)
    batch = np.stack([p_sets, 1 - p_sets])
    np.testing.assert_allclose(
        sets.mastery(batch)[1], _dense_mastery(Q, (1 - p_sets)[sig]), rtol=1e-6
    )
    cols, w = sets.rows(np.array([2]))
    np.testing.assert_allclose(w @ p_sets[cols], _dense_mastery(Q, p_sets[sig])[2:3])


def test_concepts_without_items_keep_their_place():
    """A catalogued concept no item carries (the last ones included) is a row of zeros, not
    an index error: the sets span every concept of the vocabulary."""
    sets = ConceptSets.build(Q, 4, per_set=True)
    assert sets.weights.shape[0] == 5 and len(sets.items_of(4)) == 0
    assert sets.mastery(np.ones(len(sets.sig_item)))[3:].tolist() == [0.0, 0.0]
    cols, w = sets.rows(np.array([3, 1]))
    assert w.shape == (2, len(cols)) and w[0].sum() == 0


def test_sets_of_a_model_with_item_terms_are_the_items():
    sets = ConceptSets.build(Q, 2, per_set=False)
    assert sets.item_sig.tolist() == list(range(len(Q)))
    p = np.linspace(0.1, 0.8, len(Q))
    np.testing.assert_allclose(sets.mastery(p), _dense_mastery(Q, p), rtol=1e-6)


# items 1..10 over concept sets {1} (1-5), {1, 2} (6-8), {2} (9, 10); their difficulties
Q_NODES = np.array([[0, 0], [1, 0], [1, 0], [1, 0], [1, 0], [1, 0], [1, 2], [2, 1], [1, 2],
                    [2, 0], [2, 0]])  # fmt: skip
MU = np.array([0.0, 0.3, -1.0, 2.0, 0.5, -0.2, 0.7, -0.4, 0.1, 1.5, 1.5])


def test_nodes_read_a_concept_sets_items_through_a_few_of_them():
    """With nodes, a concept set's easiest and hardest items and some between are predicted;
    the others count in their concepts' mastery as the linear interpolation in difficulty
    between the nodes around them: exact where a prediction is linear in the difficulty
    within a set, and the plain per-item mastery where a set has no more items than nodes."""
    sets = ConceptSets.build(Q_NODES, 2, per_set=False, difficulty=MU, nodes=3)
    assert sets.item_sig is None
    sig = sets.sig_item.tolist()
    assert sig[0] == 0 and len(sig) == 1 + 3 + 3 + 2
    # the set {1}: items 2 (easiest, mu -1), 3 (hardest, 2) and the middle rank (item 1, 0.3)
    assert {2, 3, 1} <= set(sig) and not {4, 5} & set(sig)
    # predictions linear in mu within each set (a different line per set): exact
    line = {1: (0.5, 0.1), 2: (0.4, -0.05), 3: (0.6, 0.08)}
    which = {1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 2, 7: 2, 8: 2, 9: 3, 10: 3}
    p_items = np.array(
        [0.5] + [line[which[i]][0] + line[which[i]][1] * MU[i] for i in range(1, 11)]
    )
    np.testing.assert_allclose(
        sets.mastery(p_items[sig]), _dense_mastery(Q_NODES, p_items), atol=1e-6
    )
    cols, w = sets.rows(np.array([2]))
    np.testing.assert_allclose(
        w @ p_items[sets.sig_item[cols]], _dense_mastery(Q_NODES, p_items)[2:3], atol=1e-6
    )
    # a curve is only approximated between nodes (so the test above can fail)...
    curved = 1 / (1 + np.exp(3 * MU))
    assert abs(sets.mastery(curved[sig])[1] - _dense_mastery(Q_NODES, curved)[1]) > 1e-3
    # ...and is exact with as many nodes as a set has items
    every = ConceptSets.build(Q_NODES, 2, per_set=False, difficulty=MU, nodes=5)
    assert sorted(every.sig_item.tolist()) == list(range(11))
    np.testing.assert_allclose(
        every.mastery(curved[every.sig_item]), _dense_mastery(Q_NODES, curved), atol=1e-6
    )
    with pytest.raises(ValueError, match="difficulties"):
        ConceptSets.build(Q_NODES, 2, per_set=False, difficulty=MU[:5], nodes=3)
    with pytest.raises(ValueError, match="at least 2"):
        ConceptSets.build(Q_NODES, 2, per_set=False, difficulty=MU, nodes=1)


def test_akt_mastery_reads_nodes_and_its_items_are_its_own(akt_run, tmp_path, monkeypatch):
    """AKT (``mastery_nodes``): concept mastery from a few items per concept set stays within
    0.002 of the mean over every item (difficulties spread as a trained model's), while
    ``predict_all`` and recommendations (``tutor.policies.ItemPredictions``) keep each
    item's own prediction."""
    import torch

    from kt_models.base import load_checkpoint, save_checkpoint
    from tutor.policies import ItemPredictions

    akt, _ = load_checkpoint(akt_run / "best.pt")
    with torch.no_grad():  # difficulties spread as a trained model's (this one barely moved)
        mu = akt.mu.weight
        mu[1:] = torch.as_tensor(np.random.default_rng(0).normal(0, 0.8, (len(mu) - 1, 1)))
    save_checkpoint(akt, tmp_path / "spread.pt")
    # this catalogue's concept sets hold 5 items or fewer: 3 nodes a set, not AKT's 9
    monkeypatch.setattr(type(akt), "mastery_nodes", 3)
    model = LoadedModel.from_bytes(1, (tmp_path / "spread.pt").read_bytes())
    assert model.sets.item_sig is None
    n_items = len(model.item_index)
    assert len(model.sets.sig_item) < n_items
    state = model.step_many(
        model.model.init_state(1), [1, 2, 3, 4], [1, 0, 1, 1], [0.0, 0.1, 0.2, 0.3]
    )
    per_item = model.predict(state, np.arange(n_items + 1))
    np.testing.assert_allclose(model.predict_all(state), per_item, atol=1e-6)
    q = np.asarray(model.model.vocab.item_concepts)
    exact = _dense_mastery(q, per_item)[1:]
    approx = model.concept_mastery(state)[1:]
    assert np.abs(approx - exact).max() < 2e-3
    assert np.abs(approx - exact).max() > 0  # nodes were read, not every item
    asked = []

    def own(positions: np.ndarray) -> np.ndarray:
        asked.append(positions.tolist())
        return model.predict(state, positions + 1)

    p = ItemPredictions(np.zeros(1), None, np.zeros(n_items), shift=False, own=own)
    np.testing.assert_allclose(p[np.array([4, 0, 4])], per_item[[5, 1, 5]], atol=1e-6)
    assert float(p[0]) == pytest.approx(float(per_item[1]), abs=1e-6)
    assert asked == [[0, 4]]  # each item predicted once
    # any index of the array it stands for: a mask, a slice
    mask = np.zeros(n_items, dtype=bool)
    mask[[1, 4]] = True
    np.testing.assert_allclose(p[mask], per_item[[2, 5]], atol=1e-6)
    np.testing.assert_allclose(p[1:3], per_item[2:4], atol=1e-6)
    assert asked == [[0, 4], [1], [2]]
    with pytest.raises(ValueError, match="own"):
        ItemPredictions(np.zeros(1), None, np.zeros(3), shift=False)


@pytest.mark.parametrize("which", ["dkt_run", "psikt_run"])
def test_predictions_per_concept_set_equal_predictions_per_item(which, request):
    """The invariant concept sets rest on: a concept-level model (DKT) predicts the same for
    every item with the same concepts, so predicting once per set loses nothing; a model with
    item terms (PSI-KT's difficulties) is read per item."""
    model = _load(request.getfixturevalue(which))
    assert model.model.concept_level == (which == "dkt_run")
    n_sets = len(model.sets.sig_item)
    assert (
        n_sets < len(model.sets.item_sig)
        if which == "dkt_run"
        else n_sets == len(model.sets.item_sig)
    )
    state = model.step_many(model.model.init_state(1), [1, 2, 3], [1, 0, 1], [0.0, 0.1, 0.2])
    n_items = len(model.sets.item_sig) - 1
    t = 0.5 if model.forgets else None
    per_item = model.predict(state, np.arange(n_items + 1), t)
    np.testing.assert_allclose(model.predict_all(state, t), per_item, atol=1e-6)
    q = np.asarray(model.model.vocab.item_concepts)
    np.testing.assert_allclose(
        model.concept_mastery(state, t)[1:], _dense_mastery(q, per_item)[1:], atol=1e-6
    )
    many = concept_mastery_many(model, model.model.init_state(2))
    np.testing.assert_allclose(many[0], model.concept_mastery(model.model.init_state(1)), atol=1e-6)


@pytest.mark.parametrize("which", ["dkt_run", "dkt_items_run", "psikt_run"])
def test_affine_readout_gives_the_models_predictions(which, request, monkeypatch):
    """DKT's logits are affine in its last state (with or without Rasch items): the loaded
    model reads a matrix per concept set off it once and predicts every set with one product,
    the same numbers as the model's own ``predict``; PSI-KT (not affine) and a readout over
    the size limit go through ``predict``."""
    from tutor import runtime

    model = _load(request.getfixturevalue(which))
    readout = model.set_readout()
    assert (readout is not None) == (which != "psikt_run")
    assert model.set_readout() is readout  # read once
    state = model.step_many(
        model.model.init_state(1), [1, 2, 3, 1], [1, 0, 1, 1], [0.0, 0.1, 0.2, 0.3]
    )
    both = runtime.stack_states(model, [model.model.init_state(1), state])
    own = runtime.predict_many(model, both, model.sets.sig_item)
    np.testing.assert_allclose(model.predict_set_columns(both), own, atol=1e-6)
    cols = np.array([0, len(model.sets.sig_item) - 1, 1])
    np.testing.assert_allclose(model.predict_set_columns(both, cols), own[:, cols], atol=1e-6)
    if readout is not None:
        # the two learners differ, and so do the sets: not a constant that passes by chance
        assert np.abs(own[0] - own[1]).max() > 1e-3
        assert np.ptp(own[1]) > 1e-3
        fresh = _load(request.getfixturevalue(which))
        monkeypatch.setattr(runtime, "READOUT_MAX_CELLS", readout[0].size - 1)
        assert fresh.set_readout() is None
        np.testing.assert_allclose(fresh.predict_set_columns(both), own, atol=1e-6)


@pytest.mark.parametrize("which", ["akt_run", "psikt_run"])
def test_whole_catalogue_predictions_of_a_state_are_kept(which, request, monkeypatch):
    """A model without an affine readout keeps a single learner's whole-catalogue
    predictions by the state's content (and, for a model that forgets, the time asked):
    the next read of that state (a copy, as decoded from the database) predicts nothing, a
    few columns are read off them, and another state, another time or a batch is predicted
    anew, with the model's own numbers."""
    from tutor import runtime

    model = _load(request.getfixturevalue(which))
    assert model.set_readout() is None
    calls = []
    predict = runtime.predict_many

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        return predict(*args, **kwargs)

    monkeypatch.setattr(runtime, "predict_many", counted)
    state = model.step_many(model.model.init_state(1), [1, 2, 3], [1, 0, 1], [0.0, 0.1, 0.2])
    at = np.array([0.5])
    first = model.predict_set_columns(state, None, at)
    assert len(calls) == 1 and not first.flags.writeable
    copy = model.decode(model.encode(state))
    again = model.predict_set_columns(copy, None, at)
    assert len(calls) == 1 and not again.flags.writeable
    np.testing.assert_array_equal(again, first)
    cols = np.array([len(model.sets.sig_item) - 1, 0])
    np.testing.assert_array_equal(model.predict_set_columns(copy, cols, at), first[:, cols])
    assert len(calls) == 1
    own = predict(model, state, model.sets.sig_item, at)
    np.testing.assert_allclose(first, own, atol=1e-6)
    # another state: predicted, and differently
    other = model.step_many(state, [2], [0], [0.3])
    p_other = model.predict_set_columns(other, None, at)
    assert len(calls) == 2 and np.abs(p_other - first).max() > 1e-4
    # a few columns of a state not kept: those alone, not kept
    fresh = model.step_many(other, [3], [1], [0.4])
    model.predict_set_columns(fresh, cols, at)
    assert len(calls) == 3 and len(model._kept) == 2
    # another time: kept apart for a model that forgets, the same for one that does not
    later = model.predict_set_columns(state, None, np.array([5.0]))
    assert len(calls) == (4 if model.forgets else 3)
    if model.forgets:
        assert np.abs(later - first).max() > 1e-6
    # a batch of learners: always predicted
    both = runtime.stack_states(model, [state, other])
    n = len(calls)
    model.predict_set_columns(both, None, np.array([0.5, 0.5]))
    assert len(calls) == n + 1
    # what is kept is a copy of the state: changing the state asked about in place
    # afterwards changes neither what was kept nor the hit for its former content
    for leaf in runtime._leaves(state):
        if leaf.is_floating_point():
            leaf.add_(0.25)
            break
    np.testing.assert_array_equal(model.predict_set_columns(copy, None, at), first)
    assert len(calls) == n + 1
    model.predict_set_columns(state, None, at)
    assert len(calls) == n + 2
    # at most KEPT_PREDICTIONS states
    monkeypatch.setattr(model._kept, "size", 3)
    for k in range(5):
        model.predict_set_columns(model.step_many(other, [1 + k % 3], [k % 2], [0.5 + k]), None, at)
    assert len(model._kept) == 3


def test_one_learners_answers_are_folded_by_the_models_numpy_step(dkt_run, monkeypatch):
    """A served DKT folds a learner's answers with its numpy step (no torch ``step``), into
    the state the batched replay reaches, encoded and decoded alike; a model in training
    mode still goes through ``step``."""
    from tutor.runtime import step_through

    model = _load(dkt_run)
    n_items = len(model.sets.item_sig) - 1
    rng = np.random.default_rng(3)
    items = rng.integers(1, n_items + 1, 60).tolist()
    right = rng.integers(0, 2, 60).tolist()
    times = [0.1 * k for k in range(60)]
    replayed = step_through(
        model,
        np.array([items]),
        np.array([right], dtype=np.float32),
        np.array([times], dtype=np.float32),
    )
    calls = []
    torch_step = type(model.model).step
    monkeypatch.setattr(
        type(model.model), "step", lambda *a, **k: calls.append(1) or torch_step(*a, **k)
    )
    served = model.model.init_state(1)
    for k in range(60):  # one request per answer, through the stored bytes
        served = model.decode(
            model.encode(model.step_many(served, [items[k]], [right[k]], [times[k]]))
        )
    assert calls == []
    for got, want in zip(served, replayed, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
    np.testing.assert_allclose(model.predict_sets(served), model.predict_sets(replayed), atol=1e-5)
    model.model.train()  # weights that may change: torch's step
    model.step_many(served, [items[0]], [right[0]], [0.0])
    assert calls == [1]
