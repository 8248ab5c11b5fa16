"""Every registered model: serving equals training forward, learning, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kt_models.base import (
    CheckpointError,
    build_model,
    load_checkpoint,
    make_config,
    prediction_mask,
    save_checkpoint,
)
from kt_models.data import load_sequences, make_batch, split_learners
from kt_models.metrics import metrics
from kt_models.registry import model_names
from kt_models.train import TrainConfig, predict_next_step, train

#: every model with its default options, and every item-aware option (``items='rasch'``)
#: AKT at test size (its defaults: d_model 256 and a window of 200 answers); a window shorter
#: than the histories (20-40 answers) checks the band of its attention
AKT_SMALL = {"d_model": 32, "heads": 4, "d_ff": 32, "final_fc": 32, "window": 12}
VARIANTS = (
    [pytest.param(n, {}, id=n) for n in model_names() if n != "akt"]
    + [
        pytest.param(n, {"items": "rasch"}, id=f"{n}[items=rasch]")
        for n in ("dkt", "cakt", "psikt")
    ]
    + [
        pytest.param("akt", AKT_SMALL, id="akt[small]"),
        pytest.param("akt", {**AKT_SMALL, "items": "none"}, id="akt[small,items=none]"),
    ]
)


def _vary_items(model: torch.nn.Module) -> None:
    """Item difficulties start at 0 (the concept's level): set them apart, so that the item
    terms of an item-aware option are exercised."""
    rasch = getattr(model, "rasch", None)
    mu = rasch.mu if rasch is not None else getattr(model, "mu", None)
    if isinstance(mu, torch.nn.Embedding):
        with torch.no_grad():
            mu.weight[1:].normal_(0.0, 1.0)


@pytest.mark.parametrize(("name", "options"), VARIANTS)
def test_incremental_equals_batch_forward(name, options, skill_dataset):
    torch.manual_seed(0)
    seqs, vocab = load_sequences(skill_dataset)
    model = build_model(name, vocab, make_config(name, options)).eval()
    _vary_items(model)
    users = np.arange(12)
    batch = make_batch(seqs, users)
    with torch.no_grad():
        logits = model(batch)
    state = model.init_state(len(users))
    inc = torch.zeros_like(logits)
    for t in range(batch.item.shape[1]):
        inc[:, t] = model.predict_logits(
            state, batch.item[:, t : t + 1], at_time=batch.time[:, t : t + 1]
        )[:, 0]
        state = model.step(state, batch.item[:, t], batch.correct[:, t], batch.time[:, t])
    m = batch.mask
    torch.testing.assert_close(inc[m], logits[m], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("name", "options"), VARIANTS)
def test_a_concept_level_model_predicts_alike_for_items_of_one_concept_set(
    name, options, skill_dataset
):
    """``concept_level`` (the service predicts once per concept set) is true to the model:
    after some answers, items with the same concepts get the same prediction."""
    torch.manual_seed(0)
    seqs, vocab = load_sequences(skill_dataset)
    model = build_model(name, vocab, make_config(name, options)).eval()
    for p in model.parameters():  # random weights: no term may hide at its initial value
        torch.nn.init.normal_(p, std=0.3)
    batch = make_batch(seqs, np.arange(4))
    state = model.init_state(4)
    with torch.no_grad():
        for t in range(6):
            state = model.step(state, batch.item[:, t], batch.correct[:, t], batch.time[:, t])
        items = torch.arange(vocab.n_items + 1).unsqueeze(0).expand(4, -1)
        p = model.predict_logits(state, items, at_time=batch.time[:, 6:7].expand_as(items))
    q = np.sort(np.asarray(vocab.item_concepts), axis=1)
    spread = max(
        float((p[:, idx].max(1).values - p[:, idx].min(1).values).max())
        for idx in (np.flatnonzero((q == key).all(1)) for key in np.unique(q, axis=0))
    )
    if model.concept_level:
        assert spread < 1e-5
    else:  # declared per item: it does tell some items of one concept set apart
        assert spread > 1e-4, f"{name} predicts per concept set: declare concept_level"


@pytest.mark.parametrize(("name", "options"), VARIANTS)
def test_overfits_tiny_dataset(name, options, tiny_dataset):
    seqs, vocab = load_sequences(tiny_dataset)
    torch.manual_seed(0)
    model = build_model(name, vocab, make_config(name, options))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    users = np.arange(seqs.n_users)
    batch = make_batch(seqs, users)
    first, reached, auc = None, None, None
    # up to 150 updates; checked every 10th (every model here gets there in 10-20, and the
    # 150 updates CAKT took to the end cost 7 s a variant)
    for update in range(1, 151):
        model.train()
        loss = model.loss(batch, model(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = float(loss.detach()) if first is None else first
        if update % 10 == 0 and float(loss.detach()) < 0.8 * first:
            y, p = predict_next_step(model, seqs, users, torch.device("cpu"))
            auc = metrics(y, p)["auc"]
            if auc > 0.85:
                reached = update
                break
    assert reached is not None, f"loss {float(loss.detach()):.3f} from {first:.3f}, AUC {auc}"


@pytest.mark.parametrize(("name", "options"), VARIANTS)
def test_learns_simulated_skill_on_held_out_learners(name, options, skill_dataset, tmp_path):
    cfg = TrainConfig(epochs=8, patience=8, lr=0.01, batch_tokens=4096, seed=1)
    train(
        name,
        skill_dataset,
        tmp_path / "run",
        config=cfg,
        model_overrides=options,
        progress=False,
        log=lambda s: None,
    )
    model, _ = load_checkpoint(tmp_path / "run" / "best.pt")
    seqs, _ = load_sequences(skill_dataset, vocab=model.vocab)
    split = split_learners(seqs, seed=1)
    y, p = predict_next_step(model, seqs, split.test, torch.device("cpu"))
    assert metrics(y, p)["auc"] > 0.6


@pytest.mark.parametrize(("name", "options"), VARIANTS)
def test_checkpoint_round_trip(name, options, skill_dataset, tmp_path):
    seqs, vocab = load_sequences(skill_dataset)
    torch.manual_seed(3)
    model = build_model(name, vocab, make_config(name, options)).eval()
    _vary_items(model)
    path = tmp_path / "m.pt"
    save_checkpoint(model, path, manifest={"format": "test"})
    loaded, payload = load_checkpoint(path)
    assert payload["manifest"] == {"format": "test"}
    batch = make_batch(seqs, np.arange(5))
    with torch.no_grad():
        a, b = model(batch), loaded(batch)
    m = prediction_mask(batch)
    torch.testing.assert_close(a[m], b[m])


def test_bad_checkpoints_refused(skill_dataset, tmp_path):
    seqs, vocab = load_sequences(skill_dataset)
    model = build_model("dkt", vocab)
    path = tmp_path / "m.pt"
    save_checkpoint(model, path)
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.pt")
    payload = torch.load(path, weights_only=False)
    payload["model"] = "nosuchmodel"
    torch.save(payload, tmp_path / "name.pt")
    with pytest.raises(CheckpointError, match="unknown model 'nosuchmodel'"):
        load_checkpoint(tmp_path / "name.pt")
    payload = torch.load(path, weights_only=False)
    payload["vocab"]["items"] = payload["vocab"]["items"][:-1]
    payload["vocab"]["item_concepts"] = payload["vocab"]["item_concepts"][:-1]
    torch.save(payload, tmp_path / "vocab.pt")
    with pytest.raises(CheckpointError, match="vocabulary mismatch: 19 items"):
        load_checkpoint(tmp_path / "vocab.pt")
    payload = torch.load(path, weights_only=False)
    payload["vocab"]["items"][0] = "renamed"
    torch.save(payload, tmp_path / "ids.pt")
    with pytest.raises(CheckpointError, match="vocabulary mismatch: ids differ"):
        load_checkpoint(tmp_path / "ids.pt")
    payload = torch.load(path, weights_only=False)
    payload["state_dict"]["out.weight"] = payload["state_dict"]["out.weight"][:-1]
    torch.save(payload, tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    ("name", "options"),
    [
        pytest.param("dkt", {}, id="dkt"),
        pytest.param("dkt+", {}, id="dkt+"),
        pytest.param("dkt", {"input_kind": "item", "layers": 2}, id="dkt[item,2 layers]"),
    ],
)
def test_numpy_step_equals_batch_forward(name, options, skill_dataset):
    """The numpy step a server folds one answer with (``numpy_step``) walks each learner
    through the states the batch forward predicts from (items with two concepts included)."""
    torch.manual_seed(0)
    seqs, vocab = load_sequences(skill_dataset)
    model = build_model(name, vocab, make_config(name, options)).eval()
    kernel = model.numpy_step()
    assert kernel is not None
    batch = make_batch(seqs, np.arange(6))
    with torch.no_grad():
        logits = model(batch)
    assert (vocab.item_concepts[:, 1] > 0).any()  # multi-concept items are exercised
    for b in range(6):
        leaves = [t.numpy() for t in model.init_state(1)]
        for t in range(int(batch.mask[b].nonzero().max()) + 1):
            state = tuple(torch.from_numpy(a) for a in leaves)
            with torch.no_grad():
                got = model.predict_logits(state, batch.item[b : b + 1, t : t + 1])[0, 0]
            torch.testing.assert_close(got, logits[b, t], atol=1e-5, rtol=1e-5)
            item, right = int(batch.item[b, t]), int(batch.correct[b, t])
            leaves = kernel(leaves, item, right, float(batch.time[b, t]))
            assert [a.dtype for a in leaves] == [np.float32, np.float32]


def test_numpy_step_only_where_the_inputs_are_per_concept_set(skill_dataset):
    """Item-aware DKT varies its inputs per item: served by ``step``; so are the other
    models (no numpy step of their own)."""
    _, vocab = load_sequences(skill_dataset)
    assert build_model("dkt", vocab, make_config("dkt", {"items": "rasch"})).numpy_step() is None
    assert build_model("psikt", vocab, make_config("psikt", {})).numpy_step() is None
