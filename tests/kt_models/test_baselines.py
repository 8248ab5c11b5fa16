"""The BKT and logistic (IRT + PFA) baselines: hand-computed filters and counts, recovery."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kt_models.base import build_model, make_config
from kt_models.bkt import BKT
from kt_models.concepts import item_concept_table
from kt_models.data import Batch, Vocab, load_sequences, make_batch


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread avoids oversubscribing a shared CPU (10x faster here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _vocab(item_concepts: list[list[int]], n_concepts: int) -> Vocab:
    k = max(len(c) for c in item_concepts)
    q = np.zeros((len(item_concepts) + 1, k), dtype=np.int64)
    for i, cs in enumerate(item_concepts):
        q[i + 1, : len(cs)] = cs
    return Vocab(
        items=[f"i{i + 1}" for i in range(len(item_concepts))],
        concepts=[f"c{c + 1}" for c in range(n_concepts)],
        item_concepts=q,
    )


def _batch(items: list[list[int]], correct: list[list[int]], times=None) -> Batch:
    t_max = max(len(x) for x in items)
    b = len(items)
    item = torch.zeros(b, t_max, dtype=torch.long)
    corr = torch.zeros(b, t_max)
    time = torch.zeros(b, t_max)
    for u, (it, co) in enumerate(zip(items, correct, strict=True)):
        item[u, : len(it)] = torch.tensor(it)
        corr[u, : len(co)] = torch.tensor(co, dtype=torch.float32)
        tt = times[u] if times is not None else list(range(len(it)))
        time[u, : len(it)] = torch.tensor(tt, dtype=torch.float32)
    return Batch(item=item, correct=corr, time=time, mask=item > 0, users=np.arange(b))


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _set_bkt(model: BKT, c: int, l0: float, learn: float, guess: float, slip: float) -> None:
    with torch.no_grad():
        model.l0[c] = _logit(l0)
        model.learn[c] = _logit(learn)
        model.guess[c] = _logit(2 * guess)  # guess = 0.5 * sigmoid(.)
        model.slip[c] = _logit(2 * slip)


def _serve(model, batch: Batch) -> torch.Tensor:
    state = model.init_state(batch.item.shape[0])
    out = torch.zeros(batch.item.shape)
    for t in range(batch.item.shape[1]):
        logits = model.predict_logits(state, batch.item[:, t : t + 1], batch.time[:, t : t + 1])
        out[:, t] = logits[:, 0]
        state = model.step(state, batch.item[:, t], batch.correct[:, t], batch.time[:, t])
    return out


def _fit(model, batch: Batch, lr: float, steps: int) -> None:
    """Full-batch Adam on the model's own loss (the recovery tests)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = model.loss(batch, model(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()


# ---------------------------------------------------------------------------- BKT
def test_bkt_filter_matches_hand_computation():
    # items 1, 2: concept 1; item 3: concepts 1 and 2
    vocab = _vocab([[1], [1], [1, 2]], 2)
    model = build_model("bkt", vocab).eval()
    l0, learn, guess, slip = 0.3, 0.2, 0.25, 0.1
    _set_bkt(model, 1, l0, learn, guess, slip)
    _set_bkt(model, 2, 0.6, 0.1, 0.15, 0.05)
    batch = _batch([[1, 2, 1, 3]], [[1, 0, 1, 1]])
    with torch.no_grad():
        p = torch.sigmoid(model(batch))[0]

    def pc(pl, g=guess, s=slip):
        return pl * (1 - s) + (1 - pl) * g

    pl = l0
    expected = []
    for y in (1, 0, 1):
        p_ok = pc(pl)
        expected.append(p_ok)
        post = pl * (1 - slip) / p_ok if y else pl * slip / (1 - p_ok)
        pl = post + (1 - post) * learn
    # hand values of the first three steps
    assert expected[0] == 0.3 * 0.9 + 0.7 * 0.25
    np.testing.assert_allclose(expected, [0.445, 0.6955056, 0.4970479], atol=1e-6)
    # multi-concept item: mean of the concepts' P(correct); concept 2 is still at its prior
    expected.append(0.5 * (pc(pl) + pc(0.6, 0.15, 0.05)))
    np.testing.assert_allclose(p.numpy(), expected, atol=1e-5)
    torch.testing.assert_close(_serve(model, batch), model(batch).detach(), atol=1e-5, rtol=0)


