"""The item-aware option (``items='rasch'``, kt_models.items): options, and that the
difficulties learned tell a concept's easy items from its hard ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kt_models.base import build_model, load_checkpoint, make_config
from kt_models.data import load_sequences, make_batch, split_learners
from kt_models.metrics import metrics
from kt_models.train import TrainConfig, predict_next_step, train

from .conftest import item_difficulties, write_skill_dataset


def test_unknown_items_option_is_refused(skill_dataset):
    _, vocab = load_sequences(skill_dataset)
    with pytest.raises(ValueError, match="items must be one of none, rasch, got 'irt'"):
        build_model("dkt", vocab, make_config("dkt", {"items": "irt"}))
    with pytest.raises(ValueError, match="needs input_kind='concept'"):
        build_model("dkt", vocab, make_config("dkt", {"items": "rasch", "input_kind": "item"}))
    with pytest.raises(ValueError, match="item_l2 must be >= 0"):
        build_model("cakt", vocab, make_config("cakt", {"items": "rasch", "item_l2": "-1"}))


def test_the_option_declares_per_item_predictions(skill_dataset):
    _, vocab = load_sequences(skill_dataset)
    plain = build_model("dkt", vocab)
    rasch = build_model("dkt", vocab, make_config("dkt", {"items": "rasch"}))
    assert plain.concept_level and not plain.item_aware
    assert not rasch.concept_level and rasch.item_aware
    assert type(rasch).concept_level  # the class keeps its default


@pytest.fixture(scope="module")
def graded_items(tmp_path_factory):
    """Two concepts of 8 items each, difficulties ~N(0, 1): items carry information."""
    path = write_skill_dataset(
        tmp_path_factory.mktemp("kt") / "graded",
        learners=300,
        concepts=2,
        items_per_concept=8,
        multi_concept=False,
        seed=5,
    )
    return path, item_difficulties(5, 16)


@pytest.mark.parametrize(("name", "options"), [("dkt", {}), ("psikt", {})], ids=["dkt", "psikt"])
def test_learned_difficulties_order_a_concepts_items(name, options, graded_items, tmp_path):
    """Trained on answers whose items differ in difficulty, the item-aware form predicts a
    concept's items apart, in the order of their true difficulty, and predicts held-out
    learners better than its concept-level form (PSI-KT has item difficulties without the
    option: there the option adds the input side and the penalty, and must not lose)."""
    path, truth = graded_items
    cfg = TrainConfig(epochs=10, patience=10, lr=0.01, batch_tokens=4096, seed=1)
    aucs, concept_level = {}, {}
    for items in ("none", "rasch"):
        run = tmp_path / items
        train(
            name,
            path,
            run,
            config=cfg,
            model_overrides={**options, "items": items},
            progress=False,
            log=lambda s: None,
        )
        model, _ = load_checkpoint(run / "best.pt")
        seqs, vocab = load_sequences(path, vocab=model.vocab)
        split = split_learners(seqs, seed=1)
        y, p = predict_next_step(model, seqs, split.test, torch.device("cpu"))
        aucs[items] = metrics(y, p)["auc"]
        concept_level[items] = model.concept_level
    # predicted success on every item, averaged over the test learners after their answers
    test_batch = make_batch(seqs, split.test)
    idx = torch.as_tensor(vocab.item_index([f"i{i}" for i in range(16)]))
    n = len(split.test)
    state = model.init_state(n)
    with torch.no_grad():
        for t in range(test_batch.item.shape[1]):
            live = test_batch.mask[:, t]
            stepped = model.step(
                state, test_batch.item[:, t], test_batch.correct[:, t], test_batch.time[:, t]
            )
            state = _where(live, stepped, state)
        last = test_batch.time.max(1).values.unsqueeze(1).expand(n, 16)
        p = model.predict(state, idx.unsqueeze(0).expand(n, 16), at_time=last).mean(0).numpy()
    for concept in (0, 1):
        own = np.arange(8) + 8 * concept
        rho = np.corrcoef(np.argsort(np.argsort(p[own])), np.argsort(np.argsort(truth[own])))
        assert rho[0, 1] < -0.6, (concept, p[own], truth[own])
    margin = 0.01 if concept_level["none"] else -0.005
    assert aucs["rasch"] > aucs["none"] + margin, aucs


def _where(live: torch.Tensor, new, old):  # noqa: ANN001, ANN202
    """The states of ``new`` where ``live`` (learners whose history goes on), else ``old``
    (padding after a history's end leaves a learner as it was)."""
    if isinstance(new, torch.Tensor):
        shape = [1] * new.dim()
        axis = next(k for k, n in enumerate(new.shape) if n == len(live))
        shape[axis] = len(live)
        return torch.where(live.view(shape), new, old)
    if isinstance(new, dict):
        return {k: _where(live, new[k], old[k]) for k in new}
    return type(new)(_where(live, a, b) for a, b in zip(new, old, strict=True))
