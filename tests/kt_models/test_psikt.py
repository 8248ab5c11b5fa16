"""PSI-KT specifics: OU forgetting, the prerequisite graph, traits, the ELBO, serving clocks.

The generic tests of ``test_interface.py`` (serving == batch forward, learning, checkpoints)
run for psikt as for every registered model.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kt_models.base import build_model, make_config
from kt_models.data import load_sequences, make_batch
from kt_models.evaluate import predict_multi_step
from kt_models.psikt import PSIKT, ou_variance_factor


@pytest.fixture(scope="module")
def data(skill_dataset):
    return load_sequences(skill_dataset)


def _model(vocab, seed: int = 0, **overrides) -> PSIKT:
    torch.manual_seed(seed)
    model = build_model("psikt", vocab, make_config("psikt", overrides))
    assert isinstance(model, PSIKT)
    return model.eval()


def _single_concept_item(model: PSIKT) -> tuple[int, int]:
    q = model.item_concepts
    for i in range(1, q.shape[0]):
        row = q[i][q[i] > 0]
        if len(row) == 1:
            return i, int(row[0])
    raise AssertionError("no single-concept item")


def _warm_state(model: PSIKT, n: int = 2, steps: int = 6):
    state = model.init_state(n)
    item, _ = _single_concept_item(model)
    for t in range(steps):
        state = model.step(
            state,
            torch.full((n,), item),
            torch.tensor([float((i + t) % 3 != 0) for i in range(n)]),
            torch.full((n,), 100.0 + 0.01 * t),
        )
    return state


def test_predict_decays_toward_trait_mean(data):
    _, vocab = data
    model = _model(vocab)
    item, concept = _single_concept_item(model)
    state = _warm_state(model, n=1)
    # knowledge of the item's concept well above the learner's mean level; the others at mu
    state["d"] = torch.zeros_like(state["d"])
    state["d"][0, concept] = 2.0
    traits = model.learner_traits(state)
    alpha, mu = float(traits["alpha"][0]), float(traits["mu"][0])
    last = float(state["time"][0])
    gaps = torch.tensor([0.0, 0.1, 0.5, 1.0, 3.0, 10.0, 30.0, 100.0, 1e4])
    at = (last + gaps).unsqueeze(0)
    logits = model.predict_logits(state, torch.full((1, len(gaps)), item), at)[0].detach()
    assert torch.all(logits[1:] < logits[:-1]), logits
    b = float(model.difficulty.weight[item, 0].detach())
    expected = mu - b + 2.0 * torch.exp(-alpha * gaps)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    assert abs(float(logits[-1]) - (mu - b)) < 1e-4  # decayed to the trait mean
    # at_time None = the last answer's time; earlier times are clamped to it (no gain back)
    now = model.predict_logits(state, torch.tensor([[item]]))[0, 0].detach()
    torch.testing.assert_close(now, logits[0])
    before = model.predict(state, torch.tensor([[item]]), torch.tensor([[last - 5.0]])).logit()
    torch.testing.assert_close(before[0, 0], logits[0], atol=1e-5, rtol=1e-5)
    # probabilities (what the tutor schedules reviews with) decay monotonically too
    p = model.predict(state, torch.full((1, len(gaps)), item), at)[0]
    assert torch.all(p[1:] < p[:-1])


def test_predict_after_real_answers_never_gains_with_time(data):
    _, vocab = data
    model = _model(vocab, seed=1)
    item, concept = _single_concept_item(model)
    state = _warm_state(model, n=2)
    mean, _ = model.propagate(state)
    mu = model.learner_traits(state)["mu"]
    above = mean[:, concept] > mu  # learners whose concept is above their mean level
    gaps = torch.linspace(0, 60, 13)
    at = state["time"].unsqueeze(1) + gaps
    assert above.any()
    logits = model.predict_logits(state, torch.full((2, len(gaps)), item), at).detach()
    diffs = logits[:, 1:] - logits[:, :-1]
    assert torch.all(diffs[above] <= 1e-6)


def test_ou_variance_closed_form(data):
    _, vocab = data
    model = _model(vocab)
    state = _warm_state(model, n=2)
    traits = model.learner_traits(state)
    alpha, sigma = traits["alpha"], traits["sigma"]
    d0 = state["d"].clone()
    for gap in (0.0, 0.01, 1.0, 7.0, 365.0):
        state["v"] = torch.zeros_like(state["v"])
        mean, var = model.propagate(state, state["time"] + gap)
        expected = sigma**2 * (1 - torch.exp(-2 * alpha * gap)) / (2 * alpha)
        torch.testing.assert_close(var, expected.unsqueeze(1).expand_as(var), rtol=1e-5, atol=1e-7)
        # with a posterior variance, it is propagated with exp(-2 alpha dt)
        state["v"] = torch.full_like(state["v"], 0.3)
        _, var2 = model.propagate(state, state["time"] + gap)
        decay2 = torch.exp(-2 * alpha * gap).unsqueeze(1)
        torch.testing.assert_close(var2, var + 0.3 * decay2, rtol=1e-5, atol=1e-7)
    # long gaps: the stationary variance sigma^2 / (2 alpha)
    state["v"] = torch.zeros_like(state["v"])
    _, var = model.propagate(state, state["time"] + 1e6)
    torch.testing.assert_close(var[:, 1], sigma**2 / (2 * alpha))
    assert torch.equal(state["d"], d0)  # propagate does not change the state
    # the helper is the closed form, stable for tiny alpha * dt
    a = torch.tensor([1e-3, 0.5, 50.0])
    for dt in (1e-6, 1.0, 1e3):
        ref = torch.tensor([-math.expm1(-2 * float(x) * dt) / (2 * float(x)) for x in a])
        torch.testing.assert_close(ou_variance_factor(a, torch.tensor(dt)), ref)


def test_mean_reverts_to_prerequisite_target(data):
    _, vocab = data
    model = _model(vocab)
    state = _warm_state(model, n=2)
    mean, _ = model.propagate(state, state["time"] + 1e6)
    traits = model.learner_traits(state)
    w = model._edge_probs()
    w = w / w.sum(0, keepdim=True)
    infl = (state["d"][:, 1:]) @ w
    expected = traits["mu"].unsqueeze(1) + traits["gamma"].unsqueeze(1) * infl
    torch.testing.assert_close(mean[:, 1:], expected, atol=1e-5, rtol=1e-5)


def test_prerequisite_graph(data):
    _, vocab = data
    model = _model(vocab)
    a = model.prerequisite_graph()
    c = vocab.n_concepts
    assert a.shape == (c, c)
    off = ~torch.eye(c, dtype=torch.bool)
    assert torch.all((a[off] > 0) & (a[off] < 1))
    assert torch.all(a.diagonal() == 0)
    assert (a - a.T).abs().max() > 1e-3  # directed
    u, t = model.u.detach(), model.T.detach()
    expected = torch.sigmoid(u @ u.T) * torch.sigmoid(u @ (t - t.T) @ u.T)
    torch.testing.assert_close(a[off], expected[off])
    assert model.concept_vectors().shape == (c, model.config.graph_dim)


def test_traits_in_range(data):
    seqs, vocab = data
    model = _model(vocab)
    state = _warm_state(model, n=3)
    for tr in (model.learner_traits(state), model.learner_traits(model.init_state(2))):
        assert set(tr) == {"alpha", "mu", "sigma", "gamma"}
        assert torch.all(tr["alpha"] > 0) and torch.all(tr["sigma"] > 0)
        assert torch.all((tr["gamma"] > 0) & (tr["gamma"] < 1))
        assert torch.all(torch.isfinite(tr["mu"]))
    for extreme in (-60.0, 60.0):
        state["trait_mean"] = torch.full_like(state["trait_mean"], extreme)
        tr = model.learner_traits(state)
        assert torch.all(tr["alpha"] > 0) and torch.all(tr["sigma"] > 0)
        assert torch.all((tr["gamma"] > 0) & (tr["gamma"] < 1))


def test_elbo_finite_and_decreasing(data):
    seqs, vocab = data
    model = _model(vocab, seed=2)
    batch = make_batch(seqs, np.arange(16))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(model.loss(batch, model(batch)))

    before = eval_loss()
    assert math.isfinite(before)
    model.train()
    for _ in range(15):
        model.train()
        loss = model.loss(batch, model(batch))
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
    after = eval_loss()
    assert after < before - 0.02, (before, after)


def test_eval_forward_deterministic_train_forward_sampled(data):
    seqs, vocab = data
    model = _model(vocab)
    batch = make_batch(seqs, np.arange(6))
    with torch.no_grad():
        a, b = model(batch), model(batch)
        assert torch.equal(a, b)
        model.train()
        torch.manual_seed(0)
        c = model(batch)
    assert not torch.equal(a[batch.mask], c[batch.mask])


def test_serving_clock_offset_and_padding(data):
    """Only time differences matter: serving on another clock equals the batch forward."""
    seqs, vocab = data
    model = _model(vocab, seed=4)
    users = np.arange(5)
    batch = make_batch(seqs, users)
    with torch.no_grad():
        logits = model(batch)
    # e.g. days since 1970 (float64: float32 has ~3-minute resolution at 20000 days)
    offset = torch.tensor([19000.0, 0.0, 5.5, 123.25, 20000.0], dtype=torch.float64)
    state = model.init_state(len(users))
    for t in range(batch.item.shape[1]):
        at = batch.time[:, t].double() + offset
        got = model.predict(state, batch.item[:, t : t + 1], at.unsqueeze(1))[:, 0]
        m = batch.mask[:, t]
        torch.testing.assert_close(got[m], torch.sigmoid(logits[m, t]), atol=1e-5, rtol=1e-4)
        state = model.step(state, batch.item[:, t], batch.correct[:, t], at)
    # a learner served alone equals its row in the batch (padding does not leak)
    one = make_batch(seqs, users[2:3])
    with torch.no_grad():
        alone = model(one)
    n = int(one.mask.sum())
    torch.testing.assert_close(alone[0, :n], logits[2, :n], atol=1e-5, rtol=1e-5)
    sel = model.state_select(state, torch.tensor([3, 1]))
    assert sel["d"].shape == (2, vocab.n_concepts + 1)


def test_multi_step_prediction_runs(data):
    seqs, vocab = data
    model = _model(vocab)
    y, p, k = predict_multi_step(model, seqs, np.arange(10), 5, torch.device("cpu"))
    assert len(y) == len(p) == len(k) > 0
    assert np.all((p > 0) & (p < 1)) and set(np.unique(k)) <= set(range(1, 6))


def test_compiled_training_update_equals_the_plain_one(data, monkeypatch):
    """``TrainConfig.compile``: the compiled per-answer update and the compiled runs of
    ``compile_chunk`` updates give the plain update's loss and gradients (training mode, where
    they run), and serving keeps the plain update."""
    import torch._inductor.config as inductor

    # the same reparameterisation noise as eager code (compiled code draws its own otherwise)
    monkeypatch.setattr(inductor, "fallback_random", True)
    seqs, vocab = data
    batch = make_batch(seqs, np.arange(6), max_len=12)
    torch.manual_seed(0)
    # runs of 2 positions per compiled call (8 by default: the same code, a longer compile)
    over = {"items": "rasch", "compile_chunk": 2}
    plain = build_model("psikt", vocab, make_config("psikt", over))
    compiled = build_model("psikt", vocab, make_config("psikt", over))
    compiled.load_state_dict(plain.state_dict())
    assert compiled.compile_training()
    chunk, chunks = compiled._train_chunk, []

    def counted(*args):  # noqa: ANN002, ANN202
        chunks.append(args[1].shape[1])
        return chunk(*args)

    compiled._train_chunk = counted
    grads = []
    for model in (plain, compiled):
        model.train()
        torch.manual_seed(1)  # the same reparameterisation noise
        loss = model.loss(batch, model(batch))
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[1][0], grads[0][0], atol=1e-5, rtol=1e-5)
    for a, b in zip(grads[1][1], grads[0][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
    compiled.eval()
    state = compiled.init_state(6)
    stepped = compiled.step(state, batch.item[:, 0], batch.correct[:, 0], batch.time[:, 0])
    assert compiled._train_update is not None and stepped["h"].shape == (6, 64)
    # positions 1-10 ran as compiled runs of 2 (compile_chunk), 11 alone
    assert batch.item.shape[1] == 12 and chunks == [2] * 5


def test_compile_chunk_is_checked_and_1_compiles_one_update_a_call(data):
    _, vocab = data
    with pytest.raises(ValueError, match="compile_chunk must be at least 1"):
        build_model("psikt", vocab, make_config("psikt", {"compile_chunk": 0}))
    one = build_model("psikt", vocab, make_config("psikt", {"compile_chunk": 1}))
    assert one.compile_training()  # torch.compile is lazy: nothing compiles here
    assert one._train_update is not None and one._train_chunk is None
