"""Learners at risk (:func:`at_risk`): members who need attention, each reason weighed
(:data:`RISK_WEIGHTS`), the most pressing first; with the learner states some answers back
that the falling-estimate reason compares with (cached per learner and stepped forward after
new answers)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import torch
from sqlalchemy.orm import Session

from ..db import Group, Organisation
from ..runtime import SECONDS_PER_DAY, LoadedModel, concept_mastery_many, decode_many, replay_many
from .activity import _reference_words, activity_reference, inactive_days
from .cache import _SNAPS, setting
from .context import (
    _Context,
    _context,
    _current,
    _group_ref,
    _item_index,
    _ItemIndex,
    _keep,
    _Members,
    _members,
)
from .replay import _group_stats, _Replay
from .status import MASTERED, STRUGGLING, group_status
from .values import _iso, _pad, _ranges, _rnd

#: how much each at-risk reason weighs (a learner's severity is the sum; each struggling
#: concept counts): what a teacher can act on now first
RISK_WEIGHTS = {
    "struggling": 3.0,
    "falling": 2.0,
    "low_mastery": 2.0,
    "no_answers": 1.0,
    "inactive": 1.0,
}
#: how many answers back a cached snapshot may be and still be stepped forward
SNAP_CATCH_UP = 20


def at_risk(
    session: Session,
    *,
    org: Organisation,
    group: Group,
    settings: Any = None,
    now: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> dict[str, Any]:
    """Members who need attention, each reason weighed (:data:`RISK_WEIGHTS`) and the most
    pressing first: concepts they struggle with (the evidence statuses), low mean mastery on
    the concepts they practised (their own evidence, the reported mastery of the grid; with at
    least ``mastery_min_answers`` own answers), the model's estimate over the concepts the
    group practised falling over their last ``risk_window_answers`` answers (``mastery_change``
    is that change, on the estimate, not on the evidence of ``mean_mastery``), no answers, and
    inactivity.

    Inactivity counts only answers with real times (imported answers of learners without a
    clock have none) and is measured against the group's own clock: ``now`` while the group is
    active (its latest answer within ``risk_inactive_days``), else the group's latest answer,
    so an imported history separates the learners who stopped early instead of flagging
    everybody. Everything else is read at each learner's last answer."""
    ctx = _context(session, org)
    model = ctx.model
    low = float(setting(org, "risk_low_mastery", settings))
    drop = float(setting(org, "risk_mastery_drop", settings))
    window = int(setting(org, "risk_window_answers", settings))
    inactive = float(setting(org, "risk_inactive_days", settings))
    members = _members(session, group)
    ref, live = activity_reference(members, now, inactive)
    st = _group_stats(session, org, ctx, group, members)
    # statuses and estimates at each learner's last answer (for models that forget too: the
    # reasons are about the learner's work, inactivity says the rest), shared with the
    # class overview's cache entry
    gs = group_status(session, org=org, ctx=ctx, group=group, members=members, settings=settings)
    practised = np.flatnonzero((gs.answers > 0).any(0))
    n = len(members.ids)
    mean_now = np.full(n, np.nan)
    change = np.full(n, np.nan)
    n_own = n_own_answers = np.zeros(n, dtype=np.int64)
    if n and len(practised):
        # low mastery is judged on what the learner practised (own evidence): the estimates of
        # concepts it never met say nothing about it (and a learner without answers has only
        # the model's prior: "no answers yet" says that)
        own = gs.answers > 0
        n_own = own.sum(1)
        n_own_answers = gs.answers.sum(1)
        with np.errstate(invalid="ignore"):
            mean_now = np.where(
                n_own > 0, np.where(own, gs.mastery, 0.0).sum(1) / np.maximum(n_own, 1), np.nan
            )
        key = (ctx.scope, "before", group.id, model.model_id, window)
        m_then = _current(key, members)
        if m_then is None:
            then = _states_before(session, org, ctx, members, st.replay, window)
            m_then = _keep(key, members, concept_mastery_many(model, then))
        if gs.scale == "reachable":
            m_then = model.scaled_mastery(m_then)
        # the change of the model's estimate, over the practised concepts the model knows
        cidx = ctx.view["concept_idx"][np.asarray(gs.cols)[practised]]
        known = practised[cidx > 0]
        if len(known):
            was = np.asarray(m_then, dtype=np.float64)[:, cidx[cidx > 0]].mean(1)
            now_est = gs.estimate[:, known].mean(1)
            change = np.where(members.n_answers > 0, now_est - was, np.nan)
    days = inactive_days(members, ref)
    rule = gs.rule
    when = "" if live or ref is None else f" before the group's latest answer ({ref.date()})"
    flagged = []
    for k in range(n):
        reasons: list[tuple[float, str]] = []
        for j in np.flatnonzero(gs.status[k] == STRUGGLING).tolist():
            name, run = ctx.cat.name(gs.cols[j]), -int(gs.run[k, j])
            if run >= rule.struggle_run:
                text = f"{run} wrong in a row on {name}"
            else:
                text = (
                    f"no progress on {name} after {gs.answers[k, j]} questions "
                    f"({gs.correct[k, j]} correct)"
                )
            reasons.append((RISK_WEIGHTS["struggling"], text))
        if np.isfinite(mean_now[k]) and mean_now[k] < low and n_own_answers[k] >= rule.min_answers:
            mastered = int((gs.status[k] == MASTERED).sum())
            reasons.append(
                (
                    RISK_WEIGHTS["low_mastery"],
                    f"low mastery: {mean_now[k]:.2f} on average over the {int(n_own[k])} "
                    f"concept{'s' if n_own[k] != 1 else ''} practised ({mastered} mastered; "
                    f"threshold {low:g})",
                )
            )
        if np.isfinite(change[k]) and change[k] < -drop:
            span = (
                f"the last {window} answers"
                if members.n_answers[k] > window
                else "since the first answer"
            )
            reasons.append(
                (
                    RISK_WEIGHTS["falling"],
                    f"falling estimate: the model's mastery estimate {change[k]:+.2f} over "
                    f"{span} (threshold -{drop:g})",
                )
            )
        if members.n_answers[k] == 0:
            reasons.append((RISK_WEIGHTS["no_answers"], "no answers yet"))
        elif np.isfinite(days[k]) and days[k] > inactive:
            reasons.append(
                (
                    RISK_WEIGHTS["inactive"],
                    f"no answer for {days[k]:.0f} days{when} (threshold {inactive:g})",
                )
            )
        if reasons:
            reasons.sort(key=lambda r: -r[0])
            flagged.append((k, reasons))
    flagged.sort(
        key=lambda kr: (
            -sum(w for w, _ in kr[1]),
            np.nan_to_num(mean_now[kr[0]], nan=2.0),
            members.label(kr[0]),
        )
    )
    return {
        "group": _group_ref(group, n),
        "model": ctx.model_ref(),
        "thresholds": {
            "risk_low_mastery": low,
            "risk_mastery_drop": drop,
            "risk_window_answers": window,
            "risk_inactive_days": inactive,
        },
        "reference_time": _iso(ref),
        "reference": _reference_words(ref, live),
        "timed": ref is not None,
        "covered_concepts": [ctx.cat.concept_ext[gs.cols[j]] for j in practised.tolist()],
        "learners": [
            {
                "learner_id": members.ext[k],
                "name": members.names[k],
                "label": members.label(k),
                "severity": round(sum(w for w, _ in reasons), 2),
                "reasons": [text for _, text in reasons],
                "mean_mastery": _rnd(mean_now[k]),
                "mastery_change": _rnd(change[k]),
                "days_inactive": _rnd(days[k], 4),
                "last_activity": _iso(members.last_answer[k]),
            }
            for k, reasons in flagged[offset : offset + limit]
        ],
        "total": len(flagged),
        "offset": offset,
        "limit": limit,
    }


