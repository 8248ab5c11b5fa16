"""Training and reports report progress through ``data_loaders.progress`` (one protocol)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data_loaders.progress import NoProgress, RichProgress, progress_bars
from kt_models.data import load_sequences
from kt_models.predictions import predict_next_step, scored_batches
from kt_models.report import write_report
from kt_models.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[2]


class Recorder:
    """A :class:`~data_loaders.progress.Progress` that writes down what it was told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object, object]] = []

    def start(self, description: str, total: int | None) -> None:
        self.events.append(("start", description, total))

    def advance(self, n: int) -> None:
        self.events.append(("advance", n, None))

    def finish(self) -> None:
        self.events.append(("finish", None, None))

    def tasks(self) -> list[tuple[str, object, int]]:
        """(description, total, units advanced) of every task started."""
        out: list[tuple[str, object, int]] = []
        for kind, a, b in self.events:
            if kind == "start":
                out.append((str(a), b, 0))
            elif kind == "advance":
                d, t, n = out[-1]
                out[-1] = (d, t, n + int(a))  # type: ignore[arg-type]
        return out


def test_progress_bars_turn_flags_into_a_progress():
    assert isinstance(progress_bars(False), NoProgress)
    bars = progress_bars(True)
    assert isinstance(bars, RichProgress) and bars.transient
    rec = Recorder()
    assert progress_bars(rec) is rec


def test_train_and_report_advance_a_given_progress(tiny_dataset, tmp_path):
    rec = Recorder()
    cfg = TrainConfig(epochs=2, patience=5, seed=3, threads=1)
    over = {"hidden": 8, "emb_dim": 4}
    res = train("dkt", tiny_dataset, tmp_path / "run", config=cfg, model_overrides=over,
                progress=rec, log=lambda _m: None)  # fmt: skip
    tasks = rec.tasks()
    assert [d for d, _, _ in tasks] == ["epoch 1/2", "epoch 2/2"]
    for (_, total, done), rec_epoch in zip(tasks, res["epochs"], strict=True):
        assert total == done > 0 and rec_epoch["skipped_steps"] == 0  # one unit a step
    assert rec.events[-1][0] == "finish"

    rec = Recorder()
    write_report(tmp_path / "run", tmp_path / "rep", device="cpu", progress=rec)
    ((desc, total, done),) = rec.tasks()  # DKT has no traits to read
    assert desc == "next-step predictions" and total == done > 0
    assert rec.events[-1][0] == "finish"


def test_predict_next_step_reads_the_one_loop(tiny_dataset, tmp_path):
    """Validation's (answers, probabilities) are the one loop's, in its order."""
    cfg = TrainConfig(epochs=1, seed=3, threads=1)
    res = train("dkt", tiny_dataset, tmp_path / "r", config=cfg,
                model_overrides={"hidden": 8, "emb_dim": 4}, progress=False,
                log=lambda _m: None)  # fmt: skip
    seqs, _ = load_sequences(tiny_dataset)
    users = np.arange(seqs.n_users)
    y, p = predict_next_step(res["model"], seqs, users, torch.device("cpu"))
    with torch.no_grad():
        parts = list(scored_batches(res["model"], seqs.subset(users), torch.device("cpu")))
    assert p.dtype == np.float32 and y.dtype == np.float32
    assert np.array_equal(p, np.concatenate([q for _, q in parts]))
    rows = np.concatenate([r for r, _ in parts])
    assert np.array_equal(y, seqs.correct[rows].astype(np.float32))


@pytest.mark.parametrize("script", ["kt_quality", "kt_speed"])
def test_benchmarks_refuse_unknown_models(script, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.setattr(sys, "argv", [script])
    mod = __import__(script)
    with pytest.raises(SystemExit) as exc:
        mod.main(["--models", "dkt,dkt-huge"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown model 'dkt-huge'" in err and "dkt-large" in err and "psikt" in err
