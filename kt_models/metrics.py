"""Prediction metrics: AUC, accuracy, RMSE, log-loss, expected calibration error; and
:func:`json_safe`, metrics as JSON (their nan, as in an empty calibration bin, as null)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score


def metrics(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict[str, float]:
    """All metrics of probabilities ``p`` against 0/1 answers ``y``."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if not np.isfinite(p).all():
        raise FloatingPointError(
            f"{int((~np.isfinite(p)).sum())} of {len(p)} predicted probabilities are not finite"
        )
    p = np.clip(p, 1e-7, 1 - 1e-7)
    n = len(y)
    if n == 0:
        return {"n": 0}
    auc = float(roc_auc_score(y, p)) if 0 < y.sum() < n else float("nan")
    return {
        "n": int(n),
        "auc": auc,
        "acc": float(((p >= 0.5) == (y >= 0.5)).mean()),
        "rmse": float(np.sqrt(((p - y) ** 2).mean())),
        "logloss": float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()),
        "ece": ece(y, p, bins),
    }


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over ``bins`` equal-width probability bins."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs(p[m].mean() - y[m].mean())
    return float(total)


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Per-bin count, mean predicted and observed success rate."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        m = idx == b
        rows.append(
            {
                "bin_low": float(edges[b]),
                "bin_high": float(edges[b + 1]),
                "n": int(m.sum()),
                "predicted": float(p[m].mean()) if m.any() else float("nan"),
                "observed": float(y[m].mean()) if m.any() else float("nan"),
            }
        )
    return rows


def _weighted_auc(gid: np.ndarray, n_groups: int, y: np.ndarray, w: np.ndarray) -> float:
    """AUC with answer weights ``w``; ``gid`` numbers the distinct scores in ascending order
    (ties share a number and count one half, as in the rank-sum AUC)."""
    pos = np.bincount(gid, weights=w * y, minlength=n_groups)
    neg = np.bincount(gid, weights=w * (1.0 - y), minlength=n_groups)
    below = np.cumsum(neg) - neg
    denom = pos.sum() * neg.sum()
    return float((pos * (below + 0.5 * neg)).sum() / denom) if denom > 0 else float("nan")


def paired_auc_bootstrap(
    y: np.ndarray,
    p_a: np.ndarray,
    p_b: np.ndarray,
    groups: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """AUC of two models' predictions ``p_a``, ``p_b`` of the same answers ``y``, their
    difference ``a - b``, and a percentile confidence interval of the difference from a
    paired bootstrap over ``groups`` (learner ids): each replicate draws learners with
    replacement and weights every answer by its learner's draw count, identically for both
    models, so the interval reflects the learner-to-learner variation the test set samples
    (answers of one learner are not independent). ``p_le_0`` is the share of replicates
    whose difference is <= 0 (a one-sided bootstrap p-value for "a beats b"), over the
    replicates with both classes (``degenerate_replicates`` counts the others)."""
    y = np.asarray(y, dtype=np.float64)
    p_a, p_b = np.asarray(p_a, dtype=np.float64), np.asarray(p_b, dtype=np.float64)
    if not (len(y) == len(p_a) == len(p_b) == len(groups)):
        raise ValueError(
            f"answers, predictions and groups differ in length: {len(y)}, {len(p_a)}, "
            f"{len(p_b)}, {len(groups)}"
        )
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if not (np.isfinite(p_a).all() and np.isfinite(p_b).all()):
        raise ValueError("predictions must be finite")
    if not 0 < y.sum() < len(y):
        raise ValueError("the answers are all of one class: AUC is undefined")
    _, learner = np.unique(np.asarray(groups), return_inverse=True)
    n_learners = int(learner.max()) + 1 if len(learner) else 0
    ids = []
    for p in (p_a, p_b):
        uniq, gid = np.unique(p, return_inverse=True)
        ids.append((gid, len(uniq)))
    ones = np.ones_like(y)
    auc_a, auc_b = (_weighted_auc(g, n, y, ones) for g, n in ids)
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for r in range(n_boot):
        counts = np.bincount(rng.integers(0, n_learners, n_learners), minlength=n_learners)
        w = counts[learner].astype(np.float64)
        diffs[r] = _weighted_auc(*ids[0], y, w) - _weighted_auc(*ids[1], y, w)
    # a replicate that drew learners with answers of one class only has no AUC
    ok = np.isfinite(diffs)
    diffs = diffs[ok]
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return {
        "auc_a": auc_a,
        "auc_b": auc_b,
        "diff": auc_a - auc_b,
        "ci_low": float(lo),
        "ci_high": float(hi),
        "level": level,
        "p_le_0": float(np.mean(diffs <= 0)),
        "n_boot": n_boot,
        "degenerate_replicates": int((~ok).sum()),
        "learners": n_learners,
        "answers": int(len(y)),
    }


def json_safe(x: Any) -> Any:
    """``x`` (dicts, lists, tuples, numbers) as strict JSON values: nan and infinities become
    None (JSON, and PostgreSQL's JSON, have no such numbers), numpy scalars plain numbers."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, np.generic):
        return json_safe(x.item())
    return x
