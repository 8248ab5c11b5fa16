"""Group routes: ``/v1/groups``, the organisation's groups of learners (classes).

Tag ``admin``: the group list and one group with its members (admin keys: every group;
teacher keys: their own), and creation, renaming, member lists and deletion (admin keys only,
in one transaction, through :mod:`tutor.learners_admin`). Tag ``learners``: a group's
curriculum. A group a key may not see answers 404, never 403.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response, status
from sqlalchemy.orm import Session

from .. import learners_admin, service, states
from ..db import Group
from ..settings import evidence_rule
from .deps import (
    ViewDep,
    admin_write,
    created_or,
    forget_keys,
    mark_created,
    org_setting,
    require_roles,
    visible_group,
    visible_groups,
)
from .schemas import (
    CurriculumOut,
    ExtId,
    GroupDetail,
    GroupIn,
    GroupOut,
    GroupPage,
    Id,
    Limit,
    Offset,
)

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
def list_groups(view: ViewDep, limit: Limit = 100, offset: Offset = 0) -> GroupPage:
    """Groups by id with their sizes: all of them for an admin key, its own for a teacher."""
    require_roles(view.principal, "admin", "teacher")
    total, rows = learners_admin.groups_page(
        view.session,
        org=view.org,
        limit=limit,
        offset=offset,
        groups=visible_groups(view.principal),
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
def get_group(group_id: ExtId, view: ViewDep) -> GroupDetail:
    """One group with its member ids (a teacher key sees its own groups only)."""
    return _detail(view.session, visible_group(view, group_id))


@router.put(
    "/groups/{group_id}",
    response_model=GroupDetail,
    responses=created_or("Renamed"),
    tags=["admin"],
)
def put_group(group_id: ExtId, body: GroupIn, response: Response, view: ViewDep) -> GroupDetail:
    """Create a group or set its name (201 when created, 200 when updated)."""
    with admin_write(view) as session:
        group, created = learners_admin.upsert_group(
            session, org=view.org, external_id=group_id, name=body.name
        )
        out = _detail(session, group)
    mark_created(response, created)
    return out


@router.put(
    "/groups/{group_id}/members",
    response_model=GroupDetail,
    responses={422: {"description": "Unknown learner ids (named); nothing changed"}},
    tags=["admin"],
)
def put_members(
    group_id: ExtId,
    body: Annotated[list[Id], Body()],
    view: ViewDep,
) -> GroupDetail:
    """Replace the group's members by this list of learner ids."""
    with admin_write(view) as session:
        group = learners_admin.get_group(session, org=view.org, external_id=group_id)
        learners_admin.set_members(session, org=view.org, group=group, learner_ids=body)
        out = _detail(session, group)
    return out


@router.delete("/groups/{group_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["admin"])
def delete_group(group_id: ExtId, view: ViewDep) -> Response:
    """Delete a group (its learners stay; teacher keys lose access to it)."""
    with admin_write(view) as session:
        learners_admin.delete_group(session, org=view.org, external_id=group_id)
    forget_keys(view.request)  # teacher keys of the group lose it (cached principals hold its id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/groups/{group_id}/curriculum", response_model=CurriculumOut, tags=["learners"])
def group_curriculum(group_id: str, view: ViewDep) -> CurriculumOut:
    """The designed concept order with the group's mean mastery per concept."""
    group = visible_group(view, group_id)
    scope = group.external_id
    org, settings = view.org, view.settings
    n_learners, out = learners_admin.group_curriculum(
        view.session,
        org=org,
        group=group,
        rule=evidence_rule(org.settings, settings),
        scale=org_setting(org, settings, "mastery_scale"),
    )
    states.keep_rebuilt_states(view.session)
    return CurriculumOut.model_validate({"scope": f"group {scope} ({n_learners} learners)", **out})
