"""Analytics for teachers and administrators: group mastery grids, learner timelines,
learning curves, item statistics, learners at risk, the active model's card, and the
teacher's views (class overview, what to reteach, suggested groups).

Nothing here knows about HTTP (the routes are in :mod:`tutor.api.analytics`); errors are
:class:`~tutor.service.ServiceError` subclasses. Everything is computed per request from the
database and the active model, vectorised, one module per view:

* :mod:`.grid` (:func:`group_mastery`), :mod:`.timeline` (:func:`learner_timeline`),
  :mod:`.curves` (:func:`learning_curves`), :mod:`.items` (:func:`item_statistics`),
  :mod:`.risk` (:func:`at_risk`), :mod:`.card` (:func:`model_card`) and :mod:`.teaching`
  (:func:`class_overview`, :func:`reteach`, :func:`suggested_groups`);
* on the shared machinery: :mod:`.status` (every member's evidence status and reported
  mastery, from the stored learner states scored in one batch, so a grid cell equals the
  learner's ``/v1/learners/{id}/mastery`` value), :mod:`.replay` (the group's answers with
  the model's prediction before each, behind the curves and item statistics),
  :mod:`.activity` (the clock inactivity is measured against), :mod:`.context` (the active
  model, catalogue, item index and group members), :mod:`.values` (rounding, intervals,
  ragged arrays) and :mod:`.cache` (per process, least recently used evicted: group results
  per (database, group, model version, catalogue version, members and their answer counts),
  timelines per (database, learner, model version, answer count), model cards per
  (database, model); :func:`clear_caches`);
* :mod:`.warmup` fills the caches ahead of the first request (:class:`Warmer`).

Thresholds (learners at risk, item flags) are organisation settings (``org.settings``,
``PATCH /v1/organisation/settings``) with the defaults in :data:`DEFAULTS`.
"""

from __future__ import annotations

from .activity import activity_reference, inactive_days
from .cache import DEFAULTS, clear_caches, setting
from .card import model_card
from .curves import learning_curves
from .grid import group_mastery
from .items import ITEM_SORTS, item_statistics
from .risk import RISK_WEIGHTS, at_risk
from .teaching import class_overview, reteach, suggested_groups
from .timeline import learner_timeline
from .warmup import Warmer, warm_up

__all__ = [
    "DEFAULTS",
    "ITEM_SORTS",
    "RISK_WEIGHTS",
    "Warmer",
    "activity_reference",
    "at_risk",
    "class_overview",
    "clear_caches",
    "group_mastery",
    "inactive_days",
    "item_statistics",
    "learner_timeline",
    "learning_curves",
    "model_card",
    "reteach",
    "setting",
    "suggested_groups",
    "warm_up",
]
