"""Every group member's evidence status and reported mastery per concept
(:func:`group_status`), shared by the grid, the learners at risk and the teacher's views.

The statuses are those of :mod:`tutor.evidence`, the same as ``GET
/v1/learners/{id}/mastery`` and the recommender: *mastered* needs the student's own answers
(``mastery_min_answers`` and evidence at ``mastery_threshold``), *struggling* is a run of
wrong answers or many questions without mastery, *learning* is in between, and a concept
without own answers is *not started* (the model's estimate is shown apart, never counted as
mastered). One reported mastery per cell, on the organisation's scale: the evidence where the
student answered the concept, the model's estimate otherwise.

The members' stored learner states and evidence are read in one query, decoded into one
batched state (:func:`tutor.runtime.decode_many`) and scored by one batched ``predict``
(:func:`tutor.runtime.concept_mastery_many`). Stale or missing states (after a model swap or
a bulk import) are rebuilt by one batched replay and kept, as the mastery route keeps its.
Cached per group, model, catalogue version, rule and scale; after new answers only the
learners who answered are read and scored again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import evidence as evidence_mod
from ..db import Group, Learner, LearnerState, Organisation
from ..evidence import STATUSES, EvidenceRule
from ..runtime import SECONDS_PER_DAY, LoadedModel, concept_mastery_many, decode_many
from ..service import as_utc
from ..settings import org_setting
from ..states import in_chunks, rebuild_states
from .cache import _GROUP
from .context import _Context, _Members

NOT_STARTED, ESTIMATED, LEARNING, MASTERED, STRUGGLING = range(len(STATUSES))


def mastery_scale(org: Organisation, settings: Any) -> str:
    """The organisation's scale of estimates (``reachable`` or ``success``)."""
    return str(org_setting(org, settings, "mastery_scale", "reachable"))


def _rule(org: Organisation, settings: Any) -> EvidenceRule:
    from ..settings import evidence_rule

    return EvidenceRule() if settings is None else evidence_rule(org.settings, settings)


def rule_json(rule: EvidenceRule) -> dict[str, float | int]:
    """The rule's thresholds as the routes give them."""
    return {
        "mastery_threshold": rule.mastery_threshold,
        "mastery_min_answers": rule.min_answers,
        "struggle_run": rule.struggle_run,
        "struggle_answers": rule.struggle_answers,
    }


def rule_text(rule: EvidenceRule) -> str:
    """The mastery criterion in a teacher's words (legends, table notes)."""
    return (
        f"mastered: at least {rule.min_answers} own answers and evidence mastery of at least "
        f"{rule.mastery_threshold:.2f}; struggling: {rule.struggle_run} wrong in a row or "
        f"{rule.struggle_answers} questions without mastery"
    )


@dataclass
class GroupStatus:
    """Every member's status per concept (the model's concepts, in curriculum order)."""

    cols: list[int]  # catalogue concept positions
    status: np.ndarray  # [L, C] int8, index into STATUSES
    answers: np.ndarray  # [L, C] own answers
    correct: np.ndarray  # [L, C] own correct answers
    run: np.ndarray  # [L, C] the current run (> 0: correct in a row, < 0: wrong in a row)
    mastery: np.ndarray  # [L, C] reported: evidence where own answers, else the estimate
    estimate: np.ndarray  # [L, C] the model's estimate (organisation's scale)
    rule: EvidenceRule
    scale: str

    def lookup(self, ctx: _Context) -> tuple[dict[int, int], np.ndarray]:
        """Column of each concept position, and which concepts have active items."""
        if not hasattr(self, "_lookup"):
            has = np.bincount(ctx.cat.link_concept, minlength=len(ctx.cat.concept_ext)) > 0
            self._lookup = ({p: j for j, p in enumerate(self.cols)}, has)
        return self._lookup

    def counts(self, axis: int) -> dict[str, np.ndarray]:
        """Teachers' counts along an axis (1: per student, 0: per concept); *not started*
        joins the two statuses without own answers."""
        st = self.status
        return {
            "mastered": (st == MASTERED).sum(axis),
            "learning": (st == LEARNING).sum(axis),
            "struggling": (st == STRUGGLING).sum(axis),
            "not_started": ((st == NOT_STARTED) | (st == ESTIMATED)).sum(axis),
        }


