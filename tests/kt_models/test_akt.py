"""AKT's own checks beside the interface tests: the banded attention in chunks, and serving
equal to the forward pass with several blocks over histories longer than its buffer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kt_models import akt
from kt_models.base import build_model, make_config
from kt_models.data import load_sequences, make_batch
from kt_models.predictions import predict_multi_step

SMALL = {"d_model": 16, "heads": 2, "d_ff": 16, "final_fc": 16}


def _model(vocab, **options):  # noqa: ANN001, ANN202
    torch.manual_seed(0)
    model = build_model("akt", vocab, make_config("akt", {**SMALL, **options})).eval()
    with torch.no_grad():
        model.mu.weight[1:].normal_(0.0, 1.0)
    return model


def test_chunks_of_queries_give_the_same_logits(skill_dataset, monkeypatch):
    seqs, vocab = load_sequences(skill_dataset)
    model = _model(vocab, window=4)
    batch = make_batch(seqs, np.arange(10))
    with torch.no_grad():
        whole = model(batch)
        monkeypatch.setattr(akt, "_CHUNK", 1)  # chunks of `window` queries
        chunked = model(batch)
        monkeypatch.setattr(akt, "_BUDGET", 1)  # one query per call (a large batch)
        single = model(batch)
    m = batch.mask
    torch.testing.assert_close(chunked[m], whole[m], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(single[m], whole[m], atol=1e-5, rtol=1e-5)


def test_two_blocks_serve_as_they_train_past_the_buffer(skill_dataset):
    seqs, vocab = load_sequences(skill_dataset)
    model = _model(vocab, window=3, n_blocks=2)
    assert model.buffer == 12  # 3 + 5 * (2 - 1) + 2 * 2: what the bands reach
    users = np.arange(8)
    batch = make_batch(seqs, users)
    assert int(batch.mask.sum(1).min()) > model.buffer  # every history longer than it
    with torch.no_grad():
        logits = model(batch)
    state = model.init_state(len(users))
    inc = torch.zeros_like(logits)
    for t in range(batch.item.shape[1]):
        inc[:, t] = model.predict_logits(state, batch.item[:, t : t + 1])[:, 0]
        state = model.step(state, batch.item[:, t], batch.correct[:, t], batch.time[:, t])
    m = batch.mask
    torch.testing.assert_close(inc[m], logits[m], atol=1e-5, rtol=1e-5)


def test_the_window_bounds_what_a_prediction_sees(skill_dataset):
    """Answers further back than the layers' reach (the serving buffer) change nothing."""
    seqs, vocab = load_sequences(skill_dataset)
    model = _model(vocab, window=2)
    batch = make_batch(seqs, np.arange(6))
    flipped = make_batch(seqs, np.arange(6))
    flipped.correct[:, :3] = 1.0 - flipped.correct[:, :3]  # the first three answers
    with torch.no_grad():
        a, b = model(batch), model(flipped)
    reach = model.buffer  # 3 with a window of 2: from 3 + 3 on none sees the flipped ones
    m = batch.mask[:, 3 + reach :]
    torch.testing.assert_close(a[:, 3 + reach :][m], b[:, 3 + reach :][m])
    assert not torch.allclose(a[:, 4], b[:, 4])  # within reach they do


def test_the_one_pass_multi_step_equals_the_serving_loop(skill_dataset, monkeypatch):
    """``multi_step_logits`` (the 10-step evaluation's fast form) gives what the serving
    loop gives, cut by cut, with two blocks, histories past the buffer, a learner batch of
    several lengths, a horizon that does not divide them and cuts taken one at a time."""
    seqs, vocab = load_sequences(skill_dataset)
    model = _model(vocab, window=3, n_blocks=2)
    users = np.arange(12)
    step = model.step

    def no_step(*_args):  # noqa: ANN002, ANN202
        raise AssertionError("the one-pass form stepped the serving state")

    for n in (1, 4, 7, 3):
        if n == 3:
            monkeypatch.setattr(akt, "_BUDGET", 1)  # one (learner, cut) pair per call
        monkeypatch.setattr(model, "step", no_step)
        fast = predict_multi_step(model, seqs, users, n, torch.device("cpu"), max_batch=5)
        monkeypatch.setattr(model, "step", step)
        loop = predict_multi_step(
            model, seqs, users, n, torch.device("cpu"), max_batch=5, serving=True
        )
        assert len(fast[1]) == len(loop[1]) > 0
        np.testing.assert_array_equal(fast[0], loop[0])
        np.testing.assert_array_equal(fast[2], loop[2])
        np.testing.assert_allclose(fast[1], loop[1], atol=1e-5, rtol=0)
    assert model.multi_step_logits(make_batch(seqs, users[:2]), 10_000).abs().sum() == 0
    with pytest.raises(ValueError, match="at least 1 answer"):
        predict_multi_step(model, seqs, users, 0, torch.device("cpu"))


def _count_encodings(model) -> list:  # noqa: ANN001
    """A list that gets an entry per run of ``model``'s encoders (an encoded history)."""
    calls: list = []
    encode = model._encode

    def counted(*args, **kw):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        return encode(*args, **kw)

    model._encode = counted
    return calls