def test_bkt_repeat_per_skill_updates_every_concept():
    vocab = _vocab([[1], [2], [1, 2]], 2)
    model = build_model("bkt", vocab).eval()
    state = model.step(model.init_state(1), torch.tensor([3]), torch.tensor([1.0]), None)
    prior = torch.sigmoid(model.l0.detach())
    assert (state["p"][0, 1:] > prior[1:]).all()  # both concepts learned from one answer
    assert state["p"][0, 0] == prior[0].clamp(1e-6, 1 - 1e-6)


def test_bkt_item_concept_table_masks_padding_and_repeats():
    q, valid = item_concept_table(torch.tensor([[0, 0, 0], [0, 2, 0], [3, 3, 1], [4, 0, 0]]))
    assert q.tolist() == [[0, 0, 0], [2, 2, 2], [3, 3, 1], [4, 4, 4]]
    assert valid.tolist() == [
        [True, False, False],
        [False, True, False],
        [True, False, True],
        [True, False, False],
    ]


def test_bkt_forget_per_opportunity():
    vocab = _vocab([[1]], 1)
    model = build_model("bkt", vocab, make_config("bkt", {"forget": True})).eval()
    _set_bkt(model, 1, 0.5, 0.2, 0.2, 0.1)
    with torch.no_grad():
        model.forget[1] = _logit(0.3)
    state = model.step(model.init_state(1), torch.tensor([1]), torch.tensor([1.0]), None)
    post = 0.5 * 0.9 / (0.5 * 0.9 + 0.5 * 0.2)
    expected = post * (1 - 0.3) + (1 - post) * 0.2
    assert abs(float(state["p"][0, 1]) - expected) < 1e-6


def test_bkt_forgetting_with_time_decays_mastery():
    vocab = _vocab([[1], [2]], 2)
    assert not build_model("bkt", vocab).forgets and not BKT.forgets
    model = build_model("bkt", vocab, make_config("bkt", {"forget_time": "true"})).eval()
    assert model.forgets
    _set_bkt(model, 1, 0.3, 0.2, 0.2, 0.1)
    with torch.no_grad():
        model.decay[1] = math.log(math.expm1(0.1))  # lambda = 0.1 per day
    state = model.init_state(1)
    state = model.step(state, torch.tensor([1]), torch.tensor([1.0]), torch.tensor([2.0]))
    pl = float(state["p"][0, 1])
    at = torch.tensor([[2.0, 3.0, 5.0, 12.0, 100.0]])
    probs = model.predict(state, torch.ones_like(at, dtype=torch.long), at_time=at)[0]
    assert (probs[1:] < probs[:-1]).all()
    dt = at[0] - 2.0
    expected = pl * torch.exp(-0.1 * dt) * 0.9 + (1 - pl * torch.exp(-0.1 * dt)) * 0.2
    torch.testing.assert_close(probs, expected, atol=1e-6, rtol=0)
    # without at_time: predicted at the last answer's time, i.e. no decay
    assert abs(float(model.predict(state, torch.tensor([[1]]))[0, 0]) - float(probs[0])) < 1e-6
    # a concept never practised keeps its prior, however late
    p2 = model.predict(state, torch.tensor([[2, 2]]), at_time=torch.tensor([[0.0, 50.0]]))[0]
    assert abs(float(p2[0] - p2[1])) < 1e-7


