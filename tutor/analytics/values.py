"""Small helpers the analytics views share: JSON-safe rounded floats and ISO times, a
nan-aware mean, the Wilson score interval, and the ragged-array helpers that turn flat
per-learner answers into index ranges and padded ``[learners, answers]`` arrays."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import numpy as np

from ..service import as_utc


def _rnd(x: Any, nd: int = 6) -> float | None:
    """A JSON-safe rounded float (None for nan/inf/None)."""
    if x is None:
        return None
    x = float(x)
    return round(x, nd) if math.isfinite(x) else None


def _json_safe(obj: Any) -> Any:
    """Replace non-finite floats (nan in stored results) by None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    """Mean over the finite values (nan where there are none, without a warning)."""
    ok = np.isfinite(a)
    cnt = ok.sum(axis)
    total = np.where(ok, a, 0.0).sum(axis)
    return np.where(cnt > 0, total / np.maximum(cnt, 1), np.nan)


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else as_utc(dt).isoformat()


def wilson(k: float, n: float, z: float = 1.96) -> tuple[float | None, float | None]:
    """Wilson score interval of a proportion ``k / n`` (95% by default); None without data.
    Honest for small ``n`` and for proportions of 0 or 1, where the normal interval is not."""
    if n <= 0:
        return None, None
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def _ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + l) for every (s, l)."""
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    shift = np.repeat(starts - (np.cumsum(lens) - lens), lens)
    return np.arange(total, dtype=np.int64) + shift


def _pad(lens: np.ndarray, *flat: np.ndarray) -> tuple[np.ndarray, ...]:
    """Flat per-learner arrays (learner-major, ``lens`` each) as ``[n, max(lens)]``."""
    n, t_max = len(lens), max(int(lens.max()) if len(lens) else 0, 1)
    rows = np.repeat(np.arange(n), lens)
    cols = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
    out = []
    for a in flat:
        p = np.zeros((n, t_max), dtype=a.dtype)
        p[rows, cols] = a
        out.append(p)
    return tuple(out)
