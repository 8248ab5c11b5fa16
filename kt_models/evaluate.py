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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import KTModel, load_checkpoint
from .data import Sequences, load_sequences, make_batch, plan_batches, split_learners
from .metrics import calibration_table, metrics, paired_auc_bootstrap
from .report import Answers, next_step_answers
from .train import pick_device, predict_next_step


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


def evaluate_run(
    run_dir: Path | str,
    *,
    data: Path | str | None = None,
    multi_step: int = 10,
    device: str = "auto",
    checkpoint: str = "best.pt",
) -> dict[str, Any]:
    """Evaluate a run's best checkpoint; writes and returns ``results.json``'s content."""
    run_dir = Path(run_dir)
    run = json.loads((run_dir / "run.json").read_text())
    dev = pick_device(device)
    model, payload = load_checkpoint(run_dir / checkpoint, map_location=dev)
    data_path = Path(data) if data is not None else Path(run["data"])
    seqs, _ = load_sequences(data_path, vocab=model.vocab)
    tc = run["train_config"]
    same_data = data is None or Path(data).resolve() == Path(run["data"]).resolve()
    if same_data:
        split = split_learners(seqs, seed=tc["seed"], fold=tc["fold"])
        users, subset = split.test, "test learners of the training protocol"
        protocol = split.protocol
    else:
        users, subset = np.arange(seqs.n_users), "all learners of another dataset"
        protocol = "external dataset"
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


def _test_answers(run_dir: Path, dev: torch.device) -> tuple[dict[str, Any], np.ndarray, Answers]:
    """A run's record, its test learners' ids and their next-step predictions."""
    run = json.loads((run_dir / "run.json").read_text())
    model, _ = load_checkpoint(run_dir / "best.pt", map_location=dev)
    seqs, _ = load_sequences(Path(run["data"]), vocab=model.vocab)
    tc = run["train_config"]
    users = split_learners(seqs, seed=tc["seed"], fold=tc["fold"]).test
    return run, seqs.users[users], next_step_answers(model, seqs, users, dev)


def compare_runs(
    run_a: Path | str,
    run_b: Path | str,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    device: str = "auto",
) -> dict[str, Any]:
    """Next-step test AUC of two runs on the same test learners, with a paired bootstrap
    confidence interval of the difference ``a - b`` over learners
    (:func:`kt_models.metrics.paired_auc_bootstrap`). Both runs must have been trained on the
    same dataset with the same test learners; ``ValueError`` says what differs otherwise."""
    dev = pick_device(device)
    (ra, ua, a), (rb, ub, b) = (_test_answers(Path(r), dev) for r in (run_a, run_b))
    if len(ua) != len(ub) or not (ua == ub).all():
        raise ValueError(
            f"{run_a} and {run_b} have different test learners ({len(ua)} and {len(ub)}; "
            f"data {ra['data']} and {rb['data']}): compare runs of one dataset and split"
        )
    if len(a.y) != len(b.y) or not (a.y == b.y).all() or not (a.scored == b.scored).all():
        raise ValueError(
            f"{run_a} and {run_b} see different answers of the same test learners (data "
            f"{ra['data']} and {rb['data']}): compare runs of one dataset"
        )
    m = a.scored
    res = paired_auc_bootstrap(
        a.y[m], a.p[m], b.p[m], a.learner[m], n_boot=n_boot, seed=seed, level=level
    )
    return {"a": str(run_a), "b": str(run_b), "model_a": ra["model"], "model_b": rb["model"], **res}
