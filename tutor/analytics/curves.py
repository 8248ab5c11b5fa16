"""Learning curves (:func:`learning_curves`): per concept, the error rate by practice
opportunity, observed (with its Wilson interval) and predicted by the model before each
answer, from the group's replay (:mod:`tutor.analytics.replay`)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from ..db import Group, Organisation
from .cache import setting
from .context import _concept_positions, _context, _group_ref, _members
from .replay import _group_stats
from .values import _rnd, wilson


def learning_curves(
    session: Session,
    *,
    org: Organisation,
    group: Group,
    concepts: list[str] | None = None,
    max_opportunity: int = 20,
    settings: Any = None,
) -> dict[str, Any]:
    """Per concept, error rate by practice opportunity (DataShop style): observed (with its
    95% Wilson interval), and predicted by the model before each answer, with the number of
    learners at each point. Points with fewer than ``curve_min_learners`` learners are left
    out (counted in ``hidden_points``): a rate over a handful of learners is noise."""
    min_learners = int(setting(org, "curve_min_learners", settings))
    ctx = _context(session, org)
    members = _members(session, group)
    st = _group_stats(session, org, ctx, group, members)
    rep = st.replay
    n_c = len(ctx.cat.concept_ext)
    if concepts is None:
        practised = np.bincount(st.e_concept, minlength=n_c) > 0
        rank = ctx.view["curriculum_pos"]
        positions = [int(p) for p in rank if practised[p]]
    else:
        positions = _concept_positions(ctx, concepts)
    sel = st.e_opp <= max_opportunity
    c, o, r = st.e_concept[sel], st.e_opp[sel] - 1, st.e_row[sel]
    key = c * max_opportunity + o
    size = n_c * max_opportunity
    n = np.bincount(key, minlength=size)
    ok = np.bincount(key, weights=rep.correct[r], minlength=size)
    p = rep.p[r]
    known = ~np.isnan(p)
    pn = np.bincount(key[known], minlength=size)
    ps = np.bincount(key[known], weights=p[known].astype(np.float64), minlength=size)
    curves = []
    for pos in positions:
        pts, hidden = [], 0
        for k in range(max_opportunity):
            i = pos * max_opportunity + k
            if n[i] == 0:
                continue
            if n[i] < min_learners:
                hidden += 1
                continue
            lo, hi = wilson(n[i] - ok[i], n[i])
            pts.append(
                {
                    "opportunity": k + 1,
                    "learners": int(n[i]),
                    "observed_error": _rnd(1.0 - ok[i] / n[i]),
                    "observed_low": _rnd(lo),
                    "observed_high": _rnd(hi),
                    "predicted_error": _rnd(1.0 - ps[i] / pn[i]) if pn[i] else None,
                }
            )
        curves.append(
            {
                "concept_id": ctx.cat.concept_ext[pos],
                "name": ctx.cat.name(pos),
                "points": pts,
                "hidden_points": hidden,
            }
        )
    return {
        "group": _group_ref(group, len(members.ids)),
        "model": ctx.model_ref(),
        "max_opportunity": max_opportunity,
        "min_learners": min_learners,
        "curves": curves,
    }
