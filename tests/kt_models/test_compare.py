"""Paired comparison of two models' test AUC: the bootstrap over learners and ``tutor compare``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from kt_models.evaluate import compare_runs, evaluate_run
from kt_models.metrics import paired_auc_bootstrap
from kt_models.train import TrainConfig, train
from tests.kt_models.conftest import write_skill_dataset
from tutor.cli import app


def _answers(
    seed: int = 0, n: int = 4000, learners: int = 200
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, learners, n)
    skill = rng.normal(0, 1, learners)[g]
    y = (rng.random(n) < 1 / (1 + np.exp(-skill))).astype(float)
    good = 1 / (1 + np.exp(-(skill + rng.normal(0, 0.5, n))))  # knows the learner's skill
    noisy = np.round(1 / (1 + np.exp(-(skill + rng.normal(0, 2.0, n)))), 2)  # ties, noise
    return y, good, noisy, g


def test_bootstrap_aucs_equal_the_rank_auc_with_ties_and_rank_a_better_model_first():
    y, good, noisy, g = _answers()
    r = paired_auc_bootstrap(y, good, noisy, g, n_boot=300, seed=1)
    assert r["auc_a"] == pytest.approx(roc_auc_score(y, good), abs=1e-12)
    assert r["auc_b"] == pytest.approx(roc_auc_score(y, noisy), abs=1e-12)
    assert r["diff"] == pytest.approx(r["auc_a"] - r["auc_b"])
    assert 0 < r["ci_low"] < r["diff"] < r["ci_high"] and r["p_le_0"] == 0.0
    assert r["learners"] == 200 and r["answers"] == len(y)
    back = paired_auc_bootstrap(y, noisy, good, g, n_boot=300, seed=1)  # the same draws
    assert back["ci_high"] == pytest.approx(-r["ci_low"]) and back["p_le_0"] == 1.0
    assert paired_auc_bootstrap(y, good, noisy, g, n_boot=300, seed=1) == r  # seeded


def test_bootstrap_of_a_model_against_itself_is_exactly_zero():
    y, good, _, g = _answers(2)
    r = paired_auc_bootstrap(y, good, good.copy(), g, n_boot=50)
    assert r["diff"] == 0 and r["ci_low"] == 0 and r["ci_high"] == 0 and r["p_le_0"] == 1.0


def test_bootstrap_resamples_learners_not_answers():
    """One learner's answers move together: a learner-level interval is wider than an
    answer-level one when predictions differ by learner."""
    y, good, noisy, g = _answers(3, n=6000, learners=30)
    per_learner = paired_auc_bootstrap(y, good, noisy, g, n_boot=400, seed=0)
    per_answer = paired_auc_bootstrap(y, good, noisy, np.arange(len(y)), n_boot=400, seed=0)
    width = per_learner["ci_high"] - per_learner["ci_low"]
    assert width > 1.3 * (per_answer["ci_high"] - per_answer["ci_low"])


def test_bootstrap_refuses_misaligned_input():
    y, good, noisy, g = _answers()
    with pytest.raises(ValueError, match="differ in length"):
        paired_auc_bootstrap(y, good, noisy[:-1], g)
    with pytest.raises(ValueError, match="level"):
        paired_auc_bootstrap(y, good, noisy, g, level=1.5)
    with pytest.raises(ValueError, match="n_boot"):
        paired_auc_bootstrap(y, good, noisy, g, n_boot=0)
    with pytest.raises(ValueError, match="finite"):
        paired_auc_bootstrap(y, np.where(g == 0, np.nan, good), noisy, g)
    with pytest.raises(ValueError, match="one class"):
        paired_auc_bootstrap(np.ones_like(y), good, noisy, g)


def test_bootstrap_skips_replicates_without_both_classes():
    """Two learners, one always right and one always wrong: a replicate drawing one of them
    twice has no AUC; it is counted, not read as a win."""
    y = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    g = np.array([0, 0, 0, 1, 1, 1])
    p_a, p_b = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1]), np.array([0.6, 0.5, 0.4, 0.5, 0.4, 0.3])
    r = paired_auc_bootstrap(y, p_a, p_b, g, n_boot=200, seed=0)
    assert 50 < r["degenerate_replicates"] < 150  # about half draw a single learner
    assert r["diff"] == pytest.approx(1.0 - 7.0 / 9) and r["p_le_0"] == 0.0


@pytest.fixture(scope="module")
def two_runs(skill_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare")
    runs = {}
    for name, over in (("dkt", {"hidden": 16, "emb_dim": 8}), ("logistic", {})):
        run = root / name
        cfg = TrainConfig(epochs=2, patience=2, seed=5, lr=5e-3 if name == "dkt" else None)
        train(name, skill_dataset, run, config=cfg, model_overrides=over, progress=False)
        runs[name] = run
    return runs


def test_compare_runs_uses_the_test_learners_of_both_runs(two_runs):
    a, b = two_runs["dkt"], two_runs["logistic"]
    [r] = compare_runs(a, [b], n_boot=100, device="cpu")
    ea = evaluate_run(a, multi_step=0, device="cpu")["test"]
    eb = evaluate_run(b, multi_step=0, device="cpu")["test"]
    assert r["auc_a"] == pytest.approx(ea["auc"], abs=1e-9)
    assert r["auc_b"] == pytest.approx(eb["auc"], abs=1e-9)
    assert r["answers"] == ea["n"] and r["model_b"] == "logistic"
    assert r["model_a"] == "dkt emb_dim=8 hidden=16"  # the options it changed, named
    assert r["ci_low"] <= r["diff"] <= r["ci_high"]


def test_compare_refuses_runs_of_different_datasets(two_runs, tmp_path):
    other = write_skill_dataset(tmp_path / "other", learners=40, seed=9)
    run = tmp_path / "run-other"
    train("logistic", other, run, config=TrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match="different test learners"):
        compare_runs(two_runs["dkt"], [two_runs["logistic"], run], n_boot=10, device="cpu")


def test_tutor_compare_prints_the_difference_and_fails_clearly(two_runs, tmp_path):
    runner = CliRunner()
    r = runner.invoke(
        app,
        ["compare", str(two_runs["dkt"]), str(two_runs["logistic"]), "--boot", "50"],
    )
    assert r.exit_code == 0, r.output
    auc = evaluate_run(two_runs["dkt"], multi_step=0, device="cpu")["test"]["auc"]
    assert f"{auc:.4f}" in r.output and "95% interval" in r.output
    r = runner.invoke(app, ["compare", str(two_runs["dkt"]), str(tmp_path / "missing")])
    assert r.exit_code == 2 and "missing" in r.output
    r = runner.invoke(app, ["compare", str(two_runs["dkt"]), str(two_runs["dkt"]), "--boot", "0"])
    assert r.exit_code == 2 and "--boot" in r.output
