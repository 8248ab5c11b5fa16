"""What every way in says of one answer (:class:`Answer`): the fields that the answer path's
:class:`tutor.service.AnswerIn` and an xAPI statement's :class:`tutor.xapi.XAPIAnswer` share."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass
class Answer:
    """One answer: its event id (unique per learner), the learner and item (external ids),
    whether it was correct, when (None: when the service receives it) and how long it took."""

    event_id: str
    learner_id: str
    item_id: str
    correct: int
    timestamp: datetime | None = None
    elapsed_ms: int | None = None
