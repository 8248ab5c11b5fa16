"""The analytics' per-process caches and thresholds: the organisation settings read here
(:data:`DEFAULTS`, :func:`setting`), the least-recently-used caches of group results,
timelines, model cards, item indexes and learner snapshots, the per-learner cache of
predictions before each answer (:class:`_SeqCache`), and :func:`clear_caches`."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..db import Organisation
from ..settings import org_setting

#: organisation settings read here, with their defaults
DEFAULTS: dict[str, float | int] = {
    #: at risk: mean mastery over the concepts the group has covered below this
    "risk_low_mastery": 0.5,
    #: at risk: that mean fell by more than this over the learner's last answers ...
    "risk_mastery_drop": 0.1,
    #: ... namely over this many answers
    "risk_window_answers": 10,
    #: at risk: no answer for more than this many days
    "risk_inactive_days": 14.0,
    #: item statistics: items with at least this many attempts can be flagged ...
    "item_flag_min_attempts": 20,
    #: ... when observed and predicted success differ by more than this many standard errors
    "item_flag_z": 3.0,
    #: ... and at least this many learners answered the item
    "item_flag_min_learners": 10,
    #: learning curves: a point (an opportunity) is shown with at least this many learners
    "curve_min_learners": 5,
}
#: answers kept in the per-learner prediction cache, all learners together
SEQ_CACHE_ROWS = 5_000_000


def setting(org: Organisation, name: str, settings: Any = None) -> float | int:
    """An analytics threshold: the organisation's value, else the service settings' (when
    they have one), else :data:`DEFAULTS`."""
    return type(DEFAULTS[name])(org_setting(org, settings, name, DEFAULTS[name]))


class _LRU:
    def __init__(self, size: int) -> None:
        self.size = size
        self._d: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            if key not in self._d:
                return None
            self._d.move_to_end(key)
            return self._d[key]

    def put(self, key: Any, value: Any) -> Any:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._d.clear()


@dataclass
class _Seq:
    """One learner's answers in event order with the model's prediction before each."""

    item_db: np.ndarray  # int64
    correct: np.ndarray  # int8
    t: np.ndarray  # float64 epoch seconds
    p: np.ndarray  # float32 predicted success (nan: item unknown to the model)


class _SeqCache:
    """Per (database, model, learner, answers): the learner's :class:`_Seq`, bounded by the
    total number of answers held."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self._d: OrderedDict[tuple, _Seq] = OrderedDict()
        self._rows = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> _Seq | None:
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key: tuple, value: _Seq) -> None:
        with self._lock:
            old = self._d.pop(key, None)
            if old is not None:
                self._rows -= len(old.p)
            self._d[key] = value
            self._rows += len(value.p)
            while self._rows > self.max_rows and len(self._d) > 1:
                _, v = self._d.popitem(last=False)
                self._rows -= len(v.p)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()
            self._rows = 0


_GROUP = _LRU(64)
#: the kinds of per-group results cached in _GROUP (one entry each per group, model, rule)
GROUP_RESULTS_PER_GROUP = 4
_TIMELINE = _LRU(256)
_CARD = _LRU(16)
_ITEMS = _LRU(16)
#: learner states some answers back (at-risk), per learner
_SNAPS = _LRU(200_000)
_SEQS = _SeqCache(SEQ_CACHE_ROWS)


def clear_caches() -> None:
    """Empty every analytics cache of this process."""
    for c in (_GROUP, _TIMELINE, _CARD, _ITEMS, _SNAPS, _SEQS):
        c.clear()