def test_bkt_with_forgetting_incremental_equals_batch(skill_dataset):
    seqs, vocab = load_sequences(skill_dataset)
    cfg = make_config("bkt", {"forget": True, "forget_time": True})
    torch.manual_seed(0)
    model = build_model("bkt", vocab, cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    batch = make_batch(seqs, np.arange(8))
    with torch.no_grad():
        logits = model(batch)
    m = batch.mask
    torch.testing.assert_close(_serve(model, batch)[m], logits[m], atol=1e-5, rtol=1e-5)


def _simulate_bkt(rng, n_learners, length, l0, learn, guess, slip):
    known = rng.random(n_learners) < l0
    answers = np.zeros((n_learners, length), dtype=np.int64)
    for t in range(length):
        p = np.where(known, 1 - slip, guess)
        answers[:, t] = rng.random(n_learners) < p
        known = known | (rng.random(n_learners) < learn)
    return answers


def test_bkt_recovers_simulated_parameters():
    rng = np.random.default_rng(0)
    truth = {"l0": 0.3, "learn": 0.15, "guess": 0.2, "slip": 0.1}
    answers = _simulate_bkt(rng, 400, 25, **truth)
    vocab = _vocab([[1]], 1)
    model = build_model("bkt", vocab, make_config("bkt", {"item_params": False}))
    _fit(model, _batch([[1] * 25] * 400, answers.tolist()), lr=0.15, steps=60)
    got = {k: float(v[1].detach()) for k, v in model.probs().items()}
    for k in ("learn", "guess", "slip"):
        assert abs(got[k] - truth[k]) < 0.1, (k, got)
    assert abs(got["l0"] - truth["l0"]) < 0.15, got
    assert model.concept_vectors().shape == (1, 4)


# ---------------------------------------------------------------------------- logistic
def test_logistic_counts_match_hand_example():
    # item 1: concept 1; item 2: concept 2; item 3: concepts 1, 2; item 4: no concept
    vocab = _vocab([[1], [2], [1, 2], []], 2)
    model = build_model("logistic", vocab)
    batch = _batch([[1, 3, 2, 1, 4, 3, 4], [3, 3, 1]], [[1, 0, 1, 0, 1, 1, 0], [1, 1, 0]])
    f = model.features(batch)
    v = f["valid"]
    assert v[0].tolist() == [
        [True, False],
        [True, True],
        [True, False],
        [True, False],
        [True, False],
        [True, True],
        [True, False],
    ]
    assert f["concepts"][0, :, 0].tolist() == [1, 1, 2, 1, 0, 1, 0]
    # learner 0, first concept slot: c1 (item 1/3), c2, c0 ("no concept")
    assert f["succ"][0, :, 0].tolist() == [0, 1, 0, 1, 0, 1, 1]
    assert f["fail"][0, :, 0].tolist() == [0, 0, 1, 1, 0, 2, 0]
    # second slot of item 3 (concept 2) at positions 1 and 5
    assert f["succ"][0, 1, 1] == 0 and f["fail"][0, 1, 1] == 0
    assert f["succ"][0, 5, 1] == 1 and f["fail"][0, 5, 1] == 1
    assert f["total_succ"][0].tolist() == [0, 1, 1, 2, 2, 3, 4]
    assert f["total_fail"][0].tolist() == [0, 0, 1, 1, 2, 2, 2]
    assert f["succ"][1, :3, 0].tolist() == [0, 1, 2] and f["succ"][1, 1, 1] == 1
    assert f["total_succ"][1, :3].tolist() == [0, 1, 2]
    # the logit is the documented formula of those counts
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
        logits = model(batch)
    m = {k: v.detach() for k, v in model.named_parameters()}
    # (position, item, its concepts): item 3 at position 5, item 1 at position 3
    for pos, it, cs in [(5, 3, [1, 2]), (3, 1, [1])]:
        s, fl = f["succ"][0, pos], f["fail"][0, pos]
        exp = (
            m["bias"]
            - m["difficulty"][it]
            + m["w_succ"] * math.log1p(f["total_succ"][0, pos])
            + m["w_fail"] * math.log1p(f["total_fail"][0, pos])
        )
        for k, c in enumerate(cs):
            exp = exp + m["beta"][c] + m["gamma"][c] * math.log1p(s[k])
            exp = exp + m["rho"][c] * math.log1p(fl[k])
        assert abs(float(exp) - float(logits[0, pos])) < 1e-5
    torch.testing.assert_close(_serve(model, batch)[batch.mask], logits[batch.mask])


def test_logistic_monotone_in_successes():
    vocab = _vocab([[1], [2]], 2)
    model = build_model("logistic", vocab).eval()
    with torch.no_grad():
        model.gamma.fill_(0.4)
        model.w_succ.zero_()
    state = model.init_state(1)
    probs = []
    for _ in range(6):
        probs.append(float(model.predict(state, torch.tensor([[1]]))[0, 0]))
        state = model.step(state, torch.tensor([1]), torch.tensor([1.0]), None)
    assert all(b > a for a, b in zip(probs, probs[1:], strict=False))
    assert model.concept_vectors().shape == (2, 3)


def test_logistic_recovers_item_difficulty_order():
    rng = np.random.default_rng(1)
    n_items, n_learners, length = 8, 300, 20
    difficulty = np.linspace(-1.5, 1.5, n_items)
    ability = rng.normal(0, 1, n_learners)
    items = rng.integers(0, n_items, (n_learners, length))
    p = 1 / (1 + np.exp(-(ability[:, None] - difficulty[items])))
    answers = (rng.random(p.shape) < p).astype(int)
    vocab = _vocab([[1]] * n_items, 1)
    model = build_model("logistic", vocab)
    _fit(model, _batch((items + 1).tolist(), answers.tolist()), lr=0.05, steps=200)
    got = model.difficulty.detach()[1:].numpy()
    rank = np.argsort(np.argsort(got))
    assert np.corrcoef(rank, np.arange(n_items))[0, 1] > 0.95, got
    assert model.w_succ > 0 > model.w_fail  # the online ability term is used
