"""Training with an exponential moving average of the weights (``TrainConfig.ema``)."""

from __future__ import annotations

import pytest
import torch

from kt_models.base import load_checkpoint
from kt_models.train import (
    TrainConfig,
    _ema_update,
    ema_decay,
    optimizer_step,
    train,
    train_option,
)


def test_ema_update_is_the_moving_average():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in a.parameters()]
    _ema_update(a, b, 0.9)
    for e, old, q in zip(a.parameters(), before, b.parameters(), strict=True):
        torch.testing.assert_close(e, 0.9 * old + 0.1 * q.detach())


def test_ema_decay_warms_up_to_its_ceiling():
    assert ema_decay(0.995, 0) == pytest.approx(0.1)  # the first average is mostly the weights
    assert ema_decay(0.995, 90) == pytest.approx(91 / 100)
    assert ema_decay(0.995, 10_000) == 0.995
    steps = [ema_decay(0.999, t) for t in range(0, 20_000, 50)]
    assert steps == sorted(steps) and max(steps) == 0.999


def test_optimizer_step_moves_the_average_and_skips_non_finite_losses():
    torch.manual_seed(0)
    model, avg = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
    avg.load_state_dict(model.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    cfg = TrainConfig(grad_clip=1.0, ema=0.995)
    x = torch.randn(8, 3)
    w0 = model.weight.detach().clone()
    assert optimizer_step(model, opt, model(x).pow(2).mean(), cfg, avg, 0)
    w = model.weight.detach().clone()
    assert not torch.equal(w, w0)
    # decay 0.1 at step 0: the average moved 90% of the way to the new weights
    torch.testing.assert_close(avg.weight.detach(), 0.1 * w0 + 0.9 * w)
    before = avg.weight.detach().clone()
    assert not optimizer_step(model, opt, model(x).sum() * float("nan"), cfg, avg, 1)
    assert torch.equal(model.weight.detach(), w) and torch.equal(avg.weight.detach(), before)


def test_ema_weights_are_validated_checkpointed_and_resumed(skill_dataset, tmp_path):
    run = tmp_path / "run"
    over = {"hidden": 16, "emb_dim": 8}
    one = TrainConfig(epochs=1, patience=5, seed=3, ema=0.9)
    res = train("dkt", skill_dataset, run, config=one, model_overrides=over, progress=False)
    last = torch.load(run / "last.pt", weights_only=False)
    ema, raw = last["ema_state_dict"], last["state_dict"]
    assert any(not torch.equal(ema[k], raw[k]) for k in raw)  # the average lags the weights
    returned = res["model"].state_dict()
    assert all(torch.equal(returned[k].cpu(), ema[k]) for k in ema)
    best, _ = load_checkpoint(run / "best.pt")  # epoch 1 is always the best so far
    assert all(torch.equal(best.state_dict()[k], ema[k]) for k in ema)
    more = TrainConfig(epochs=3, patience=5, seed=3, ema=0.9)
    res2 = train(
        "dkt", skill_dataset, run, config=more, model_overrides=over, resume=True, progress=False
    )
    assert [e["epoch"] for e in res2["epochs"]] == [2, 3]
    # the warm-up counter survives the resume: three epochs' steps in all
    after = torch.load(run / "last.pt", weights_only=False)["ema_steps"]
    assert last["ema_steps"] > 0 and after == 3 * last["ema_steps"]
    off = TrainConfig(epochs=1, patience=5, seed=3, ema=0.0)
    train("dkt", skill_dataset, tmp_path / "off", config=off, model_overrides=over, progress=False)
    assert torch.load(tmp_path / "off" / "last.pt", weights_only=False)["ema_state_dict"] is None
    with pytest.raises(ValueError, match="ema"):
        train("dkt", skill_dataset, tmp_path / "bad", config=TrainConfig(epochs=1, ema=1.0))


def test_train_option_types_text_like_the_field():
    assert train_option("ema", "0.995") == 0.995
    assert train_option("batch_tokens", "2048") == 2048
    assert train_option("max_len", "none") is None and train_option("max_len", "50") == 50
    assert train_option("lr", "1e-3") == 1e-3 and train_option("device", "cpu") == "cpu"
    assert train_option("weight_decay", "1e-5") == 1e-5
    assert train_option("epochs", 7) == 7  # a config file's typed value passes as it is
    with pytest.raises(ValueError, match="unknown training option 'colour'"):
        train_option("colour", "red")
    with pytest.raises(ValueError, match="'batch_tokens'"):
        train_option("batch_tokens", "many")


def test_weight_decay_defaults_to_the_model_class_and_can_be_overridden(skill_dataset, tmp_path):
    def decay(name: str, run: str, over: dict, **kw) -> float:
        cfg = TrainConfig(epochs=1, seed=3, **kw)
        train(name, skill_dataset, tmp_path / run, config=cfg, model_overrides=over, progress=False)
        last = torch.load(tmp_path / run / "last.pt", weights_only=False)
        return last["optimizer"]["param_groups"][0]["weight_decay"]

    cakt, dkt = {"H": 3, "hidden": 9}, {"hidden": 8, "emb_dim": 4}
    assert decay("cakt", "c", cakt) == 1e-5  # CAKT's default_weight_decay
    assert decay("cakt", "c0", cakt, weight_decay=0.0) == 0.0  # an explicit 0 is not "unset"
    assert decay("dkt", "d", dkt) == 1e-5  # DKT's too
    assert decay("dkt", "d1", dkt, weight_decay=1e-4) == 1e-4
    assert decay("logistic", "l", {}) == 0.0  # the base class's: none
