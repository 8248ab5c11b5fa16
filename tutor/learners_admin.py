"""Learners and their groups, as the API's ``/v1/learners`` and ``/v1/groups`` routes manage
them: listings scoped to what a key may see, creation and renaming, deletion, group members,
and a group's curriculum (the designed concept order with the members' mean mastery).

``groups`` arguments scope a listing or a lookup to a teacher key's groups (None: every group
of the organisation). Functions take a session and leave committing to the caller; refusals
are :mod:`tutor.errors`' errors (404 / 422).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import operations as ops
from . import recommend, service
from .db import ApiKey, Group, GroupMembership, Interaction, Learner, LearnerState, Organisation
from .errors import Invalid, NotFound, listed
from .evidence import EvidenceRule

Named = TypeVar("Named", Learner, Group)


def _upsert_named(
    session: Session, model: type[Named], *, org: Organisation, external_id: str, name: str
) -> tuple[Named, bool]:
    """Create the organisation's learner or group with this id, or set its name; returns it
    and whether it was created."""
    row = ops.lookup(session, model, org=org, external_id=external_id)
    created = row is None
    if row is None:
        extra: dict[str, Any] = {"n_answers": 0} if model is Learner else {}
        row = model(org_id=org.id, external_id=external_id, name=name, **extra)
        session.add(row)
    else:
        row.name = name
    session.flush()
    return row, created


# ---------------------------------------------------------------------- learners
def learners_page(
    session: Session,
    *,
    org: Organisation,
    limit: int,
    offset: int,
    groups: Collection[int] | None = None,
) -> tuple[int, list[Learner]]:
    """How many learners there are (of ``groups`` only, when given), and a page of them by
    id."""
    q = select(Learner).where(Learner.org_id == org.id)
    if groups is not None:
        q = q.where(
            Learner.id.in_(
                select(GroupMembership.learner_id).where(GroupMembership.group_id.in_(groups))
            )
        )
    total = ops.count_rows(session, q)
    rows = session.scalars(q.order_by(Learner.external_id).limit(limit).offset(offset)).all()
    return total, list(rows)


def upsert_learner(
    session: Session, *, org: Organisation, external_id: str, name: str
) -> tuple[Learner, bool]:
    """Create a learner or set its name; returns it and whether it was created."""
    return _upsert_named(session, Learner, org=org, external_id=external_id, name=name)


def delete_learner(session: Session, *, org: Organisation, external_id: str) -> None:
    """Delete a learner with everything of theirs: answers, model states, group memberships
    and their learner API keys (xAPI statements are kept, unlinked). The caller forgets the
    keys it has cached."""
    learner = ops.find(session, Learner, org=org, external_id=external_id)
    # explicit deletes: do not rely on the database's ON DELETE CASCADE alone
    for table in (Interaction, LearnerState, GroupMembership, ApiKey):
        session.execute(table.__table__.delete().where(table.learner_id == learner.id))
    session.delete(learner)
    session.flush()


# ---------------------------------------------------------------------- groups
def groups_page(
    session: Session,
    *,
    org: Organisation,
    limit: int,
    offset: int,
    groups: Collection[int] | None = None,
) -> tuple[int, list[tuple[Group, int]]]:
    """How many groups there are (of ``groups`` only, when given), and a page of them by id,
    each with its member count."""
    q = select(Group).where(Group.org_id == org.id)
    if groups is not None:
        q = q.where(Group.id.in_(groups))
    total = ops.count_rows(session, q)
    n = (
        select(GroupMembership.group_id, func.count().label("n"))
        .group_by(GroupMembership.group_id)
        .subquery()
    )
    rows = session.execute(
        q.outerjoin(n, n.c.group_id == Group.id)
        .add_columns(func.coalesce(n.c.n, 0))
        .order_by(Group.external_id)
        .limit(limit)
        .offset(offset)
    ).all()
    return total, [(g, int(k)) for g, k in rows]


def get_group(
    session: Session, *, org: Organisation, external_id: str, groups: Collection[int] | None = None
) -> Group:
    """The group, if it is one of ``groups`` (when given); :class:`~tutor.errors.NotFound`
    otherwise (never a refusal: ids a key may not see cannot be probed)."""
    group = ops.find(session, Group, org=org, external_id=external_id)
    if groups is not None and group.id not in groups:
        raise NotFound(f"group {external_id!r} not found")
    return group


def group_members(session: Session, group: Group) -> list[str]:
    """The group's learner ids, sorted."""
    return list(
        session.scalars(
            select(Learner.external_id)
            .join(GroupMembership, GroupMembership.learner_id == Learner.id)
            .where(GroupMembership.group_id == group.id)
            .order_by(Learner.external_id)
        ).all()
    )


def upsert_group(
    session: Session, *, org: Organisation, external_id: str, name: str
) -> tuple[Group, bool]:
    """Create a group or set its name; returns it and whether it was created."""
    return _upsert_named(session, Group, org=org, external_id=external_id, name=name)


def set_members(
    session: Session, *, org: Organisation, group: Group, learner_ids: list[str]
) -> None:
    """Replace a group's members by these learners; unknown ids are
    :class:`~tutor.errors.Invalid` naming them (nothing changes then)."""
    wanted = list(dict.fromkeys(learner_ids))
    found = ops.by_external_id(session, Learner, org=org, external_ids=wanted)
    unknown = [x for x in wanted if x not in found]
    if unknown:
        raise Invalid(f"unknown learner(s) {listed(unknown)} in the member list")
    keep = {found[x].id for x in wanted}
    for m in session.scalars(select(GroupMembership).where(GroupMembership.group_id == group.id)):
        if m.learner_id not in keep:
            session.delete(m)
    session.flush()
    ops.add_members(session, group=group, learners=[found[x] for x in wanted])


def delete_group(session: Session, *, org: Organisation, external_id: str) -> None:
    """Delete a group and its memberships (its learners stay). The caller forgets the keys
    it has cached: teacher keys of the group lose it."""
    group = ops.find(session, Group, org=org, external_id=external_id)
    session.execute(GroupMembership.__table__.delete().where(GroupMembership.group_id == group.id))
    session.delete(group)
    session.flush()


def group_curriculum(
    session: Session, *, org: Organisation, group: Group, rule: EvidenceRule, scale: str
) -> tuple[int, dict[str, Any]]:
    """The designed concept order with the members' mean mastery per concept (a concept is
    marked mastered when every member mastered it): the number of members and
    :func:`tutor.recommend.curriculum_for`'s answer. :class:`~tutor.errors.NotFound` when the
    organisation has no active model."""
    learners = session.scalars(
        select(Learner)
        .join(GroupMembership, GroupMembership.learner_id == Learner.id)
        .where(GroupMembership.group_id == group.id)
    ).all()
    model = service.active_model(session, org=org)
    if model is None:
        raise NotFound("no active model for this organisation")
    views = [
        recommend.learner_view(
            session, org=org, learner=lr, recent_exclusion=0, scale=scale, rule=rule
        )
        for lr in learners
    ]
    cat = recommend.catalogue(session, org)
    view = recommend.model_view(cat, model)
    mean = all_mastered = None
    if views:
        mean = np.mean([lv.mastery for lv in views], axis=0)
        all_mastered = np.all([lv.mastered for lv in views], axis=0)
    return len(learners), recommend.curriculum_for(view, cat, mean, all_mastered)
