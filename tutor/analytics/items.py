"""Item statistics (:func:`item_statistics`): per item the group answered, attempts,
learners, observed and predicted success, difficulty, discrimination, and a flag where the
observed success disagrees strongly with the model's predictions before each attempt."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from ..db import Group, Organisation
from ..runtime import LoadedModel
from ..service import Invalid
from .cache import setting
from .context import _context, _group_ref, _item_index, _members
from .replay import _group_stats
from .values import _rnd, wilson

ITEM_SORTS = ("attempts", "observed_success", "predicted_success", "gap")


def _item_parameters(model: LoadedModel) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """The model's own per-item difficulty and discrimination (indexed by model item), if
    it has them, and what the difficulty column means."""
    m = model.model
    diff, disc = m.item_parameters()
    if diff is not None:
        d = diff.detach().cpu().numpy().astype(np.float64)
        dd = None if disc is None else disc.detach().cpu().numpy().astype(np.float64)
        return d, dd, f"the {m.name} model's item difficulty parameter (logit scale)"
    return None, None, "1 - mean predicted success over the attempts"


def item_statistics(
    session: Session,
    *,
    org: Organisation,
    group: Group,
    sort: str = "attempts",
    desc: bool = True,
    limit: int = 50,
    offset: int = 0,
    settings: Any = None,
) -> dict[str, Any]:
    """Per item answered by the group: attempts, learners, observed and predicted success
    (the model's prediction before each attempt), difficulty, discrimination; flagged when
    observed success is more than ``item_flag_z`` standard errors from the predicted one
    (Poisson-binomial variance given the predictions) over at least
    ``item_flag_min_attempts`` attempts by at least ``item_flag_min_learners`` learners. The
    observed success comes with its 95% Wilson interval."""
    if sort not in ITEM_SORTS:
        raise Invalid(f"unknown sort {sort!r}; expected one of {', '.join(ITEM_SORTS)}")
    ctx = _context(session, org)
    members = _members(session, group)
    st = _group_stats(session, org, ctx, group, members)
    items = _item_index(session, org, ctx)
    min_attempts = int(setting(org, "item_flag_min_attempts", settings))
    z_max = float(setting(org, "item_flag_z", settings))
    min_learners = int(setting(org, "item_flag_min_learners", settings))
    pos = np.flatnonzero(st.attempts > 0)
    att = st.attempts[pos].astype(np.float64)
    obs = st.successes[pos] / att
    pn = st.p_n[pos]
    with np.errstate(invalid="ignore", divide="ignore"):
        pred = np.where(pn > 0, st.p_sum[pos] / np.maximum(pn, 1), np.nan)
        # observed successes over the predicted attempts vs their expectation
        obs_k = np.where(pn > 0, st.successes[pos], np.nan)
        z = (obs_k - st.p_sum[pos]) / np.sqrt(st.p_var[pos])
    gap = obs - pred
    d_param, disc_param, d_source = _item_parameters(ctx.model)
    midx = items.model_idx[pos]
    known_param = d_param is not None
    difficulty = np.where(midx > 0, d_param[midx], np.nan) if known_param else 1.0 - pred
    disc = np.where(midx > 0, disc_param[midx], np.nan) if disc_param is not None else None
    enough = (att >= min_attempts) & (st.learners[pos] >= min_learners)
    flagged = enough & (pn == att) & np.isfinite(z) & (np.abs(z) > z_max)
    key = {
        "attempts": att,
        "observed_success": obs,
        "predicted_success": pred,
        "gap": np.abs(gap),
    }[sort]
    key = np.where(np.isnan(key), -np.inf if desc else np.inf, key)
    order = np.lexsort((np.array(items.ext, dtype=object)[pos].astype(str), -key if desc else key))
    page = order[offset : offset + limit]
    out = []
    for k in page.tolist():
        ip = int(pos[k])
        cs = items.link_concept[items.link_start[ip] : items.link_start[ip + 1]]
        reason = None
        if flagged[k]:
            how = "easier" if gap[k] > 0 else "harder"
            reason = (
                f"{how} than the model predicts: observed success {obs[k]:.2f} vs predicted "
                f"{pred[k]:.2f} over {int(att[k])} attempts (z = {z[k]:.1f}, threshold {z_max:g})"
            )
        lo, hi = wilson(st.successes[ip], att[k])
        out.append(
            {
                "item_id": items.ext[ip],
                "concepts": [ctx.cat.concept_ext[c] for c in cs.tolist()],
                "concept_names": [ctx.cat.name(c) for c in cs.tolist()],
                "attempts": int(att[k]),
                "learners": int(st.learners[ip]),
                "observed_success": _rnd(obs[k]),
                "observed_low": _rnd(lo),
                "observed_high": _rnd(hi),
                "enough_data": bool(enough[k]),
                "predicted_success": _rnd(pred[k]),
                "difficulty": _rnd(difficulty[k]),
                "discrimination": _rnd(disc[k]) if disc is not None else None,
                "flagged": bool(flagged[k]),
                "flag_reason": reason,
            }
        )
    return {
        "group": _group_ref(group, len(members.ids)),
        "model": ctx.model_ref(),
        "difficulty_source": d_source,
        "thresholds": {
            "item_flag_min_attempts": min_attempts,
            "item_flag_min_learners": min_learners,
            "item_flag_z": z_max,
        },
        "items": out,
        "total": int(len(pos)),
        "offset": offset,
        "limit": limit,
    }
