"""Learner routes: mastery, next items, history, curricula (learner and group)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, HTTPException, Query, status
from sqlalchemy import select

from .. import recommend, service
from ..db import Group, GroupMembership, Learner
from ..settings import POLICIES, evidence_rule
from .deps import OrgDep, PrincipalDep, SessionDep, SettingsDep, require_roles, visible_learner
from .schemas import MAX_OFFSET, CurriculumOut, History, Mastery, NextItems, Time

router = APIRouter(tags=["learners"])


def _org_setting(org, settings, name: str):  # noqa: ANN001, ANN202
    return (org.settings or {}).get(name, getattr(settings, name))


def _persist(session) -> None:  # noqa: ANN001
    """Keep any learner state rebuilt while answering (see service.keep_rebuilt_states)."""
    service.keep_rebuilt_states(session)


@router.get("/learners/{learner_id}/mastery", response_model=Mastery)
def get_mastery(
    learner_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    org: OrgDep,
    settings: SettingsDep,
    at: Annotated[
        Time | None,
        Query(description="Mastery at this (future) time, for models that forget (ISO 8601)"),
    ] = None,
) -> Mastery:
    """Every concept of the organisation with its status (not started, estimated from other
    concepts, learning, mastered, struggling), the learner's own answer count and the
    reported mastery: from own answers where there are any, else the model's estimate."""
    model = service.active_model(session, org=org)
    learner = visible_learner(session, principal, learner_id, state_of=model)
    out = service.learner_mastery(
        session,
        org=org,
        learner=learner,
        at=at,
        rule=evidence_rule(org.settings, settings),
        scale=_org_setting(org, settings, "mastery_scale"),
    )
    _persist(session)
    return Mastery.model_validate(out)


@router.get("/learners/{learner_id}/next-items", response_model=NextItems)
def next_items(
    learner_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    org: OrgDep,
    settings: SettingsDep,
    n: Annotated[int, Query(ge=1, le=100)] = 5,
    policy: Annotated[str | None, Query(description=f"One of {', '.join(POLICIES)}")] = None,
    target: Annotated[float | None, Query(gt=0, lt=1)] = None,
    at: Annotated[
        Time | None,
        Query(
            description="Recommend for this time (ISO 8601; default now): models that forget "
            "predict mastery and review needs at that time, e.g. for the start of a session"
        ),
    ] = None,
) -> NextItems:
    """The next items for the learner, each with its predicted success and the reason."""
    model = service.active_model(session, org=org)
    learner = visible_learner(session, principal, learner_id, state_of=model)
    learner_ext = learner.external_id
    lv = recommend.learner_view(
        session,
        org=org,
        learner=learner,
        recent_exclusion=int(_org_setting(org, settings, "recent_exclusion")),
        at=at,
        scale=_org_setting(org, settings, "mastery_scale"),
        rule=evidence_rule(org.settings, settings),
    )
    out = recommend.recommend(
        lv,
        n=n,
        policy=policy or _org_setting(org, settings, "default_policy"),
        target=target
        if target is not None
        else float(_org_setting(org, settings, "target_success")),
        review_threshold=float(_org_setting(org, settings, "review_threshold")),
        seed=learner.id * 100_003 + learner.n_answers,
    )
    _persist(session)  # (may end the transaction: nothing of the session is read after it)
    return NextItems.model_validate({"learner_id": learner_ext, **out})


@router.get("/learners/{learner_id}/history", response_model=History)
def history(
    learner_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> History:
    """The learner's answers in event order, a page at a time."""
    learner = visible_learner(session, principal, learner_id)
    return History.model_validate(
        service.learner_history(session, learner=learner, limit=limit, offset=offset)
    )


@router.get("/learners/{learner_id}/curriculum", response_model=CurriculumOut)
def learner_curriculum(
    learner_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    org: OrgDep,
    settings: SettingsDep,
) -> CurriculumOut:
    """The designed concept order (prerequisites first) with this learner's mastery; the
    concepts already mastered are marked."""
    learner = visible_learner(session, principal, learner_id)
    learner_ext = learner.external_id
    lv = recommend.learner_view(
        session,
        org=org,
        learner=learner,
        recent_exclusion=0,
        scale=_org_setting(org, settings, "mastery_scale"),
        rule=evidence_rule(org.settings, settings),
    )
    statuses = [lv.status(c) for c in range(len(lv.cat.concept_ext))]
    out = recommend.curriculum_for(lv.view, lv.cat, lv.mastery, lv.mastered, statuses)
    _persist(session)
    return CurriculumOut.model_validate({"scope": f"learner {learner_ext}", **out})


@router.get("/groups/{group_id}/curriculum", response_model=CurriculumOut)
def group_curriculum(
    group_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    org: OrgDep,
    settings: SettingsDep,
) -> CurriculumOut:
    """The designed concept order with the group's mean mastery per concept."""
    require_roles(principal, "admin", "teacher")
    group = session.scalar(
        select(Group).where(Group.org_id == org.id, Group.external_id == group_id)
    )
    if group is None or (principal.role == "teacher" and group.id not in principal.group_ids):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"group {group_id!r} not found")
    learners = session.scalars(
        select(Learner)
        .join(GroupMembership, GroupMembership.learner_id == Learner.id)
        .where(GroupMembership.group_id == group.id)
    ).all()
    model = service.active_model(session, org=org)
    if model is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no active model for this organisation")
    rule = evidence_rule(org.settings, settings)
    scale = _org_setting(org, settings, "mastery_scale")
    views = [
        recommend.learner_view(
            session, org=org, learner=lr, recent_exclusion=0, scale=scale, rule=rule
        )
        for lr in learners
    ]
    cat = recommend.catalogue(session, org)
    view = recommend._model_view(cat, model)
    mean = all_mastered = None
    if views:
        mean = np.mean([lv.mastery for lv in views], axis=0)
        all_mastered = np.all([lv.mastered for lv in views], axis=0)
    out = recommend.curriculum_for(view, cat, mean, all_mastered)
    _persist(session)
    return CurriculumOut.model_validate(
        {"scope": f"group {group.external_id} ({len(learners)} learners)", **out}
    )
