"""What a teacher acts on, per group: the class overview (each student's concepts by status,
last activity and what the student is ready to learn next), what to reteach (per concept, how
many students struggle) and suggested small groups (students with similar needs).

Everything rests on the evidence statuses of :func:`tutor.analytics.status.group_status`
(cached per group; after new answers only the learners who answered are scored again)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from ..db import Group, Organisation
from ..service import Invalid
from .activity import _reference_words, activity_reference, inactive_days
from .cache import setting
from .context import _Context, _context, _current, _group_ref, _keep, _Members, _members
from .status import LEARNING, MASTERED, STRUGGLING, GroupStatus, group_status, rule_json, rule_text
from .values import _iso, _rnd

#: concepts listed as ready to learn, per student
READY_CONCEPTS = 3
#: students named per concept on the what-to-reteach list
RETEACH_NAMES = 10
#: suggested groups: at most this many, of about this many students, none below the minimum
MAX_GROUPS = 5
TARGET_GROUP_SIZE = 8
MIN_GROUP_STUDENTS = 3


def _ready(ctx: _Context, gs: GroupStatus, k: int, n: int = READY_CONCEPTS) -> list[int]:
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


def _concept_ref(ctx: _Context, p: int) -> dict[str, str]:
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
    :func:`tutor.analytics.activity.activity_reference`), the concepts struggled with and the next
    ones to learn."""
    if sort not in STUDENT_SORTS:
        raise Invalid(f"unknown sort {sort!r}; expected one of {', '.join(STUDENT_SORTS)}")
    ctx = _context(session, org)
    members = _members(session, group)
    gs = group_status(session, org=org, ctx=ctx, group=group, members=members, settings=settings)
    counts = gs.counts(1)
    inactive = float(setting(org, "risk_inactive_days", settings))
    ref, live = activity_reference(members, now, inactive)
    days = inactive_days(members, ref)
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
                "last_activity": _iso(members.last_answer[k]),
                "days_inactive": _rnd(days[k], 4),
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
        "latest_activity": _iso(members.latest),
        "reference_time": _iso(ref),
        "reference": _reference_words(ref, live),
        "timed": ref is not None,
        "students": students,
        "total": n,
        "offset": offset,
        "limit": limit,
    }


def _student(members: _Members, k: int) -> dict[str, str]:
    return {"learner_id": members.ext[k], "label": members.label(k)}


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
    ctx = _context(session, org)
    members = _members(session, group)
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
                "success_rate": _rnd(gs.correct[:, j].sum() / total_ans if total_ans else None),
                "mean_mastery": _rnd(mean_own[j]),
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
    :data:`TARGET_GROUP_SIZE` students a group (at least 2, at most ``max_groups``, at most
    one group per :data:`MIN_GROUP_STUDENTS` students). A group k-means leaves smaller than
    :data:`MIN_GROUP_STUDENTS` (a few students far from the rest: the class's weakest two)
    is filled with the students nearest to its centre (:func:`_fill_small`), so that those
    students get a group with the classmates closest to them instead of the class becoming
    one group; one group only where there are too few students or too few distinct ones."""
    n = len(x)
    uniq = len(np.unique(x, axis=0)) if n else 0
    k = int(np.clip(round(n / TARGET_GROUP_SIZE), 2, max(max_groups, 2)))
    k = min(k, max_groups, n // MIN_GROUP_STUDENTS, uniq)
    if k < 2 or x.shape[1] == 0:
        return np.zeros(n, dtype=np.int64)
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=4, random_state=0).fit(x)
    # a cluster k-means left empty (ties) is no group: number the others 0.. first
    used, labels = np.unique(km.labels_, return_inverse=True)
    return _fill_small(x, labels.astype(np.int64), km.cluster_centers_[used], MIN_GROUP_STUDENTS)


def _fill_small(x: np.ndarray, labels: np.ndarray, centres: np.ndarray, least: int) -> np.ndarray:
    """``labels`` with every group brought to at least ``least`` members (the caller keeps
    ``k * least <= n``): one student at a time, the one nearest to the smallest group's
    centre among the groups that can spare one."""
    labels = labels.copy()
    k = len(centres)
    dist = np.linalg.norm(x[:, None, :] - centres[None, :, :], axis=2)  # [n, k]
    while True:
        sizes = np.bincount(labels, minlength=k)
        small = np.flatnonzero(sizes < least)
        if not len(small):
            return labels
        g = int(small[np.argmin(sizes[small])])
        donors = np.flatnonzero(sizes[labels] > least)
        if not len(donors):  # cannot happen when k * least <= n; stop rather than loop
            return labels
        labels[donors[np.argmin(dist[donors, g])]] = g


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
    ctx = _context(session, org)
    members = _members(session, group)
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
    hit = _current(key, members)
    if hit is None:
        hit = _keep(key, members, _suggest(ctx, gs, members, max_groups))
    return {"group": _group_ref(group, len(members.ids)), "model": ctx.model_ref(), **hit}


def _suggest(ctx: _Context, gs: GroupStatus, members: _Members, max_groups: int) -> dict[str, Any]:
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