def _time_values(
    model: LoadedModel, lens: np.ndarray, t: np.ndarray, first_seen: np.ndarray
) -> np.ndarray:
    """:meth:`LoadedModel.time_value` of flat answers (learner-major): days since the
    learner's first answer (or ``first_seen`` when earlier), or the answer's position."""
    starts = np.cumsum(lens) - lens
    pos = np.arange(int(lens.sum())) - np.repeat(starts, lens)
    if model.time_unit == "answers" or not len(t):
        return pos.astype(np.float64)
    first_t = t[np.minimum(starts, len(t) - 1)]
    first = np.fmin(first_seen, first_t)  # fmin: a missing first_seen gives the first answer
    return np.maximum(t - np.repeat(first, lens), 0.0) / SECONDS_PER_DAY


def _states_before(
    session: Session,
    org: Organisation,
    ctx: _Context,
    members: _Members,
    rep: _Replay,
    window: int,
) -> Any:
    """The batched state of every member ``window`` answers before its last (the initial
    state with fewer answers), cached per learner and answer count. After new answers a
    learner's earlier snapshot (up to :data:`SNAP_CATCH_UP` answers back) is stepped forward
    over the answers it now lacks; a learner without one is replayed in a batch."""
    model = ctx.model
    keys = [
        (ctx.scope, model.model_id, int(lid), int(n), window)
        for lid, n in zip(members.ids, rep.lens, strict=True)
    ]
    blobs = [_SNAPS.get(k) for k in keys]
    starts = np.cumsum(rep.lens) - rep.lens
    missing = [k for k, b in enumerate(blobs) if b is None]
    items = _item_index(session, org, ctx) if missing else None
    for k in missing:
        blobs[k] = _catch_up(ctx, items, members, rep, window, keys[k], k, int(starts[k]))
    need = np.array([k for k, b in enumerate(blobs) if b is None], dtype=np.int64)
    if len(need):
        lens = rep.lens[need]
        rows = _ranges(starts[need], lens)
        times = _time_values(model, lens, rep.t[rows], members.first_seen[need])
        it, cc, tt = _pad(
            lens, items.model_idx[rep.ipos[rows]], rep.correct[rows].astype(np.float32), times
        )
        state = replay_many(model, it, cc, tt, [np.maximum(lens - window, 0)])[0]
        for j, k in enumerate(need.tolist()):
            blobs[k] = model.encode(model.model.state_select(state, torch.tensor([j])))
            _SNAPS.put(keys[k], blobs[k])
    return decode_many(model, blobs)


@torch.no_grad()
def _catch_up(
    ctx: _Context,
    items: _ItemIndex,
    members: _Members,
    rep: _Replay,
    window: int,
    key: tuple,
    k: int,
    start: int,
) -> bytes | None:
    """Member ``k``'s snapshot ``window`` answers back, from a snapshot cached some answers
    earlier stepped over the answers between (None when there is none to start from)."""
    model = ctx.model
    n = int(rep.lens[k])
    target = max(n - window, 0)
    for d in range(1, min(n, SNAP_CATCH_UP) + 1):
        old = _SNAPS.get((*key[:3], n - d, window))
        if old is None:
            continue
        done = max(n - d - window, 0)
        if target == done:
            blob = old
        else:
            state = model.decode(old)
            rows = np.arange(start, start + n)
            times = _time_values(model, np.array([n]), rep.t[rows], members.first_seen[[k]])
            idx = items.model_idx[rep.ipos[rows]]
            state = model.step_many(
                state,
                idx[done:target].tolist(),
                rep.correct[rows[done:target]].tolist(),
                times[done:target].tolist(),
            )
            blob = model.encode(state)
        _SNAPS.put(key, blob)
        return blob
    return None
