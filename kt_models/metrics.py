"""Prediction metrics: AUC, accuracy, RMSE, log-loss, expected calibration error."""

from __future__ import annotations

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
