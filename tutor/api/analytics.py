"""Analytics routes (``/v1/analytics/...``): group mastery grid, learner timeline, learning
curves, item statistics, learners at risk, model card.

Roles: admin (any group or learner of its organisation), teacher (its groups and their
learners); a learner key reads only its own timeline; what a key may not see is 404. The
computations are in :mod:`tutor.analytics`; the JSON or CSV answers are built by
:mod:`tutor.api.tables`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from .. import states
from ..analytics import card, curves, grid, items, risk, teaching, timeline
from .deps import View, ViewDep, require_roles, visible_group, visible_learner
from .schemas import MAX_OFFSET, AtQuery, ModelRef
from .tables import (
    FormatQuery,
    LimitQuery,
    TableFn,
    page_size,
    respond,
    rows_at,
    table_route,
    wants_csv,
)

router = APIRouter(prefix="/analytics", tags=["analytics"])


# ---------------------------------------------------------------------- response bodies
class GroupRef(BaseModel):
    id: str
    name: str
    learners: int


class ConceptRef(BaseModel):
    concept_id: str
    name: str


class GridRow(BaseModel):
    learner_id: str
    name: str
    #: per concept: the reported mastery (own evidence, else the estimate), its status and
    #: the learner's own answers (0: an estimate)
    mastery: list[float | None]
    status: list[str]
    answers: list[int]
    mean: float | None
    n_answers: int
    last_answer: str | None


class Rule(BaseModel):
    mastery_threshold: float
    mastery_min_answers: int
    struggle_run: int
    struggle_answers: int


class MasteryGrid(BaseModel):
    group: GroupRef
    model: ModelRef
    at: str | None
    scale: str
    rule: Rule
    rule_text: str
    concepts: list[ConceptRef]
    learners: list[GridRow]
    concept_means: list[float | None]
    #: per concept, how many members are mastered / learning / struggling / not started, and
    #: how many practised it (own answers)
    concept_counts: dict[str, list[int]]
    offset: int
    limit: int


class StudentRow(BaseModel):
    learner_id: str
    name: str
    label: str
    mastered: int
    learning: int
    struggling: int
    not_started: int
    answers: int
    last_activity: str | None
    days_inactive: float | None
    struggling_on: list[ConceptRef]
    ready_to_learn: list[ConceptRef]


class ClassOverview(BaseModel):
    group: GroupRef
    model: ModelRef
    rule: Rule
    rule_text: str
    n_concepts: int
    latest_activity: str | None
    #: inactivity is measured against this time (see the at-risk route), None: no clock
    reference_time: str | None
    reference: str
    timed: bool
    students: list[StudentRow]
    total: int
    offset: int
    limit: int


class StudentRef(BaseModel):
    learner_id: str
    label: str


class ReteachRow(BaseModel):
    concept_id: str
    name: str
    curriculum_position: int
    struggling: int
    learning: int
    mastered: int
    not_started: int
    practised_by: int
    answers: int
    success_rate: float | None
    mean_mastery: float | None
    #: the struggling students (at most 10, by name; ``struggling`` counts them all)
    struggling_students: list[StudentRef]


class Reteach(BaseModel):
    group: GroupRef
    model: ModelRef
    rule: Rule
    rule_text: str
    concepts: list[ReteachRow]
    total: int
    offset: int
    limit: int


class GroupNeed(BaseModel):
    concept_id: str
    name: str
    struggling: int
    learning: int


class ReadyConcept(BaseModel):
    concept_id: str
    name: str
    students: int


class SuggestedGroup(BaseModel):
    group: int
    summary: str
    size: int
    students: list[StudentRef]
    mean_counts: dict[str, float]
    needs: list[GroupNeed]
    ready_to_learn: ReadyConcept | None


class SuggestedGroups(BaseModel):
    group: GroupRef
    model: ModelRef
    method: str
    #: how well the groups are separated (-1 .. 1; None: one group)
    silhouette: float | None
    groups: list[SuggestedGroup]
    not_started: list[StudentRef]


class TimelinePoint(BaseModel):
    index: int
    event_id: str
    timestamp: str
    item_id: str
    correct: int
    concepts: list[str]
    #: per chosen concept after this answer: the reported mastery (own evidence, else the
    #: estimate), the own answers so far, and the model's estimate
    mastery: list[float | None]
    answers: list[int]
    estimate: list[float | None]


class Timeline(BaseModel):
    learner_id: str
    model: ModelRef
    concepts: list[ConceptRef]
    scale: str
    #: whether the answers carry real times (imported answers without a clock do not)
    timed: bool
    points: list[TimelinePoint]


class CurvePoint(BaseModel):
    opportunity: int
    learners: int
    observed_error: float | None
    #: 95% Wilson interval of the observed error rate
    observed_low: float | None
    observed_high: float | None
    predicted_error: float | None


class Curve(BaseModel):
    concept_id: str
    name: str
    points: list[CurvePoint]
    #: opportunities left out for having fewer than ``min_learners`` learners
    hidden_points: int


class LearningCurves(BaseModel):
    group: GroupRef
    model: ModelRef
    max_opportunity: int
    min_learners: int
    curves: list[Curve]


class ItemStat(BaseModel):
    item_id: str
    concepts: list[str]
    concept_names: list[str]
    attempts: int
    learners: int
    observed_success: float | None
    observed_low: float | None
    observed_high: float | None
    #: enough attempts and learners to be flagged (organisation settings)
    enough_data: bool
    predicted_success: float | None
    difficulty: float | None
    discrimination: float | None
    flagged: bool
    flag_reason: str | None


class ItemStats(BaseModel):
    group: GroupRef
    model: ModelRef
    difficulty_source: str
    thresholds: dict[str, float]
    items: list[ItemStat]
    total: int
    offset: int
    limit: int


class RiskLearner(BaseModel):
    learner_id: str
    name: str
    label: str
    severity: float
    reasons: list[str]
    mean_mastery: float | None
    mastery_change: float | None
    days_inactive: float | None
    last_activity: str | None


class AtRisk(BaseModel):
    group: GroupRef
    model: ModelRef
    thresholds: dict[str, float]
    reference_time: str | None
    reference: str
    timed: bool
    covered_concepts: list[str]
    learners: list[RiskLearner]
    total: int
    offset: int
    limit: int


class ModelCard(BaseModel):
    model: dict[str, Any]
    training: dict[str, Any]
    metrics: dict[str, Any] | None
    calibration: list[dict[str, Any]] | None
    prerequisite_graph: dict[str, Any] | None
    traits: dict[str, Any] | None


# ---------------------------------------------------------------------- helpers
def _group_answer(
    view: View,
    group_id: str,
    fmt: str | None,
    compute: Callable[..., dict[str, Any]],
    model: type[BaseModel],
    table: TableFn,
    name: str,
) -> Any:
    """The answer of a route over a group: the group (404 unless the key may see it; looked
    up here, in the route, so that a bad query parameter stays a 422),
    ``compute(session, org=, group=, settings=)``, the model states it rebuilt kept (the
    read transaction ends), then the body as ``model`` or its ``table`` as
    ``{group_id}-{name}.csv``."""
    group = visible_group(view, group_id)
    body = compute(view.session, org=view.org, group=group, settings=view.settings)
    states.keep_rebuilt_states(view.session)
    return respond(view.request, fmt, model, body, table, f"{group_id}-{name}")


def _concept_list(raw: str | None) -> list[str] | None:
    if raw is None or not raw.strip():
        return None
    return [c.strip() for c in raw.split(",") if c.strip()]


OffsetQuery = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
#: the orders of the class overview and the item statistics (OpenAPI lists them)
StudentSort = Literal[teaching.STUDENT_SORTS]  # type: ignore[valid-type]
ItemSort = Literal[items.ITEM_SORTS]  # type: ignore[valid-type]
#: the page size of the mastery grid and the at-risk list
PageQuery = Annotated[int | None, Query(ge=1, le=1000, description="default 100; CSV: all")]


# ---------------------------------------------------------------------- teacher's views
#: the columns of the class overview's CSV (one row per student)
STUDENT_COLUMNS = [
    "learner_id",
    "name",
    "label",
    "mastered",
    "learning",
    "struggling",
    "not_started",
    "answers",
    "last_activity",
    "days_inactive",
    "struggling_on",
    "ready_to_learn",
]
_students_table = rows_at("students", STUDENT_COLUMNS)


@table_route(router, "/groups/{group_id}/students", ClassOverview)
def class_overview(
    group_id: str,
    view: ViewDep,
    sort: Annotated[StudentSort, Query(description="The order of the students")] = "name",
    limit: LimitQuery = None,
    offset: OffsetQuery = 0,
    format: FormatQuery = None,
) -> Any:
    """The class overview: per student, how many concepts are mastered, learning,
    struggling and not started (the evidence statuses of ``/v1/learners/{id}/mastery``),
    own answers, last activity (answers with real times), the concepts struggled with and
    the next ones to learn in the designed curriculum."""
    page = page_size(view.request, format, limit)
    compute = partial(teaching.class_overview, sort=sort, limit=page, offset=offset)
    return _group_answer(
        view, group_id, format, compute, ClassOverview, _students_table, "students"
    )


_reteach_table = rows_at(
    "concepts",
    [
        "concept_id",
        "name",
        "curriculum_position",
        "struggling",
        "learning",
        "mastered",
        "not_started",
        "practised_by",
        "answers",
        "success_rate",
        "mean_mastery",
        "struggling_students",
    ],
)


@table_route(router, "/groups/{group_id}/reteach", Reteach)
def reteach(
    group_id: str,
    view: ViewDep,
    limit: LimitQuery = None,
    offset: OffsetQuery = 0,
    format: FormatQuery = None,
) -> Any:
    """What to reteach: per concept the group has practised, how many students struggle,
    are learning, have mastered it or not started, most struggling first."""
    names = None if wants_csv(view.request, format) else teaching.RETEACH_NAMES
    page = page_size(view.request, format, limit)
    compute = partial(teaching.reteach, limit=page, offset=offset, names=names)
    return _group_answer(view, group_id, format, compute, Reteach, _reteach_table, "reteach")


def _groups_table(body: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    rows = []
    for g in body["groups"]:
        ready = g["ready_to_learn"]["name"] if g["ready_to_learn"] else None
        for st in g["students"]:
            rows.append(
                {
                    "group": g["group"],
                    "summary": g["summary"],
                    "learner_id": st["learner_id"],
                    "label": st["label"],
                    "needs": [c["name"] for c in g["needs"]],
                    "ready_to_learn": ready,
                }
            )
    for st in body["not_started"]:
        rows.append({"group": "", "summary": "no answers yet", **st})
    return rows, ["group", "summary", "learner_id", "label", "needs", "ready_to_learn"]


@table_route(router, "/groups/{group_id}/suggested-groups", SuggestedGroups)
def suggested_groups(
    group_id: str,
    view: ViewDep,
    max_groups: Annotated[int, Query(ge=1, le=10)] = teaching.MAX_GROUPS,
    format: FormatQuery = None,
) -> Any:
    """Suggested small groups: students with similar mastery on what the class practised
    (k-means, about 8 a group, none below 3), each group with the concepts it needs and what
    most of it is ready for next."""
    compute = partial(teaching.suggested_groups, max_groups=max_groups)
    return _group_answer(view, group_id, format, compute, SuggestedGroups, _groups_table, "groups")


# ---------------------------------------------------------------------- analytics
def _grid_table(body: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    rows = []
    for lr in body["learners"]:
        for c, m, st, n in zip(
            body["concepts"], lr["mastery"], lr["status"], lr["answers"], strict=True
        ):
            rows.append(
                {
                    "learner_id": lr["learner_id"],
                    "name": lr["name"],
                    "concept_id": c["concept_id"],
                    "concept": c["name"],
                    "status": st,
                    "mastery": m,
                    "own_answers": n,
                }
            )
    cols = ["learner_id", "name", "concept_id", "concept", "status", "mastery", "own_answers"]
    return rows, cols


@table_route(
    router, "/groups/{group_id}/mastery", MasteryGrid, " One CSV row per (learner, concept)."
)
def group_mastery(
    group_id: str,
    view: ViewDep,
    at: AtQuery = None,
    limit: PageQuery = None,
    offset: OffsetQuery = 0,
    format: FormatQuery = None,
) -> Any:
    """Learners x concepts (the model's concepts, in curriculum order): each cell's status,
    reported mastery and own answers, as ``/v1/learners/{id}/mastery`` gives them (own
    evidence where the learner answered the concept, the model's estimate where not); a
    page of learners; ``concept_means`` and ``concept_counts`` cover every member."""
    page = page_size(view.request, format, limit)
    compute = partial(grid.group_mastery, at=at, limit=page, offset=offset)
    return _group_answer(view, group_id, format, compute, MasteryGrid, _grid_table, "mastery")


def _timeline_table(body: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per answer; per concept the reported mastery, own answers and the estimate.
    Without real times (``timed`` false) the timestamp column is left empty."""
    names = [f"{c['name']} ({c['concept_id']})" for c in body["concepts"]]
    fields = [(f"mastery: {n}", f"own answers: {n}", f"estimate: {n}") for n in names]
    rows = []
    for p in body["points"]:
        row = {k: p[k] for k in ("index", "event_id", "item_id", "correct", "concepts")}
        row["timestamp"] = p["timestamp"] if body["timed"] else None
        for (m, a, e), vm, va, ve in zip(
            fields, p["mastery"], p["answers"], p["estimate"], strict=True
        ):
            row |= {m: vm, a: va, e: ve}
        rows.append(row)
    cols = ["index", "timestamp", "event_id", "item_id", "correct", "concepts"]
    return rows, cols + [f for trio in fields for f in trio]


@table_route(router, "/learners/{learner_id}/timeline", Timeline)
def learner_timeline(
    learner_id: str,
    view: ViewDep,
    concepts: Annotated[
        str | None,
        Query(
            description="Comma-separated concept ids (default: the most practised, up to "
            f"{timeline.TIMELINE_CONCEPTS}; at most {timeline.TIMELINE_MAX_CONCEPTS})"
        ),
    ] = None,
    max_points: Annotated[int, Query(ge=2, le=5000)] = 500,
    format: FormatQuery = None,
) -> Any:
    """The learner's answers in event order (``index`` 1 = the first answer) with the
    model's estimate of the chosen concepts after each; long histories are thinned to
    ``max_points`` evenly spaced points (the last answer always among them). ``timed``
    false: the answers were imported without a clock (their times are not dates)."""
    wanted = _concept_list(concepts)
    timeline.check_concept_count(wanted)  # a parameter error: 422 before the learner's 404
    learner = visible_learner(view.session, view.principal, learner_id)
    out = timeline.learner_timeline(
        view.session,
        org=view.org,
        learner=learner,
        concepts=wanted,
        max_points=max_points,
        settings=view.settings,
    )
    return respond(view.request, format, Timeline, out, _timeline_table, f"{learner_id}-timeline")


def _curves_table(body: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    rows = [
        {"concept_id": c["concept_id"], "concept": c["name"], **p}
        for c in body["curves"]
        for p in c["points"]
    ]
    cols = [
        "concept_id",
        "concept",
        "opportunity",
        "learners",
        "observed_error",
        "observed_low",
        "observed_high",
        "predicted_error",
    ]
    return rows, cols


@table_route(router, "/groups/{group_id}/learning-curves", LearningCurves)
def learning_curves(
    group_id: str,
    view: ViewDep,
    concepts: Annotated[
        str | None,
        Query(description="Comma-separated concept ids (default: every concept practised)"),
    ] = None,
    max_opportunity: Annotated[int, Query(ge=1, le=200)] = 20,
    format: FormatQuery = None,
) -> Any:
    """Per concept, the error rate at the k-th practice opportunity (the k-th answer of a
    learner on an item of the concept, in event order): observed with its 95% Wilson
    interval, and predicted by the model before each answer, with the number of learners;
    points with fewer than the ``curve_min_learners`` setting are left out."""
    compute = partial(
        curves.learning_curves, concepts=_concept_list(concepts), max_opportunity=max_opportunity
    )
    return _group_answer(view, group_id, format, compute, LearningCurves, _curves_table, "curves")


_items_table = rows_at(
    "items",
    [
        "item_id",
        "concepts",
        "concept_names",
        "attempts",
        "learners",
        "observed_success",
        "observed_low",
        "observed_high",
        "predicted_success",
        "difficulty",
        "discrimination",
        "enough_data",
        "flagged",
        "flag_reason",
    ],
)


@table_route(router, "/groups/{group_id}/items", ItemStats)
def item_statistics(
    group_id: str,
    view: ViewDep,
    sort: Annotated[ItemSort, Query(description="Item order (gap: |obs - pred|)")] = "attempts",
    desc: bool = True,
    limit: Annotated[int | None, Query(ge=1, le=1000, description="default 50; CSV: all")] = None,
    offset: OffsetQuery = 0,
    format: FormatQuery = None,
) -> Any:
    """Per item the group answered: attempts, learners, observed success (95% Wilson
    interval) and predicted success, difficulty, discrimination (where the model has such a
    parameter), and a flag where the observed success disagrees strongly with the model
    over enough attempts and learners (organisation settings)."""
    page = page_size(view.request, format, limit, 50)
    compute = partial(items.item_statistics, sort=sort, desc=desc, limit=page, offset=offset)
    return _group_answer(view, group_id, format, compute, ItemStats, _items_table, "items")


_risk_table = rows_at(
    "learners",
    [
        "learner_id",
        "name",
        "severity",
        "reasons",
        "mean_mastery",
        "mastery_change",
        "days_inactive",
        "last_activity",
    ],
)


@table_route(router, "/groups/{group_id}/at-risk", AtRisk)
def at_risk(
    group_id: str,
    view: ViewDep,
    limit: PageQuery = None,
    offset: OffsetQuery = 0,
    format: FormatQuery = None,
) -> Any:
    """Members who need attention, the most pressing first, each with its reasons ranked:
    concepts struggled with, low mastery on the concepts practised, falling estimates, no
    answers, inactivity against the group's own clock (thresholds:
    organisation settings)."""
    page = page_size(view.request, format, limit)
    compute = partial(risk.at_risk, limit=page, offset=offset)
    return _group_answer(view, group_id, format, compute, AtRisk, _risk_table, "at-risk")


@router.get("/model-card", response_model=ModelCard)
def model_card(view: ViewDep) -> ModelCard:
    """The active model: training data and run, test metrics, calibration table, and for
    PSI-KT the learned prerequisite graph (edges with probability > 0.5) and a summary of
    the learners' traits."""
    require_roles(view.principal, "admin", "teacher")
    return ModelCard.model_validate(card.model_card(view.session, org=view.org))
