"""Evaluation: next-step and multi-step prediction on the test learners of a run.

* **Next step**: every answer of a test learner after their first is predicted from the
  answers before it (the batch forward; equal to serving's step/predict to 1e-5).
* **Multi-step** (as in the PSI-KT and pyKT papers): a test learner's history is cut every
  ``n`` answers; from the state at each cut, the next ``n`` answers are predicted *without*
  seeing them (``predict`` at each answer's own time, so models that forget decay), then the
  true answers are fed in and the next window follows. Computed through the serving form
  (``init_state``/``step``/``predict``), batched over learners.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import KTModel, load_checkpoint
from .data import Sequences, load_sequences, make_batch, plan_batches, split_learners
from .metrics import calibration_table, metrics, paired_auc_bootstrap
from .predictions import Answers, next_step_answers, predict_next_step
from .train import pick_device


@torch.no_grad()
def predict_multi_step(
    model: KTModel,
    seqs: Sequences,
    users: np.ndarray,
    n: int,
    device: torch.device,
    batch_tokens: int = 262144,
    max_batch: int = 2048,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(answers, probabilities, steps ahead 1..n) for windows of ``n`` after each cut."""
    model.eval()
    ys, ps, ks = [], [], []
    for group in plan_batches(seqs, users, batch_tokens=batch_tokens, max_batch=max_batch):
        b = make_batch(seqs, group).to(device)
        bsz, t_max = b.item.shape
        state = model.init_state(bsz)
        for cut in range(n, t_max, n):
            # feed the answers of the previous window
            for t in range(cut - n, cut):
                state = model.step(state, b.item[:, t], b.correct[:, t], b.time[:, t])
            hi = min(cut + n, t_max)
            items = b.item[:, cut:hi]
            times = b.time[:, cut:hi]
            probs = model.predict(state, items, at_time=times)
            m = b.mask[:, cut:hi]
            ys.append(b.correct[:, cut:hi][m].cpu().numpy())
            ps.append(probs[m].float().cpu().numpy())
            k = torch.arange(1, hi - cut + 1, device=device).expand(bsz, -1)
            ks.append(k[m].cpu().numpy())
    if not ys:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    return np.concatenate(ys), np.concatenate(ps), np.concatenate(ks)


@dataclass
class LoadedRun:
    """A run directory opened for evaluation: its record, checkpoint, data and learners."""

    dir: Path
    record: dict[str, Any]  # run.json
    model: KTModel
    payload: dict[str, Any]  # the checkpoint's other content
    data: Path
    seqs: Sequences
    users: np.ndarray  # learner indices into ``seqs`` to evaluate
    subset: str
    protocol: str


def load_run(
    run_dir: Path | str,
    *,
    data: Path | str | None = None,
    device: torch.device,
    checkpoint: str = "best.pt",
) -> LoadedRun:
    """Open a run: ``run.json``, the checkpoint, its dataset (or ``data``) read with the
    checkpoint's vocabularies, and the learners to evaluate: the test learners of the
    training protocol on the run's own dataset, every learner of another one. Raises
    FileNotFoundError for a missing run directory or ``run.json`` and
    :class:`~kt_models.base.CheckpointError` for a missing or bad checkpoint."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: run directory not found")
    if not (run_dir / "run.json").is_file():
        raise FileNotFoundError(f"{run_dir / 'run.json'}: not found (not a run directory?)")
    run = json.loads((run_dir / "run.json").read_text())
    model, payload = load_checkpoint(run_dir / checkpoint, map_location=device)
    data_path = Path(data) if data is not None else Path(run["data"])
    seqs, _ = load_sequences(data_path, vocab=model.vocab)
    if data is None or Path(data).resolve() == Path(run["data"]).resolve():
        tc = run["train_config"]
        split = split_learners(seqs, seed=tc["seed"], fold=tc["fold"])
        users, subset, protocol = (
            split.test,
            "test learners of the training protocol",
            split.protocol,
        )
    else:
        users, subset = np.arange(seqs.n_users), "all learners of another dataset"
        protocol = "external dataset"
    return LoadedRun(run_dir, run, model, payload, data_path, seqs, users, subset, protocol)


def evaluate_run(
    run_dir: Path | str,
    *,
    data: Path | str | None = None,
    multi_step: int = 10,
    device: str = "auto",
    checkpoint: str = "best.pt",
) -> dict[str, Any]:
    """Evaluate a run's best checkpoint; writes and returns ``results.json``'s content."""
    dev = pick_device(device)
    lr = load_run(run_dir, data=data, device=dev, checkpoint=checkpoint)
    run_dir, run, model, payload = lr.dir, lr.record, lr.model, lr.payload
    data_path, seqs, users, subset, protocol = lr.data, lr.seqs, lr.users, lr.subset, lr.protocol
    y, p = predict_next_step(model, seqs, users, dev)
    results: dict[str, Any] = {
        "model": run["model"],
        "run": str(run_dir),
        "data": str(data_path),
        "subset": subset,
        "protocol": protocol,
        "learners": int(len(users)),
        "checkpoint_epoch": payload.get("extra", {}).get("epoch"),
        "test": metrics(y, p),
        "calibration": calibration_table(y, p),
    }
    if multi_step:
        my, mp, mk = predict_multi_step(model, seqs, users, multi_step, dev)
        per_k = {str(k): metrics(my[mk == k], mp[mk == k]) for k in range(1, multi_step + 1)}
        results["multi_step"] = {**metrics(my, mp), "horizon": multi_step, "by_steps_ahead": per_k}
    results["unknown_items_dropped"] = seqs.meta.get("unknown_items", 0)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def compare_runs(
    run_a: Path | str,
    runs_b: Sequence[Path | str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    device: str = "auto",
) -> list[dict[str, Any]]:
    """Next-step test AUC of run ``a`` against each of ``runs_b`` on the same test learners,
    with a paired bootstrap confidence interval of the difference ``a - b`` over learners
    (:func:`kt_models.metrics.paired_auc_bootstrap`); ``a``'s predictions are computed once.
    Every run must have been trained on the same dataset with the same test learners;
    ``ValueError`` says what differs otherwise."""

    dev = pick_device(device)

    def answers(run: Path | str) -> tuple[LoadedRun, Answers]:
        lr = load_run(run, device=dev)
        return lr, next_step_answers(lr.model, lr.seqs, lr.users, dev)

    ra, a = answers(run_a)
    ua = ra.seqs.users[ra.users]
    out = []
    for run_b in runs_b:
        rb, b = answers(run_b)
        ub = rb.seqs.users[rb.users]
        if len(ua) != len(ub) or not (ua == ub).all():
            raise ValueError(
                f"{run_a} and {run_b} have different test learners ({len(ua)} and {len(ub)}; "
                f"data {ra.data} and {rb.data}): compare runs of one dataset and split"
            )
        if len(a.y) != len(b.y) or not (a.y == b.y).all() or not (a.scored == b.scored).all():
            raise ValueError(
                f"{run_a} and {run_b} see different answers of the same test learners (data "
                f"{ra.data} and {rb.data}): compare runs of one dataset"
            )
        m = a.scored
        res = paired_auc_bootstrap(
            a.y[m], a.p[m], b.p[m], a.learner[m], n_boot=n_boot, seed=seed, level=level
        )
        models = {"model_a": ra.record["model"], "model_b": rb.record["model"]}
        out.append({"a": str(run_a), "b": str(run_b), **models, **res})
    return out
