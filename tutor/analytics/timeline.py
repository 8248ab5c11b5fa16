"""The learner timeline (:func:`learner_timeline`): a learner's answers in event order with,
after each, some concepts' mastery as ``GET /mastery`` reported it then, from one replay of
the stored history (cached per learner, model and answer count)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import Interaction, Learner, Organisation
from ..runtime import concept_mastery_many, stack_states
from ..service import Invalid, as_utc
from .cache import _TIMELINE
from .context import _concept_positions, _Context, _context, _item_index, _ItemIndex
from .status import mastery_scale
from .values import _iso, _ranges, _rnd

#: default number of concepts on a timeline (the learner's most practised)
TIMELINE_CONCEPTS = 8
#: the most concepts a timeline may be asked for (each is a column of every point)
TIMELINE_MAX_CONCEPTS = 50


def check_concept_count(concepts: list[str] | None) -> None:
    """:class:`Invalid` where more than :data:`TIMELINE_MAX_CONCEPTS` distinct concepts are
    asked for."""
    if concepts is not None and len(set(concepts)) > TIMELINE_MAX_CONCEPTS:
        raise Invalid(
            f"a timeline shows at most {TIMELINE_MAX_CONCEPTS} concepts "
            f"({len(set(concepts))} asked for)"
        )


def learner_timeline(
    session: Session,
    *,
    org: Organisation,
    learner: Learner,
    concepts: list[str] | None = None,
    max_points: int = 500,
    settings: Any = None,
) -> dict[str, Any]:
    """The learner's answers in event order with, after each, some concepts' mastery as
    ``GET /mastery`` reported it then (own evidence where the learner had answered the
    concept, else the model's estimate on the organisation's scale; both given, with the own
    answers so far), from the one replay of the stored history (at most ``max_points``
    points, evenly spaced, always the last). ``timed``
    says whether the answers carry real times (dates on the x axis) or not (imported without
    a clock: answer numbers)."""
    check_concept_count(concepts)
    ctx = _context(session, org)
    items = _item_index(session, org, ctx)
    model = ctx.model
    key = (
        ctx.scope,
        learner.id,
        model.model_id,
        ctx.cat.version,
        int(learner.n_answers or 0),
        max_points,
    )
    entry = _TIMELINE.get(key)
    if entry is None:
        entry = _TIMELINE.put(key, _replay_learner(session, ctx, items, learner, max_points))
    hist, chosen, mastery, own, counts = entry
    scale = mastery_scale(org, settings)
    if scale == "reachable" and len(mastery):
        mastery = ctx.model.scaled_mastery(mastery)
    if concepts is None:
        cidx = ctx.view["concept_idx"]
        cand = np.flatnonzero((counts > 0) & (cidx > 0))
        rank = {p: k for k, p in enumerate(ctx.view["curriculum_pos"])}
        cand = sorted(cand.tolist(), key=lambda p: (-counts[p], rank.get(p, p)))
        positions = cand[:TIMELINE_CONCEPTS]
    else:
        positions = _concept_positions(ctx, concepts)
    midx = ctx.view["concept_idx"][positions] if positions else np.zeros(0, dtype=np.int64)
    known = midx > 0
    cols = mastery[:, midx] if len(positions) else np.zeros((len(chosen), 0))
    ext = [ctx.cat.concept_ext[p] for p in positions]
    points = []
    for r, j in enumerate(chosen.tolist()):
        ev, ts, item_pos, correct, _ = hist[j]
        cs = items.link_concept[items.link_start[item_pos] : items.link_start[item_pos + 1]]
        estimate = [_rnd(v) if ok else None for v, ok in zip(cols[r].tolist(), known, strict=True)]
        mine = own[r]
        points.append(
            {
                "index": j + 1,
                "event_id": ev,
                "timestamp": _iso(ts),
                "item_id": items.ext[item_pos],
                "correct": int(correct),
                "concepts": [ctx.cat.concept_ext[c] for c in cs.tolist()],
                # what /mastery reported after this answer: own evidence, else the estimate
                "mastery": [
                    _rnd(mine[c][0]) if c in mine else e for c, e in zip(ext, estimate, strict=True)
                ],
                "answers": [mine[c][1] if c in mine else 0 for c in ext],
                "estimate": estimate,
            }
        )
    return {
        "learner_id": learner.external_id,
        "model": ctx.model_ref(),
        "concepts": ctx.concept_refs(positions),
        "scale": scale,
        "timed": bool(hist) and all(h[4] for h in hist),
        "points": points,
    }


@torch.no_grad()
def _replay_learner(
    session: Session, ctx: _Context, items: _ItemIndex, learner: Learner, max_points: int
) -> tuple[list[tuple], np.ndarray, np.ndarray, list[dict[str, tuple[float, int]]], np.ndarray]:
    """The learner's history through the one replay (:func:`tutor.states.replay_histories`):
    at each chosen answer the model's concept mastery ``[points, C + 1]`` (success scale) and
    the own evidence so far (concept id -> (evidence mastery, own answers))."""
    from ..importer import SOURCE_UNTIMED
    from ..states import concepts_of_items, replay_histories

    model = ctx.model
    rows = session.execute(
        select(
            Interaction.event_id,
            Interaction.timestamp,
            Interaction.item_id,
            Interaction.correct,
            Interaction.source,
        )
        .where(Interaction.learner_id == learner.id)
        .order_by(Interaction.timestamp, Interaction.event_id)
    ).all()
    n = len(rows)
    item_pos = items.positions(np.array([r[2] for r in rows], dtype=np.int64))
    hist = [
        (r[0], as_utc(r[1]), int(p), int(r[3]), r[4] != SOURCE_UNTIMED)
        for r, p in zip(rows, item_pos.tolist(), strict=True)
    ]
    counts = np.zeros(len(ctx.cat.concept_ext), dtype=np.int64)
    if n:
        cnt = items.link_start[item_pos + 1] - items.link_start[item_pos]
        cs = items.link_concept[_ranges(items.link_start[item_pos], cnt)]
        counts = np.bincount(cs, minlength=len(ctx.cat.concept_ext))
    if n == 0:
        empty = np.zeros((0, 1), dtype=np.float32)
        return hist, np.zeros(0, dtype=np.int64), empty, [], counts
    chosen = (
        np.arange(n)
        if n <= max_points
        else np.unique(np.round(np.linspace(0, n - 1, max_points)).astype(np.int64))
    )
    first = as_utc(learner.first_seen)
    if first is None or hist[0][1] < first:
        first = hist[0][1]
    keep = np.zeros(n, dtype=bool)
    keep[chosen] = True
    replay = [(items.ext[h[2]], h[3], h[1], h[0]) for h in hist]
    concepts_of = concepts_of_items(session, org_id=learner.org_id, item_ext=[x[0] for x in replay])
    snaps: list[Any] = []
    own: list[dict[str, tuple[float, int]]] = []

    def capture(t: int, state: Any, evs: list[Any]) -> None:
        if keep[t]:
            snaps.append(state)
            own.append({c: (e.p, e.n) for c, e in evs[0].items()})

    replay_histories(model, [replay], [first], concepts_of, after_step=capture)
    mastery = concept_mastery_many(model, stack_states(model, snaps))
    return hist, chosen, mastery, own, counts
