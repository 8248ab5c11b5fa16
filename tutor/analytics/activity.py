"""When a group's members last answered and how that is worded: the clock inactivity is
measured against (:func:`activity_reference`: now while the group is active, else its own
latest timed answer) and each member's days without an answer (:func:`inactive_days`),
shared by the learners at risk and the class overview."""

from __future__ import annotations

from datetime import datetime

import numpy as np

from ..runtime import SECONDS_PER_DAY
from ..service import as_utc, utcnow
from .context import _Members


def activity_reference(
    members: _Members, now: datetime | None, inactive_days: float
) -> tuple[datetime | None, bool]:
    """The time inactivity is measured against, and whether it is now: ``now`` while the
    group is active (its latest timed answer within ``inactive_days``), else the group's own
    latest timed answer (an imported history); None where no answer carries a real time."""
    now = as_utc(now) or utcnow()
    latest = members.latest
    if latest is None:
        return None, False
    live = (now - latest).total_seconds() <= inactive_days * SECONDS_PER_DAY
    return (now if live else latest), live


def inactive_days(members: _Members, ref: datetime | None) -> np.ndarray:
    """Each member's days without a timed answer before ``ref`` (nan: none, or no clock)."""
    return np.array(
        [
            (ref - t).total_seconds() / SECONDS_PER_DAY if ref is not None and t else np.nan
            for t in members.last_answer
        ]
    )


def _reference_words(ref: datetime | None, live: bool) -> str:
    if ref is None:
        return "no answer carries a real time: inactivity is not assessed"
    return "now" if live else "the group's latest answer"
