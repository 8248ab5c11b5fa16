"""What a teacher acts on, per group: the class overview (each student's concepts by status,
last activity and what the student is ready to learn next), what to reteach (per concept, how
many students struggle) and suggested small groups (students with similar needs).

Everything rests on the evidence-based statuses of :mod:`tutor.evidence`, the same as
``GET /v1/learners/{id}/mastery`` and the recommender: *mastered* needs the student's own
answers (``mastery_min_answers`` and evidence at ``mastery_threshold``), *struggling* is a run
of wrong answers or many questions without mastery, *learning* is in between, and a concept
without own answers is *not started* (the model's estimate is shown apart, never counted as
mastered). One reported mastery per cell, on the organisation's scale: the evidence where the
student answered the concept, the model's estimate otherwise.

Computed from the stored learner states and their evidence (stale ones rebuilt by the one
batched replay and kept) and cached per group, model, catalogue version, rule and scale; after
new answers only the learners who answered are read and scored again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from . import analytics as an
from . import evidence as evidence_mod
from .db import Group, LearnerState, Organisation
from .evidence import STATUSES, EvidenceRule
from .runtime import concept_mastery_many, decode_many
from .service import as_utc

NOT_STARTED, ESTIMATED, LEARNING, MASTERED, STRUGGLING = range(len(STATUSES))
#: concepts listed as ready to learn, per student
READY_CONCEPTS = 3
#: students named per concept on the what-to-reteach list
RETEACH_NAMES = 10
#: suggested groups: at most this many, of about this many students, none below the minimum
MAX_GROUPS = 5
TARGET_GROUP_SIZE = 8
MIN_GROUP_STUDENTS = 3


def wilson(k: float, n: float, z: float = 1.96) -> tuple[float | None, float | None]:
    """Wilson score interval of a proportion ``k / n`` (95% by default); None without data.
    Honest for small ``n`` and for proportions of 0 or 1, where the normal interval is not."""
    if n <= 0:
        return None, None
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def mastery_scale(org: Organisation, settings: Any) -> str:
    """The organisation's scale of estimates (``reachable`` or ``success``)."""
    value = (org.settings or {}).get("mastery_scale")
    if value is None and settings is not None:
        value = getattr(settings, "mastery_scale", None)
    return str(value or "reachable")


def rule_json(rule: EvidenceRule) -> dict[str, float | int]:
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

    def lookup(self, ctx: an._Context) -> tuple[dict[int, int], np.ndarray]:
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
    ctx: an._Context,
    group: Group,
    members: an._Members,
    settings: Any = None,
    at: datetime | None = None,
) -> GroupStatus:
    """The statuses and reported mastery of every member. Cached per group, model, catalogue,
    rule and scale; when only some members answered since (a live class), only their rows
    are read and scored again."""
    rule = an._rule(org, settings)
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
    prev = an._GROUP.get(key)
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
        _score_rows(session, org, ctx, members, which, gs, at)
    an._GROUP.put(key, (members.fingerprint, gs, members.ids.copy(), members.n_answers.copy()))
    return gs


