"""Analytics routes (``/v1/analytics/...``): group mastery grid, learner timeline, learning
curves, item statistics, learners at risk, model card.

Roles: admin (any group or learner of its organisation), teacher (its groups and their
learners); a learner key reads only its own timeline; what a key may not see is 404. The
computations are in :mod:`tutor.analytics`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel
from sqlalchemy import select

from .. import analytics, service
from ..db import Group
from .deps import OrgDep, PrincipalDep, SessionDep, SettingsDep, require_roles, visible_learner

router = APIRouter(prefix="/analytics", tags=["analytics"])


# ---------------------------------------------------------------------- response bodies
class ModelRef(BaseModel):
    id: int
    name: str
    forgets: bool


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
    mastery: list[float | None]
    mean: float | None
    n_answers: int
    last_answer: str | None


class MasteryGrid(BaseModel):
    group: GroupRef
    model: ModelRef
    at: str | None
    concepts: list[ConceptRef]
    learners: list[GridRow]
    concept_means: list[float | None]
    offset: int
    limit: int


class TimelinePoint(BaseModel):
    index: int
    event_id: str
    timestamp: str
    item_id: str
    correct: int
    concepts: list[str]
    mastery: list[float | None]


class Timeline(BaseModel):
    learner_id: str
    model: ModelRef
    concepts: list[ConceptRef]
    points: list[TimelinePoint]


class CurvePoint(BaseModel):
    opportunity: int
    learners: int
    observed_error: float | None
    predicted_error: float | None


class Curve(BaseModel):
    concept_id: str
    name: str
    points: list[CurvePoint]


class LearningCurves(BaseModel):
    group: GroupRef
    model: ModelRef
    max_opportunity: int
    curves: list[Curve]


class ItemStat(BaseModel):
    item_id: str
    concepts: list[str]
    attempts: int
    learners: int
    observed_success: float | None
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
    reasons: list[str]
    mean_mastery: float | None
    mastery_change: float | None
    days_inactive: float | None


class AtRisk(BaseModel):
    group: GroupRef
    model: ModelRef
    thresholds: dict[str, float]
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
def _visible_group(session, principal, org, group_id: str) -> Group:  # noqa: ANN001
    """The group, if an admin or one of the teacher's groups; 404 otherwise."""
    require_roles(principal, "admin", "teacher")
    group = session.scalar(
        select(Group).where(Group.org_id == org.id, Group.external_id == group_id)
    )
    if group is None or (principal.role == "teacher" and group.id not in principal.group_ids):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"group {group_id!r} not found")
    return group


def _concept_list(raw: str | None) -> list[str] | None:
    if raw is None or not raw.strip():
        return None
    return [c.strip() for c in raw.split(",") if c.strip()]


# ---------------------------------------------------------------------- routes
@router.get("/groups/{group_id}/mastery", response_model=MasteryGrid)
def group_mastery(
    group_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    org: OrgDep,
    at: Annotated[
        datetime | None,
        Query(description="Mastery at this time, for models that forget (ISO 8601)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> MasteryGrid:
    """Learners x concepts (the organisation's concepts the model knows, in curriculum
    order): predicted mastery now (or ``at``), a page of learners; ``concept_means`` average
    every member of the group, not only the page."""
    group = _visible_group(session, principal, org, group_id)
    out = analytics.group_mastery(session, org=org, group=group, at=at, limit=limit, offset=offset)
    service.keep_rebuilt_states(session)
    return MasteryGrid.model_validate(out)


@router.get("/learners/{learner_id}/timeline", response_model=Timeline)
def learner_timeline(
    learner_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    org: OrgDep,
    concepts: Annotated[
        str | None,
        Query(description="Comma-separated concept ids (default: the most practised, up to 8)"),
    ] = None,
    max_points: Annotated[int, Query(ge=2, le=5000)] = 500,
) -> Timeline:
    """The learner's answers in event order (``index`` 1 = the first answer) with the
    predicted mastery of the chosen concepts after each; long histories are thinned to
    ``max_points`` evenly spaced points (the last answer always among them)."""
    learner = visible_learner(session, principal, learner_id)
    out = analytics.learner_timeline(
        session,
        org=org,
        learner=learner,
        concepts=_concept_list(concepts),
        max_points=max_points,
    )
    return Timeline.model_validate(out)


@router.get("/groups/{group_id}/learning-curves", response_model=LearningCurves)
def learning_curves(
    group_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    org: OrgDep,
    concepts: Annotated[
        str | None,
        Query(description="Comma-separated concept ids (default: every concept practised)"),
    ] = None,
    max_opportunity: Annotated[int, Query(ge=1, le=200)] = 20,
) -> LearningCurves:
    """Per concept, the error rate at the k-th practice opportunity (the k-th answer of a
    learner on an item of the concept, in event order): observed, and predicted by the
    model before each answer, with the number of learners at each opportunity."""
    group = _visible_group(session, principal, org, group_id)
    out = analytics.learning_curves(
        session,
        org=org,
        group=group,
        concepts=_concept_list(concepts),
        max_opportunity=max_opportunity,
    )
    return LearningCurves.model_validate(out)


@router.get("/groups/{group_id}/items", response_model=ItemStats)
def item_statistics(
    group_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    org: OrgDep,
    settings: SettingsDep,
    sort: Annotated[
        str, Query(description=f"One of {', '.join(analytics.ITEM_SORTS)} (gap: |obs - pred|)")
    ] = "attempts",
    desc: bool = True,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ItemStats:
    """Per item the group answered: attempts, learners, observed and predicted success,
    difficulty, discrimination (where the model has such a parameter), and a flag where the
    observed success disagrees strongly with the model."""
    group = _visible_group(session, principal, org, group_id)
    out = analytics.item_statistics(
        session,
        org=org,
        group=group,
        sort=sort,
        desc=desc,
        limit=limit,
        offset=offset,
        settings=settings,
    )
    return ItemStats.model_validate(out)


@router.get("/groups/{group_id}/at-risk", response_model=AtRisk)
def at_risk(
    group_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    org: OrgDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> AtRisk:
    """Members with low mastery on the concepts the group has covered, falling mastery, or a
    long inactivity, most reasons first (thresholds: organisation settings)."""
    group = _visible_group(session, principal, org, group_id)
    out = analytics.at_risk(
        session, org=org, group=group, settings=settings, limit=limit, offset=offset
    )
    service.keep_rebuilt_states(session)
    return AtRisk.model_validate(out)


@router.get("/model-card", response_model=ModelCard)
def model_card(session: SessionDep, principal: PrincipalDep, org: OrgDep) -> ModelCard:
    """The active model: training data and run, test metrics, calibration table, and for
    PSI-KT the learned prerequisite graph (edges with probability > 0.5) and a summary of
    the learners' traits."""
    require_roles(principal, "admin", "teacher")
    return ModelCard.model_validate(analytics.model_card(session, org=org))
