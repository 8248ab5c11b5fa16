"""Group routes: ``/v1/groups``, the organisation's groups of learners (classes).

Tag ``admin``: the group list and one group with its members (admin keys: every group;
teacher keys: their own), and creation, renaming, member lists and deletion (admin keys only,
in one transaction, through :mod:`tutor.learners_admin`). Tag ``learners``: a group's
curriculum. A group a key may not see answers 404, never 403.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request, Response, status
from pydantic import Field
from sqlalchemy.orm import Session

from .. import learners_admin, service, states
from ..db import Group
from ..settings import evidence_rule
from .deps import (
    OrgDep,
    PrincipalDep,
    SessionDep,
    SettingsDep,
    created_or,
    forget_keys,
    org_setting,
    require_roles,
    visible_groups,
    write_transaction,
)
from .schemas import CurriculumOut, ExtId, GroupDetail, GroupIn, GroupOut, GroupPage, Limit, Offset

router = APIRouter()


def _detail(session: Session, group: Group) -> GroupDetail:
    members = learners_admin.group_members(session, group)
    return GroupDetail(
        id=group.external_id,
        name=group.name or "",
        n_members=len(members),
        created_at=service.as_utc(group.created_at),
        members=members,
    )


@router.get("/groups", response_model=GroupPage, tags=["admin"])
def list_groups(
    session: SessionDep,
    principal: PrincipalDep,
    org: OrgDep,
    limit: Limit = 100,
    offset: Offset = 0,
) -> GroupPage:
    """Groups by id with their sizes: all of them for an admin key, its own for a teacher."""
    require_roles(principal, "admin", "teacher")
    total, rows = learners_admin.groups_page(
        session, org=org, limit=limit, offset=offset, groups=visible_groups(principal)
    )
    groups = [
        GroupOut(
            id=g.external_id,
            name=g.name or "",
            n_members=k,
            created_at=service.as_utc(g.created_at),
        )
        for g, k in rows
    ]
    return GroupPage(total=total, limit=limit, offset=offset, groups=groups)


@router.get("/groups/{group_id}", response_model=GroupDetail, tags=["admin"])
def get_group(
    group_id: ExtId, session: SessionDep, principal: PrincipalDep, org: OrgDep
) -> GroupDetail:
    """One group with its member ids (a teacher key sees its own groups only)."""
    require_roles(principal, "admin", "teacher")
    group = learners_admin.get_group(
        session, org=org, external_id=group_id, groups=visible_groups(principal)
    )
    return _detail(session, group)


@router.put(
    "/groups/{group_id}",
    response_model=GroupDetail,
    responses=created_or("Renamed"),
    tags=["admin"],
)
def put_group(
    group_id: ExtId,
    body: GroupIn,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    org: OrgDep,
) -> GroupDetail:
    """Create a group or set its name (201 when created, 200 when updated)."""
    require_roles(principal, "admin")
    with write_transaction(session):
        group, created = learners_admin.upsert_group(
            session, org=org, external_id=group_id, name=body.name
        )
        out = _detail(session, group)
    if created:
        response.status_code = status.HTTP_201_CREATED
    return out


@router.put(
    "/groups/{group_id}/members",
    response_model=GroupDetail,
    responses={422: {"description": "Unknown learner ids (named); nothing changed"}},
    tags=["admin"],
)
def put_members(
    group_id: ExtId,
    body: Annotated[list[Annotated[str, Field(min_length=1, max_length=200)]], Body()],
    session: SessionDep,
    principal: PrincipalDep,
    org: OrgDep,
) -> GroupDetail:
    """Replace the group's members by this list of learner ids."""
    require_roles(principal, "admin")
    with write_transaction(session):
        group = learners_admin.get_group(session, org=org, external_id=group_id)
        learners_admin.set_members(session, org=org, group=group, learner_ids=body)
        out = _detail(session, group)
    return out


@router.delete("/groups/{group_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["admin"])
def delete_group(
    group_id: ExtId, request: Request, session: SessionDep, principal: PrincipalDep, org: OrgDep
) -> Response:
    """Delete a group (its learners stay; teacher keys lose access to it)."""
    require_roles(principal, "admin")
    with write_transaction(session):
        learners_admin.delete_group(session, org=org, external_id=group_id)
    forget_keys(request)  # teacher keys of the group lose it (cached principals hold its id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/groups/{group_id}/curriculum", response_model=CurriculumOut, tags=["learners"])
def group_curriculum(
    group_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    org: OrgDep,
    settings: SettingsDep,
) -> CurriculumOut:
    """The designed concept order with the group's mean mastery per concept."""
    require_roles(principal, "admin", "teacher")
    group = learners_admin.get_group(
        session, org=org, external_id=group_id, groups=visible_groups(principal)
    )
    scope = group.external_id
    n_learners, out = learners_admin.group_curriculum(
        session,
        org=org,
        group=group,
        rule=evidence_rule(org.settings, settings),
        scale=org_setting(org, settings, "mastery_scale"),
    )
    states.keep_rebuilt_states(session)
    return CurriculumOut.model_validate({"scope": f"group {scope} ({n_learners} learners)", **out})
