"""The group mastery grid (:func:`group_mastery`): learners x concepts, each cell's status and
reported mastery as ``GET /v1/learners/{id}/mastery`` gives them, with per-concept means and
status counts over every member."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from ..db import Group, Organisation
from ..evidence import STATUSES
from .context import _context, _group_ref, _members
from .status import group_status, rule_json, rule_text
from .values import _iso, _nanmean, _rnd


def group_mastery(
    session: Session,
    *,
    org: Organisation,
    group: Group,
    at: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
    settings: Any = None,
) -> dict[str, Any]:
    """Learners x concepts (the model's concepts, in curriculum order): each cell's status and
    reported mastery as ``GET /v1/learners/{id}/mastery`` gives them (the learner's own
    evidence where it answered the concept, the model's estimate, on the organisation's
    scale, where not) with the number of own answers; a page of learners, with per-concept
    means and status counts over every member. ``at`` (models that forget) moves the
    estimates to that time."""
    ctx = _context(session, org)
    members = _members(session, group)
    gs = group_status(
        session, org=org, ctx=ctx, group=group, members=members, settings=settings, at=at
    )
    grid = gs.mastery
    n = len(members.ids)
    page = range(offset, min(offset + limit, n))
    learner_mean = _nanmean(grid, 1) if grid.shape[1] and n else np.full(n, np.nan)
    concept_means = _nanmean(grid, 0) if n else np.full(len(gs.cols), np.nan)
    counts = gs.counts(0)
    return {
        "group": _group_ref(group, n),
        "model": ctx.model_ref(),
        "at": at.isoformat() if at is not None else None,
        "scale": gs.scale,
        "rule": rule_json(gs.rule),
        "rule_text": rule_text(gs.rule),
        "concepts": ctx.concept_refs(gs.cols),
        "learners": [
            {
                "learner_id": members.ext[k],
                "name": members.names[k],
                "mastery": [_rnd(x) for x in grid[k].tolist()],
                "status": [STATUSES[x] for x in gs.status[k].tolist()],
                "answers": gs.answers[k].tolist(),
                "mean": _rnd(learner_mean[k]),
                "n_answers": int(members.n_answers[k]),
                "last_answer": _iso(members.last_answer[k]),
            }
            for k in page
        ],
        "concept_means": [_rnd(x) for x in concept_means.tolist()],
        "concept_counts": {
            **{s: v.tolist() for s, v in counts.items()},
            "practised": (gs.answers > 0).sum(0).tolist(),
        },
        "offset": offset,
        "limit": limit,
    }