def test_encoded_histories_are_kept_by_content_for_recent_learners(skill_dataset, monkeypatch):
    """A state decoded anew (a copy, as the next request reads it) and each learner of a
    batch reuse what was encoded for the same content; at most KEPT_HISTORIES are kept,
    the least recently used dropped first; the predictions equal a fresh model's."""
    from kt_models import akt

    monkeypatch.setattr(akt, "KEPT_HISTORIES", 3)
    seqs, vocab = load_sequences(skill_dataset)
    model = _model(vocab).eval()
    fresh = _model(vocab).eval()
    fresh.load_state_dict(model.state_dict())
    batch = make_batch(seqs, np.arange(5))
    states = []
    for n in range(5):
        st = model.init_state(1)
        for t in range(3 + n):
            st = model.step(st, batch.item[n : n + 1, t], batch.correct[n : n + 1, t])
        states.append(st)
    b = torch.arange(1, vocab.n_items + 1).unsqueeze(0)
    calls = _count_encodings(model)
    with torch.no_grad():
        for st in states[:3]:
            model.predict(st, b)
        assert len(calls) == 3
        for st in states[:3]:  # copies, as decoded from the stored bytes
            copy = (st[0].clone(), st[1].clone())
            torch.testing.assert_close(model.predict(copy, b), fresh.predict(st, b))
        assert len(calls) == 3
        # a batch of learners: each learner's copy is looked up (and kept) too
        both = tuple(torch.cat([states[1][k], states[3][k]]) for k in range(2))
        torch.testing.assert_close(
            model.predict(both, b.expand(2, -1)), fresh.predict(both, b.expand(2, -1))
        )
        assert len(calls) == 4  # states[3] only; states[0] (least recently used) dropped
        assert len(model._kept) == 3
        model.predict(states[0], b)
        assert len(calls) == 5
        model.predict(states[1], b)
        assert len(calls) == 5
        # a batch larger than what is kept looks its learners up but keeps none of the rest
        kept = list(model._kept._entries)
        four = tuple(torch.cat([states[k][j] for k in (0, 1, 2, 4)]) for j in range(2))
        torch.testing.assert_close(
            model.predict(four, b.expand(4, -1)), fresh.predict(four, b.expand(4, -1))
        )
        assert len(calls) == 7  # states[2] and states[4]; states[0] and states[1] were kept
        assert sorted(model._kept._entries) == sorted(kept)


def test_the_encoded_history_is_reused_only_for_the_same_unchanged_state(skill_dataset):
    """``predict`` keeps recent states' encoded histories by content: a second question
    about the same state reuses it, and a different state, a state changed in place or
    changed weights are encoded again (each compared with a model that never saw the state
    before)."""
    seqs, vocab = load_sequences(skill_dataset)
    model = _model(vocab).eval()
    fresh = _model(vocab).eval()
    fresh.load_state_dict(model.state_dict())
    batch = make_batch(seqs, np.arange(1))
    state = model.init_state(1)
    for t in range(7):
        state = model.step(state, batch.item[:, t], batch.correct[:, t])
    a, b = torch.arange(1, 6).unsqueeze(0), torch.arange(6, vocab.n_items + 1).unsqueeze(0)
    calls = _count_encodings(model)
    with torch.no_grad():
        model.predict(state, a)
        torch.testing.assert_close(model.predict(state, b), fresh.predict(state, b))
        assert len(calls) == 1  # the second question reused the encoding
        other = (state[0].clone(), state[1].clone())
        other[1][0, -1] = 1 - other[1][0, -1]  # the last answer the other way
        torch.testing.assert_close(model.predict(other, b), fresh.predict(other, b))
        assert len(calls) == 2
        state[1][0, -2] = 1 - state[1][0, -2]  # changed in place: encoded again
        torch.testing.assert_close(model.predict(state, b), fresh.predict(state, b))
        assert len(calls) == 3
        torch.testing.assert_close(model.predict(other, a), fresh.predict(other, a))
        assert len(calls) == 3  # still kept
        model.knowledge[0].attn.v.weight.mul_(1.5)  # changed weights: encoded again
        fresh.knowledge[0].attn.v.weight.mul_(1.5)
        torch.testing.assert_close(model.predict(state, b), fresh.predict(state, b))
        assert len(calls) == 4
    with torch.inference_mode():  # tensors without a version counter: nothing kept
        made = (state[0].clone(), state[1].clone())
        torch.testing.assert_close(model.predict(made, b), fresh.predict(state, b))
        torch.testing.assert_close(model.predict(made, b), fresh.predict(state, b))
        assert len(calls) == 6
    with torch.no_grad():
        model.predict(state, a)
        assert len(calls) == 6  # what was kept before inference_mode still holds
        # another dtype (parameters converted in place, objects and versions kept): the
        # same state is encoded again, in that dtype
        model.double()
        assert model.predict(state, b).dtype == torch.float64
        assert len(calls) == 7
        model.float()
        # new parameter objects (load_state_dict with assign=True): encoded again
        model.predict(state, a)
        calls.clear()
        model.load_state_dict(
            {k: v.clone() * 1.1 for k, v in model.state_dict().items()}, assign=True
        )
        fresh.load_state_dict(model.state_dict())
        torch.testing.assert_close(model.predict(state, b), fresh.predict(state, b))
        assert len(calls) == 1
        # train mode (dropout): nothing kept
        model.train()
        model.predict(state, a)
        model.predict(state, a)
        assert len(calls) == 3
    model.eval()
    with torch.no_grad():
        model.predict(state, a)
    assert model._kept is not None and len(model._kept) == 1
    # what is kept is neither pickled nor copied
    import copy
    import io
    import pickle

    del model._encode  # the counting stand-in above
    copied = copy.deepcopy(model)
    assert copied._kept is None and len(model._kept) == 1
    restored = pickle.loads(pickle.dumps(model))
    with torch.no_grad():
        torch.testing.assert_close(restored.predict(state, b), model.predict(state, b))
    torch.save(model, io.BytesIO())
