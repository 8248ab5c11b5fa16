"""``tutor train`` / ``tutor evaluate`` end to end: results.json, resume, early stopping."""

from __future__ import annotations

import json

import numpy as np
import torch
from typer.testing import CliRunner

from tutor.cli import app

runner = CliRunner()


def _train(model: str, data, out, *options: str):
    """``tutor train -m MODEL -d DATA -O OUT OPTIONS...`` through the CLI runner."""
    return runner.invoke(app, ["train", "-m", model, "-d", str(data), "-O", str(out), *options])


def test_train_then_evaluate_writes_results(skill_dataset, tmp_path):
    run = tmp_path / "run"
    # the long option names, on purpose: the other tests use the short ones through _train
    r = runner.invoke(
        app,
        [
            "train",
            "--model",
            "dkt",
            "--data",
            str(skill_dataset),
            "--out",
            str(run),
            "--epochs",
            "2",
            "--seed",
            "7",
            "--set",
            "hidden=32",
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    assert {p.name for p in run.iterdir()} >= {"run.json", "metrics.jsonl", "best.pt", "last.pt"}
    info = json.loads((run / "run.json").read_text())
    assert info["model_config"]["hidden"] == 32 and info["train_config"]["seed"] == 7
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2] and 0 <= lines[-1]["valid_auc"] <= 1
    r = runner.invoke(app, ["evaluate", str(run), "--multi-step", "5"])
    assert r.exit_code == 0, r.output
    res = json.loads((run / "results.json").read_text())
    for k in ("auc", "acc", "rmse", "logloss", "ece"):
        assert 0 <= res["test"][k] <= 1 or k == "logloss"
    assert res["multi_step"]["horizon"] == 5 and res["learners"] > 0
    assert "dkt" in r.output
    for bad in ("-3", "1001"):  # a horizon out of range is refused before any work
        r = runner.invoke(app, ["evaluate", str(run), "--multi-step", bad])
        assert r.exit_code == 2 and "--multi-step" in r.output, r.output


def test_resume_continues_the_epoch_count(skill_dataset, tmp_path):
    run = tmp_path / "run"
    base = ("logistic", skill_dataset, run, "-q", "--patience", "10")
    assert _train(*base, "--epochs", "2").exit_code == 0
    r = _train(*base, "--epochs", "3", "--resume")
    assert r.exit_code == 0, r.output
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_early_stopping(skill_dataset, tmp_path):
    run = tmp_path / "run"
    options = ["-q", "--epochs", "10", "--patience", "1", "--lr", "0"]
    r = _train("logistic", skill_dataset, run, *options)
    assert r.exit_code == 0, r.output
    # with a zero learning rate the validation AUC never improves after epoch 1
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_unknown_model_and_option(skill_dataset, tmp_path):
    r = _train("nope", skill_dataset, tmp_path / "r", "-q")
    assert r.exit_code == 2 and "unknown model 'nope'" in r.output
    r = _train("dkt", skill_dataset, tmp_path / "r", "-q", "--set", "colour=red")
    assert r.exit_code == 2 and "no option 'colour'" in r.output


def test_train_with_progress_bars(skill_dataset, tmp_path):
    """Without -q the epoch progress bars (rich, data_loaders.progress) are drawn."""
    r = _train("dkt", skill_dataset, tmp_path / "r", "--epochs", "1")
    assert r.exit_code == 0, r.output
    assert "best validation AUC" in r.output


def test_resume_from_truncated_last_pt_is_a_clear_error(skill_dataset, tmp_path):
    run = tmp_path / "run"
    base = ("logistic", skill_dataset, run, "-q")
    assert _train(*base, "--epochs", "1").exit_code == 0
    last = run / "last.pt"
    # what --resume reads is plain data: it loads without unpickling objects
    state = torch.load(last, weights_only=True)
    assert state["epoch"] == 1 and isinstance(state["best_auc"], float)
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    r = _train(*base, "--epochs", "2", "--resume")
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    out = " ".join(r.output.split())  # the console wraps long lines
    assert str(last) in "".join(r.output.split())
    assert "last.pt is truncated or corrupt" in out and "train without --resume" in out
    assert "Traceback" not in r.output
    # not a checkpoint at all: the same kind of message
    torch.save({"model": "logistic"}, last)
    r = _train(*base, "--epochs", "2", "--resume")
    assert r.exit_code == 2 and "not a training checkpoint" in " ".join(r.output.split())
    # an object that unpickling would have to build (weights_only refuses it): named, no code run
    torch.save({**state, "best_auc": np.float64(0.5)}, last)
    r = _train(*base, "--epochs", "2", "--resume")
    assert r.exit_code == 2 and "run code to build" in " ".join(r.output.split())
    # without --resume the run starts over and replaces it
    assert _train(*base, "--epochs", "1").exit_code == 0
    assert torch.load(last, weights_only=True)["epoch"] == 1


def test_resume_with_other_model_options_is_a_clear_error(skill_dataset, tmp_path):
    run = tmp_path / "run"
    base = ("dkt", skill_dataset, run, "-q")
    assert _train(*base, "--epochs", "1", "--set", "hidden=16").exit_code == 0
    r = _train(*base, "--epochs", "2", "--set", "hidden=32", "--resume")
    assert r.exit_code == 2, r.output
    assert "do not fit this dkt model" in " ".join(r.output.split())
