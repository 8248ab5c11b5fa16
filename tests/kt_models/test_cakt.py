"""CAKT specifics: the learning-curve history, both history keys, decay, CNN, size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import kt_models.cakt as cakt_mod
from kt_models.base import build_model, make_config
from kt_models.cakt import CAKT, CAKTConfig, _FrameConv
from kt_models.data import Batch, Vocab, load_sequences, make_batch

# items: 1 -> concept 1, 2 -> concept 2, 3 -> concepts 1 and 2, 4 -> no concept
VOCAB = Vocab(
    items=["i1", "i2", "i3", "i4"],
    concepts=["c1", "c2"],
    item_concepts=np.array([[0, 0], [1, 0], [2, 0], [1, 2], [0, 0]], dtype=np.int64),
)


def _batch(rows: list[list[int]], correct: list[list[int]] | None = None) -> Batch:
    t_max = max(len(r) for r in rows)
    item = torch.zeros(len(rows), t_max, dtype=torch.long)
    corr = torch.zeros(len(rows), t_max)
    mask = torch.zeros(len(rows), t_max, dtype=torch.bool)
    for b, r in enumerate(rows):
        item[b, : len(r)] = torch.tensor(r)
        mask[b, : len(r)] = True
        if correct is not None:
            corr[b, : len(r)] = torch.tensor(correct[b], dtype=torch.float32)
    time = torch.arange(t_max, dtype=torch.float32).expand(len(rows), -1) * mask
    return Batch(item=item, correct=corr, time=time, mask=mask, users=np.arange(len(rows)))


def _concepts(item: int) -> list[int]:
    cs = [int(c) for c in VOCAB.item_concepts[item] if c > 0]
    return cs or [0]


def _expected(rows: list[list[int]], k: int, key: str) -> dict[tuple[int, int, int], list[int]]:
    """Brute force: (learner, position, key concept) -> last k earlier positions, padded."""
    out = {}
    for b, r in enumerate(rows):
        for t in range(len(r)):
            src = r[t] if key == "next" else (r[t - 1] if t > 0 else 0)
            for c in _concepts(src):
                before = [p for p in range(t) if c in _concepts(r[p])]
                last = before[-k:]
                out[(b, t, c)] = [-1] * (k - len(last)) + last
    return out


@pytest.mark.parametrize("key", ["next", "current"])
@pytest.mark.parametrize("k", [2, 4])
def test_history_indices_are_the_last_k_attempts_on_the_key_concept(key, k):
    rows = [[1, 2, 1, 3, 1, 4, 2, 1, 3, 4, 1, 2], [3, 3, 2, 4, 4, 1], [4]]
    model = CAKT(CAKTConfig(k=k, history_key=key), VOCAB)
    batch = _batch(rows)
    pos, w = model.history_indices(batch)
    assert pos.shape == (3, 12, 2, k)
    want = _expected(rows, k, key)
    seen = 0
    for b, r in enumerate(rows):
        for t in range(12):
            src = 0 if t >= len(r) else r[t] if key == "next" else (r[t - 1] if t > 0 else 0)
            qc = VOCAB.item_concepts[src]
            for j in range(2):
                if t >= len(r) or w[b, t, j] == 0:
                    assert (pos[b, t, j] == -1).all()
                    continue
                c = int(qc[j])
                assert pos[b, t, j].tolist() == want[(b, t, c)], (b, t, c)
                seen += 1
            if t < len(r):
                assert torch.isclose(w[b, t].sum(), torch.tensor(1.0))
    assert seen == sum(
        len(_concepts(r[t] if key == "next" else (r[t - 1] if t else 0)))
        for r in rows
        for t in range(len(r))
    )
    # spot checks of the hand-made sequence (learner 0, "next" key, k = 4)
    if key == "next" and k == 4:
        assert pos[0, 4, 0].tolist() == [-1, 0, 2, 3]  # item 1 at t=4: c1 at 0, 2, 3 (item 3)
        assert pos[0, 8, 0].tolist() == [2, 3, 4, 7]  # item 3 at t=8, concept 1
        assert pos[0, 8, 1].tolist() == [-1, 1, 3, 6]  # item 3 at t=8, concept 2
        assert pos[0, 9, 0].tolist() == [-1, -1, -1, 5]  # item 4 (no concept): slot 0
        assert (pos[0, 0] == -1).all()


def test_history_never_includes_the_predicted_answer():
    rows = [[1, 1, 1, 1, 1, 1, 1]]
    for key in ("next", "current"):
        pos, _ = CAKT(CAKTConfig(k=4, history_key=key), VOCAB).history_indices(_batch(rows))
        t = torch.arange(7).view(7, 1, 1)
        assert (pos[0] < t).all()
        # with one concept only, both keys give the same last four earlier answers
        assert pos[0, 6, 0].tolist() == [2, 3, 4, 5]


def test_output_depends_on_earlier_answers_only():
    torch.manual_seed(0)
    model = CAKT(CAKTConfig(), VOCAB).eval()
    rows = [[1, 2, 3, 1, 4, 1, 3, 2]]
    a = _batch(rows, [[1, 0, 1, 1, 0, 0, 1, 0]])
    b = _batch(rows, [[1, 0, 1, 1, 0, 1, 0, 1]])  # answers differ from position 5 on
    with torch.no_grad():
        la, lb = model(a), model(b)
    torch.testing.assert_close(la[:, :6], lb[:, :6])
    assert not torch.allclose(la[:, 6:], lb[:, 6:])


def _serving(model, batch):
    state = model.init_state(batch.item.shape[0])
    out = torch.zeros(batch.item.shape)
    for t in range(batch.item.shape[1]):
        out[:, t] = model.predict_logits(state, batch.item[:, t : t + 1])[:, 0]
        state = model.step(state, batch.item[:, t], batch.correct[:, t], batch.time[:, t])
    return out, state


def test_history_keys_differ_and_both_serve_like_batch(skill_dataset):
    seqs, vocab = load_sequences(skill_dataset)
    batch = make_batch(seqs, np.arange(6))
    torch.manual_seed(1)
    nxt = build_model("cakt", vocab, make_config("cakt", {"H": 6, "hidden": 36})).eval()
    cur = build_model(
        "cakt", vocab, make_config("cakt", {"H": 6, "hidden": 36, "history_key": "current"})
    ).eval()
    cur.load_state_dict(nxt.state_dict())  # same weights, only the key differs
    m = batch.mask.clone()
    m[:, 0] = False
    logits = {}
    with torch.no_grad():
        for name, model in (("next", nxt), ("current", cur)):
            logits[name] = model(batch)
            inc, _ = _serving(model, batch)
            torch.testing.assert_close(
                inc[batch.mask], logits[name][batch.mask], atol=1e-5, rtol=1e-5
            )
    assert (logits["next"][m] - logits["current"][m]).abs().max() > 1e-3


def test_predict_is_pure_and_state_is_constant_size(skill_dataset):
    seqs, vocab = load_sequences(skill_dataset)
    batch = make_batch(seqs, np.arange(4))
    torch.manual_seed(2)
    model = build_model("cakt", vocab, make_config("cakt", {"H": 5, "hidden": 25})).eval()
    state = model.init_state(4)
    shapes = [tuple(s.shape) for s in state]
    items = torch.arange(1, vocab.n_items + 1).expand(4, -1)
    with torch.no_grad():
        for t in range(batch.item.shape[1]):
            before = [s.clone() for s in state]
            p1 = model.predict_logits(state, items)
            p2 = model.predict_logits(state, items)
            torch.testing.assert_close(p1, p2)
            for s, s0 in zip(state, before, strict=True):
                assert torch.equal(s, s0)
            # a candidate's logit does not depend on the other candidates asked with it
            one = model.predict_logits(state, items[:, 3:4])
            torch.testing.assert_close(one[:, 0], p1[:, 3], atol=1e-5, rtol=1e-5)
            state = model.step(state, batch.item[:, t], batch.correct[:, t], batch.time[:, t])
    assert [tuple(s.shape) for s in state] == shapes
    sub = model.state_select(state, torch.tensor([2, 0]))
    with torch.no_grad():
        torch.testing.assert_close(
            model.predict_logits(sub, items[:2]), model.predict_logits(state, items)[[2, 0]]
        )


@pytest.mark.parametrize("key", ["next", "current"])
@pytest.mark.parametrize("items_option", ["none", "rasch"])
def test_candidates_sharing_concepts_are_predicted_as_each_alone(key, items_option):
    """``predict_logits`` computes the volumes and the second LSTM's step once per distinct
    concept row among the candidates: every item's logit equals its logit asked alone, with
    item difficulties that differ within a row, for one candidate list or one per learner."""
    vocab = Vocab(
        items=[f"i{k}" for k in range(1, 9)],
        concepts=["c1", "c2"],
        item_concepts=np.array(
            [[0, 0], [1, 0], [1, 0], [2, 0], [2, 0], [1, 2], [1, 2], [0, 0], [2, 0]]
        ),
    )
    torch.manual_seed(4)
    opts = {"H": 5, "hidden": 20, "k": 3, "history_key": key, "items": items_option}
    model = build_model("cakt", vocab, make_config("cakt", opts)).eval()
    if model.rasch is not None:
        with torch.no_grad():
            model.rasch.mu.weight[1:] = torch.linspace(-1.0, 1.0, 8).unsqueeze(1)
    state = model.init_state(3)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(6):
            item = torch.randint(1, 9, (3,), generator=gen)
            state = model.step(state, item, (torch.rand(3, generator=gen) < 0.6).float())
        every = torch.arange(1, 9).expand(3, -1)
        mixed = torch.tensor([[1, 2, 2, 7, 3], [4, 3, 4, 8, 1], [6, 5, 6, 6, 2]])
        got = {}
        for name, items in (("every", every), ("mixed", mixed)):
            got[name] = together = model.predict_logits(state, items)
            alone = torch.stack(
                [
                    model.predict_logits(state, items[:, j : j + 1])[:, 0]
                    for j in range(items.shape[1])
                ],
                1,
            )
            torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
            # and as every candidate's own volumes and step give it
            z, _, _ = model._lstm2_step(state, model._fused_next(state, items))
            full = model._item_logits(z, items)
            torch.testing.assert_close(together, full, atol=1e-5, rtol=1e-5)
    # items 1 and 2 share their concepts: told apart by their difficulties alone
    gap = (got["every"][:, 0] - got["every"][:, 1]).abs().max()
    assert gap > 1e-4 if model.rasch is not None else gap < 1e-6


def test_decay_weights_are_positive_and_learnable():
    torch.manual_seed(0)
    model = CAKT(CAKTConfig(k=4, decay_init=0.3), VOCAB)
    w = model.frame_weights()
    assert (w > 0).all() and w[-1] == 1.0
    assert (w[1:] > w[:-1]).all()  # older frames weigh less
    torch.testing.assert_close(w, torch.exp(-0.3 * torch.tensor([3.0, 2.0, 1.0, 0.0])))
    batch = _batch([[1, 1, 2, 1, 3, 1, 1, 2]], [[1, 0, 1, 1, 0, 1, 1, 0]])
    logits = model(batch)
    model.loss(batch, logits).backward()
    assert model.theta_raw.grad is not None and model.theta_raw.grad.abs() > 0
    # theta stays positive whatever the raw parameter
    with torch.no_grad():
        model.theta_raw.fill_(-30.0)
    assert (model.frame_weights() > 0).all() and (model.frame_weights() <= 1).all()
    flat = CAKT(CAKTConfig(k=4, decay=False), VOCAB)
    assert torch.equal(flat.frame_weights(), torch.ones(4))
    assert flat.theta_raw is None  # no unused parameter (DistributedDataParallel)
    assert (
        sum(p.numel() for p in flat.parameters()) == sum(p.numel() for p in model.parameters()) - 1
    )


def test_frame_conv_equals_conv3d():
    torch.manual_seed(0)
    for size, c_in, c_out, k in ((3, 1, 4, 4), (3, 8, 8, 4), (1, 4, 8, 3), (3, 2, 3, 1)):
        fc = _FrameConv(c_in, c_out, k, size)
        ref = nn.Conv3d(c_in, c_out, size, padding=size // 2)
        with torch.no_grad():
            ref.weight.copy_(fc.weight)
            fc.bias.normal_()
            ref.bias.copy_(fc.bias)
        x = torch.randn(5, c_in, k, 7, 7)
        y = fc(x.reshape(5, c_in * k, 7, 7)).reshape(5, c_out, k, 7, 7)
        torch.testing.assert_close(y, ref(x), atol=1e-5, rtol=1e-5)


def test_chunked_cnn_matches_in_values_and_gradients(monkeypatch):
    rows = [[1, 2, 1, 3, 1, 4, 2, 1, 3, 4, 1, 2], [3, 3, 2, 4, 4, 1]]
    corr = [[1, 0, 1, 1, 0, 0, 1, 1, 0, 1, 1, 0], [0, 1, 1, 0, 1, 1]]
    batch = _batch(rows, corr)
    torch.manual_seed(0)
    model = CAKT(CAKTConfig(H=4, hidden=16), VOCAB)
    results = []
    for chunk in (10_000, 3):
        monkeypatch.setattr(cakt_mod, "_CNN_CHUNK", chunk)
        model.zero_grad()
        logits = model(batch)
        model.loss(batch, logits).backward()
        grads = [p.grad.clone() for p in model.cnn.parameters()]
        results.append((logits.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_parameter_count():
    cfg = CAKTConfig()
    model = CAKT(cfg, VOCAB)
    n_c, e, h, k = VOCAB.n_concepts + 1, 225, 225, 4
    lstm = lambda i, o: 4 * o * (i + o) + 8 * o  # noqa: E731
    cnn = 0
    for ci, co in ((1, 4), (4, 8), (8, 4), (4, 1)):
        cnn += 27 * ci * co + co + 27 * co * co + co + 2 * k * (k // 2)
        cnn += ci * co + co if ci != co else 0
    want = (
        2 * n_c * e  # answer embedding
        + lstm(e, h)  # first LSTM
        + cnn
        + 1  # decay
        + 2 * (2 * h * h + h)  # two gates (projection: identity as D = hidden)
        + lstm(h, h)  # second LSTM
        + (h + 1) * n_c  # readout
    )
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == want
    assert sum(p.numel() for p in model.cnn.parameters()) == cnn < 10_000
    assert 900_000 < n_params < 1_100_000  # the LSTMs and gates dominate
    # a learning-curve feature of another size is projected to the LSTM size
    small = CAKT(CAKTConfig(H=5, hidden=32, channels="4,2"), VOCAB)
    assert small.D == 50 and isinstance(small.proj, nn.Linear)
    assert small.proj.weight.shape == (32, 50)


def test_concept_vectors_and_bad_options():
    model = CAKT(CAKTConfig(), VOCAB)
    cv = model.concept_vectors()
    assert cv.shape == (VOCAB.n_concepts, 225)
    assert torch.equal(cv, model.out.weight.detach()[1:])
    with pytest.raises(ValueError, match="history_key"):
        CAKT(CAKTConfig(history_key="previous"), VOCAB)
    assert make_config("cakt", {"history_key": "current", "k": "8"}).k == 8