def _score_rows(
    session: Session,
    org: Organisation,
    ctx: an._Context,
    members: an._Members,
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
        items = an._item_index(session, org, ctx)
        rebuilt = an._rebuild_states(session, ctx, items, members, stale)
        by_learner = {int(st.learner_id): st.evidence for st in session.info.get("rebuilt", [])}
        pos = {k: j for j, k in enumerate(which.tolist())}
        for k, blob in zip(stale, rebuilt, strict=True):
            blobs[pos[k]] = blob
            raws[pos[k]] = by_learner.get(int(members.ids[k]))
    states = decode_many(model, blobs)
    times = an._at_times(model, members, at)
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


def _ready(ctx: an._Context, gs: GroupStatus, k: int, n: int = READY_CONCEPTS) -> list[int]:
    """A student's next concepts (column indices): not mastered, not struggled with, every
    prerequisite mastered, with items to practise; first those the student is learning, then
    those its mastered prerequisites have just opened, then concepts without prerequisites,
    each in curriculum order (so that the list follows the student, not only the curriculum's
    first steps)."""
    col_of, has_items = gs.lookup(ctx)
    st = gs.status[k]
    tiers: tuple[list[int], list[int], list[int]] = ([], [], [])
    for j, p in enumerate(gs.cols):
        if st[j] in (MASTERED, STRUGGLING) or not has_items[p]:
            continue
        parents = [col_of[q] for q in ctx.view["parents"][p] if q in col_of]
        if not all(st[q] == MASTERED for q in parents):
            continue
        tier = 0 if st[j] == LEARNING else (1 if parents else 2)
        tiers[tier].append(j)
    return [j for tier in tiers for j in tier][:n]


def _concept_ref(ctx: an._Context, p: int) -> dict[str, str]:
    return {"concept_id": ctx.cat.concept_ext[p], "name": ctx.cat.name(p)}


STUDENT_SORTS = ("name", "struggling", "mastered", "not_started", "last_activity")


# ---------------------------------------------------------------------- class overview
def class_overview(
    session: Session,
    *,
    org: Organisation,
    group: Group,
    settings: Any = None,
    sort: str = "name",
    limit: int = 100,
    offset: int = 0,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Per student: concepts mastered / learning / struggling / not started, own answers,
    last activity and days without an answer (against the same clock as the at-risk list:
    :func:`tutor.analytics.activity_reference`), the concepts struggled with and the next
    ones to learn."""
    if sort not in STUDENT_SORTS:
        raise an.Invalid(f"unknown sort {sort!r}; expected one of {', '.join(STUDENT_SORTS)}")
    ctx = an._context(session, org)
    members = an._members(session, group)
    gs = group_status(session, org=org, ctx=ctx, group=group, members=members, settings=settings)
    counts = gs.counts(1)
    inactive = float(an.setting(org, "risk_inactive_days", settings))
    ref, live = an.activity_reference(members, now, inactive)
    days = an.inactive_days(members, ref)
    n = len(members.ids)
    labels = [members.label(k) for k in range(n)]
    if sort == "name":
        order = sorted(range(n), key=lambda k: (labels[k].casefold(), members.ext[k]))
    elif sort == "last_activity":
        order = sorted(range(n), key=lambda k: (-np.nan_to_num(days[k], nan=np.inf), labels[k]))
    else:
        order = sorted(range(n), key=lambda k: (-int(counts[sort][k]), labels[k].casefold()))
    students = []
    for k in order[offset : offset + limit]:
        struggling = [gs.cols[j] for j in np.flatnonzero(gs.status[k] == STRUGGLING)]
        students.append(
            {
                "learner_id": members.ext[k],
                "name": members.names[k],
                "label": labels[k],
                **{s: int(v[k]) for s, v in counts.items()},
                "answers": int(members.n_answers[k]),
                "last_activity": an._iso(members.last_answer[k]),
                "days_inactive": an._rnd(days[k], 4),
                "struggling_on": [_concept_ref(ctx, p) for p in struggling],
                "ready_to_learn": [_concept_ref(ctx, gs.cols[j]) for j in _ready(ctx, gs, k)],
            }
        )
    return {
        "group": _group_ref(group, n),
        "model": ctx.model_ref(),
        "rule": rule_json(gs.rule),
        "rule_text": rule_text(gs.rule),
        "n_concepts": len(gs.cols),
        "latest_activity": an._iso(members.latest),
        "reference_time": an._iso(ref),
        "reference": an._reference_words(ref, live),
        "timed": ref is not None,
        "students": students,
        "total": n,
        "offset": offset,
        "limit": limit,
    }


def _student(members: an._Members, k: int) -> dict[str, str]:
    return {"learner_id": members.ext[k], "label": members.label(k)}


def _group_ref(group: Group, n: int) -> dict[str, Any]:
    return {"id": group.external_id, "name": group.name, "learners": n}


# ---------------------------------------------------------------------- what to reteach
def reteach(
    session: Session,
    *,
    org: Organisation,
    group: Group,
    settings: Any = None,
    limit: int = 100,
    offset: int = 0,
    names: int | None = RETEACH_NAMES,
) -> dict[str, Any]:
    """Per concept the group has practised: how many students struggle, are learning, have
    mastered it or not started; most struggling first (then most learning, then curriculum
    order), with the struggling students named (the first ``names`` by name; None: all)."""
    ctx = an._context(session, org)
    members = an._members(session, group)
    gs = group_status(session, org=org, ctx=ctx, group=group, members=members, settings=settings)
    counts = gs.counts(0)
    practised = (gs.answers > 0).sum(0)
    # mean evidence mastery of the students who answered the concept
    own_sum = np.where(gs.answers > 0, gs.mastery, 0.0).sum(0)
    mean_own = np.where(practised > 0, own_sum / np.maximum(practised, 1), np.nan)
    cols = [j for j in range(len(gs.cols)) if practised[j] > 0]
    cols.sort(key=lambda j: (-int(counts["struggling"][j]), -int(counts["learning"][j]), j))
    rows = []
    for j in cols[offset : offset + limit]:
        who = np.flatnonzero(gs.status[:, j] == STRUGGLING)
        who = sorted(who.tolist(), key=lambda k: (members.label(k).casefold(), members.ext[k]))
        total_ans = int(gs.answers[:, j].sum())
        rows.append(
            {
                **_concept_ref(ctx, gs.cols[j]),
                "curriculum_position": j + 1,
                **{s: int(v[j]) for s, v in counts.items()},
                "practised_by": int(practised[j]),
                "answers": total_ans,
                "success_rate": an._rnd(gs.correct[:, j].sum() / total_ans if total_ans else None),
                "mean_mastery": an._rnd(mean_own[j]),
                "struggling_students": [_student(members, k) for k in who[:names]],
            }
        )
    return {
        "group": _group_ref(group, len(members.ids)),
        "model": ctx.model_ref(),
        "rule": rule_json(gs.rule),
        "rule_text": rule_text(gs.rule),
        "concepts": rows,
        "total": len(cols),
        "offset": offset,
        "limit": limit,
    }


# ---------------------------------------------------------------------- suggested groups
def _cluster(x: np.ndarray, max_groups: int) -> np.ndarray:
    """k-means labels (deterministic) for groups a teacher can take aside: k aims at
    :data:`TARGET_GROUP_SIZE` students a group (at least 2, at most ``max_groups``) and is
    lowered until every group has at least :data:`MIN_GROUP_STUDENTS`; one group where no
    split allows that."""
    n = len(x)
    uniq = len(np.unique(x, axis=0)) if n else 0
    k = int(np.clip(round(n / TARGET_GROUP_SIZE), 2, max(max_groups, 2)))
    k = min(k, max_groups, n // MIN_GROUP_STUDENTS, uniq)
    if k < 2 or x.shape[1] == 0:
        return np.zeros(n, dtype=np.int64)
    from sklearn.cluster import KMeans

    while k >= 2:
        labels = KMeans(n_clusters=k, n_init=4, random_state=0).fit_predict(x)
        if np.bincount(labels, minlength=k).min() >= MIN_GROUP_STUDENTS:
            return labels.astype(np.int64)
        k -= 1
    return np.zeros(n, dtype=np.int64)


def suggested_groups(
    session: Session,
    *,
    org: Organisation,
    group: Group,
    settings: Any = None,
    max_groups: int = MAX_GROUPS,
) -> dict[str, Any]:
    """Students with similar needs in a few groups for small-group teaching: k-means over
    each active student's mastery vector on the concepts the class has practised (the
    reported mastery of the grid, one scale: own evidence where the student answered the
    concept, the model's estimate where not), about :data:`TARGET_GROUP_SIZE` students a
    group; each group with the concepts it needs (most members struggling or learning, by
    the evidence statuses) and the concept most of its members are ready to learn next."""
    ctx = an._context(session, org)
    members = an._members(session, group)
    gs = group_status(session, org=org, ctx=ctx, group=group, members=members, settings=settings)
    key = (
        ctx.scope,
        "groups",
        group.id,
        ctx.model.model_id,
        ctx.cat.version,
        tuple(rule_json(gs.rule).values()),
        gs.scale,
        max_groups,
        hash(tuple(members.names)),
    )
    hit = an._current(key, members)
    if hit is None:
        hit = an._keep(key, members, _suggest(ctx, gs, members, max_groups))
    return {"group": _group_ref(group, len(members.ids)), "model": ctx.model_ref(), **hit}


def _suggest(
    ctx: an._Context, gs: GroupStatus, members: an._Members, max_groups: int
) -> dict[str, Any]:
    active = np.flatnonzero(members.n_answers > 0)
    practised = np.flatnonzero((gs.answers > 0).any(0))
    x = np.nan_to_num(gs.mastery[active][:, practised], nan=0.0)
    labels = _cluster(x, max_groups) if len(active) else np.zeros(0, dtype=np.int64)
    groups = []
    for g in sorted(set(np.asarray(labels).tolist())):
        who = active[np.asarray(labels) == g]
        st = gs.status[who][:, practised]
        need = (st == STRUGGLING).sum(0) * 2 + (st == LEARNING).sum(0)
        top = [int(practised[j]) for j in np.argsort(-need, kind="stable") if need[j] > 0][:3]
        ready: dict[int, int] = {}
        for k in who.tolist():
            nxt = _ready(ctx, gs, k, 1)
            if nxt:
                ready[nxt[0]] = ready.get(nxt[0], 0) + 1
        ready_col = max(ready, key=lambda j: (ready[j], -j)) if ready else None
        counts = {s: float(v[who].mean()) for s, v in gs.counts(1).items()}
        groups.append(
            {
                "students": [_student(members, k) for k in who.tolist()],
                "size": len(who),
                "mean_counts": {s: round(v, 2) for s, v in counts.items()},
                "needs": [
                    {
                        **_concept_ref(ctx, gs.cols[j]),
                        "struggling": int((gs.status[who, j] == STRUGGLING).sum()),
                        "learning": int((gs.status[who, j] == LEARNING).sum()),
                    }
                    for j in top
                ],
                "ready_to_learn": None
                if ready_col is None
                else {**_concept_ref(ctx, gs.cols[ready_col]), "students": ready[ready_col]},
            }
        )
    # the neediest group first: most struggling per member, then most learning
    groups.sort(
        key=lambda g: (-g["mean_counts"]["struggling"], -g["mean_counts"]["learning"], -g["size"])
    )
    for k, g in enumerate(groups):
        g["group"] = k + 1
        g["summary"] = _group_summary(g)
    idle = [k for k in range(len(members.ids)) if members.n_answers[k] == 0]
    return {
        "method": (
            "k-means over each student's mastery on the "
            f"{len(practised)} concepts the class has practised (own evidence where "
            "answered, else the model's estimate); about "
            f"{TARGET_GROUP_SIZE} students a group, at most {max_groups} groups, none "
            f"below {MIN_GROUP_STUDENTS}"
        ),
        "silhouette": _silhouette(x, labels),
        "groups": groups,
        "not_started": [_student(members, k) for k in idle],
    }


def _silhouette(x: np.ndarray, labels: np.ndarray) -> float | None:
    """How well separated the groups are (-1 .. 1; None for one group): near 0, students
    sit between groups and the split is a convenience more than a finding."""
    if len(np.unique(labels)) < 2:
        return None
    from sklearn.metrics import silhouette_score

    return round(float(silhouette_score(x, labels)), 3)


def _group_summary(g: dict[str, Any]) -> str:
    needs = g["needs"]
    struggling = [c["name"] for c in needs if c["struggling"]]
    if struggling:
        text = "struggling with " + ", ".join(struggling[:2])
    elif needs:
        text = "working on " + ", ".join(c["name"] for c in needs[:2])
    else:
        text = "no open work on the practised concepts"
    if g["ready_to_learn"] is not None:
        text += f"; next: {g['ready_to_learn']['name']}"
    return text
