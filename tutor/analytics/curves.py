"""Learning curves (:func:`learning_curves`): per concept, the error rate by practice
opportunity, observed (with its Wilson interval) and predicted by the model before each
answer, from the group's replay (:mod:`tutor.analytics.replay`); the counts are
:func:`kt_models.evaluate.curve_counts`, the ones ``tutor report`` draws."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from kt_models.evaluate import curve_counts

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
    cc = curve_counts(
        st.e_concept,
        st.e_opp,
        rep.correct[st.e_row],
        rep.p[st.e_row],
        n_concepts=n_c,
        max_opportunity=max_opportunity,
    )
    curves = []
    for pos in positions:
        pts, hidden = [], 0
        n, wrong = cc.n[pos], cc.wrong[pos]
        for k in range(max_opportunity):
            if n[k] == 0:
                continue
            if n[k] < min_learners:
                hidden += 1
                continue
            lo, hi = wilson(wrong[k], n[k])
            pred = cc.pred_wrong[pos, k] / cc.n_pred[pos, k] if cc.n_pred[pos, k] else None
            pts.append(
                {
                    "opportunity": k + 1,
                    "learners": int(n[k]),
                    "observed_error": _rnd(wrong[k] / n[k]),
                    "observed_low": _rnd(lo),
                    "observed_high": _rnd(hi),
                    "predicted_error": _rnd(pred),
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