def group_status(
    session: Session,
    *,
    org: Organisation,
    ctx: _Context,
    group: Group,
    members: _Members,
    settings: Any = None,
    at: datetime | None = None,
) -> GroupStatus:
    """The statuses and reported mastery of every member. Cached per group, model, catalogue,
    rule and scale; when only some members answered since (a live class), only their rows
    are read and scored again."""
    rule = _rule(org, settings)
    scale = mastery_scale(org, settings)
    model = ctx.model
    at_key = as_utc(at).isoformat() if at is not None and model.forgets else None
    key = (
        ctx.scope,
        "status",
        group.id,
        model.model_id,
        ctx.cat.version,
        tuple(rule_json(rule).values()),
        scale,
        at_key,
    )
    prev = _GROUP.get(key)
    if prev is not None and prev[0] == members.fingerprint:
        return prev[1]
    # every concept of the organisation, in curriculum order: one the model does not know
    # (added after training) has no estimate, but the learners' own evidence on it counts
    cols = [int(p) for p in ctx.view["curriculum_pos"]]
    n, c = len(members.ids), len(cols)
    if prev is not None and np.array_equal(prev[2], members.ids):
        gs = prev[1]
        which = np.flatnonzero(prev[3] != members.n_answers)
        gs = GroupStatus(
            gs.cols,
            gs.status.copy(),
            gs.answers.copy(),
            gs.correct.copy(),
            gs.run.copy(),
            gs.mastery.copy(),
            gs.estimate.copy(),
            rule,
            scale,
        )
    else:
        which = np.arange(n)
        gs = GroupStatus(
            cols,
            np.zeros((n, c), dtype=np.int8),
            np.zeros((n, c), dtype=np.int32),
            np.zeros((n, c), dtype=np.int32),
            np.zeros((n, c), dtype=np.int32),
            np.full((n, c), np.nan),
            np.full((n, c), np.nan),
            rule,
            scale,
        )
    if len(which) and c:
        _score_rows(session, ctx, members, which, gs, at)
    _GROUP.put(key, (members.fingerprint, gs, members.ids.copy(), members.n_answers.copy()))
    return gs


def _score_rows(
    session: Session,
    ctx: _Context,
    members: _Members,
    which: np.ndarray,
    gs: GroupStatus,
    at: datetime | None,
) -> None:
    """Fill the rows ``which`` of ``gs``: each member's stored state (stale ones rebuilt by
    the batched replay and kept) scored in one batch, and its own evidence."""
    model = ctx.model
    ids = members.ids[which].tolist()
    stored: dict[int, tuple[bytes, int, Any]] = {}
    with session.no_autoflush:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for lid, blob, n_applied, raw in session.execute(
                select(
                    LearnerState.learner_id,
                    LearnerState.state,
                    LearnerState.n_applied,
                    LearnerState.evidence,
                ).where(LearnerState.model_id == model.model_id, LearnerState.learner_id.in_(chunk))
            ):
                # a state without its evidence (from before migration 0002) is rebuilt
                stored[int(lid)] = (blob, -1 if raw is None else int(n_applied), raw)
    blobs: list[bytes] = []
    raws: list[Any] = []
    stale: list[int] = []
    for k in which.tolist():
        row = stored.get(int(members.ids[k]))
        if row is None or row[1] != members.n_answers[k]:
            stale.append(k)
            blobs.append(b"")
            raws.append(None)
        else:
            blobs.append(row[0])
            raws.append(row[2])
    if stale:
        ids = [int(members.ids[k]) for k in stale]
        learners: dict[int, Learner] = {}
        for chunk in in_chunks(ids):
            q = select(Learner).where(Learner.id.in_(chunk))
            learners.update((lr.id, lr) for lr in session.scalars(q))
        rebuilt = rebuild_states(
            session,
            model=model,
            learners=[learners[i] for i in ids],
            update_learners=False,
            keep_after_read=True,
        )
        pos = {k: j for j, k in enumerate(which.tolist())}
        for k, (_, row) in zip(stale, rebuilt, strict=True):
            blobs[pos[k]] = row.state
            raws[pos[k]] = row.evidence
    states = decode_many(model, blobs)
    times = _at_times(model, members, at)
    success = concept_mastery_many(model, states, None if times is None else times[which])
    full = model.scaled_mastery(success) if gs.scale == "reachable" else success
    cidx = ctx.view["concept_idx"][gs.cols]
    est = np.asarray(full, dtype=np.float64)[:, cidx]
    est[:, cidx == 0] = np.nan
    gs.estimate[which] = est
    colpos = {ctx.cat.concept_ext[p]: j for j, p in enumerate(gs.cols)}
    code = {s: k for k, s in enumerate(STATUSES)}
    for r, k in enumerate(which.tolist()):
        gs.status[k] = ESTIMATED if members.n_answers[k] > 0 else NOT_STARTED
        gs.answers[k] = gs.correct[k] = gs.run[k] = 0
        gs.mastery[k] = gs.estimate[k]
        for cid, e in evidence_mod.load(raws[r]).items():
            j = colpos.get(cid)
            if j is None or e.n <= 0:
                continue
            gs.answers[k, j], gs.correct[k, j], gs.run[k, j] = e.n, e.n_correct, e.run
            gs.mastery[k, j] = e.p
            gs.status[k, j] = code[evidence_mod.status(e, gs.rule, any_answers=True)]


def _at_times(model: LoadedModel, members: _Members, at: datetime | None) -> np.ndarray | None:
    """Per member, :meth:`LoadedModel.time_value` of ``at`` (None: at each last answer)."""
    if at is None or not model.forgets:
        return None
    days = (as_utc(at).timestamp() - members.first_seen) / SECONDS_PER_DAY
    return np.maximum(days, 0.0)
