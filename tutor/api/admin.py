"""Administration routes (tag ``admin``): the catalogue (concepts, prerequisites, items),
learners, groups, model versions and the organisation's recommendation settings.

Everything is scoped to the caller's organisation: ids that another organisation owns answer
404, never 403. Writes need an admin key and run in one transaction (committed at the end of
the route; any error leaves nothing changed). Every catalogue change bumps the organisation's
``catalogue_version``, which invalidates the recommenders' cached catalogues in every process.
Catalogue and settings writes lock the organisation row first, so that concurrent writers
cannot both bump the version to the same number (PostgreSQL; SQLite writers are serialised
anyway).

Reads: the catalogue is readable by admin and teacher keys; learners and groups by admin keys
(everything) and teacher keys (their groups); one learner also by its own key; model versions
and the organisation by admin keys only.

Registering a new model version (checkpoint) stays a command-line task
(:func:`tutor.operations.register_model`): uploading large checkpoint files is out of scope
for the API. Here versions are listed, activated (hot swap) and have their states rebuilt.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, Response, status
from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from .. import operations as ops
from ..db import (
    ApiKey,
    Concept,
    Group,
    GroupMembership,
    Interaction,
    Item,
    ItemConcept,
    Learner,
    LearnerState,
    ModelVersion,
    Organisation,
    PrerequisiteEdge,
)
from ..security import Principal
from ..service import as_utc
from ..settings import MASTERY_SCALES, POLICIES, Settings
from .deps import (
    OrgDep,
    PrincipalDep,
    SessionDep,
    SettingsDep,
    forget_keys,
    require_roles,
    visible_learner,
)
from .schemas import ID_PATTERN, MAX_OFFSET, storable_json

router = APIRouter(tags=["admin"])

ExtId = Annotated[
    str, Path(min_length=1, max_length=200, pattern=ID_PATTERN, description="External id")
]
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip")]
ModelId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Model version id")]
CATALOGUE_READERS = ("admin", "teacher")
#: 422 (spelt numerically: Starlette renamed the constant between versions)
UNPROCESSABLE = 422


# ---------------------------------------------------------------------- bodies
class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConceptIn(_In):
    name: str = Field("", max_length=500)
    level: float | None = Field(
        None,
        ge=-1000,
        le=1000,
        description="Teaching level, e.g. the school grade (lower is taught earlier): the "
        "curriculum designer orders by it",
    )


class ConceptOut(BaseModel):
    id: str
    name: str
    level: float | None = None
    items: int = Field(description="Items (active or not) linked to the concept")


class ConceptPage(BaseModel):
    total: int
    limit: int
    offset: int
    concepts: list[ConceptOut]


class PrerequisiteIO(_In):
    prerequisite: str = Field(min_length=1, max_length=200, description="Mastered first")
    concept: str = Field(min_length=1, max_length=200)


class ItemIn(_In):
    concepts: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list
    )
    metadata: Annotated[dict[str, Any], AfterValidator(storable_json)] = Field(
        default_factory=dict, description="Replaces the stored one"
    )
    active: bool = True


class ItemOut(BaseModel):
    id: str
    concepts: list[str]
    metadata: dict[str, Any]
    active: bool


class ItemPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[ItemOut]


class LearnerIn(_In):
    #: the display name teachers read in the dashboard and analytics (optional: without one
    #: they read the learner's id); ``display_name`` is accepted for it too
    name: str = Field("", max_length=200, validation_alias=AliasChoices("name", "display_name"))


class LearnerOut(BaseModel):
    id: str
    name: str
    n_answers: int
    first_seen: datetime | None
    created_at: datetime


class LearnerPage(BaseModel):
    total: int
    limit: int
    offset: int
    learners: list[LearnerOut]


class GroupIn(_In):
    name: str = Field("", max_length=200)


class GroupOut(BaseModel):
    id: str
    name: str
    n_members: int
    created_at: datetime


class GroupDetail(GroupOut):
    members: list[str] = Field(description="Learner ids, sorted")


class GroupPage(BaseModel):
    total: int
    limit: int
    offset: int
    groups: list[GroupOut]


class ModelOut(BaseModel):
    id: int
    name: str
    label: str
    sha256: str
    created_at: datetime
    active: bool
    time_unit: str | None = None
    metrics: dict[str, float | None] | None = Field(
        None, description="Test metrics of the run's results.json, where it was evaluated"
    )
    states: int = Field(description="Learner states built for this version")


class RebuildOut(BaseModel):
    model_id: int
    learners: int = Field(description="Learner states rebuilt")


class OrganisationOut(BaseModel):
    id: int
    slug: str
    name: str
    active_model_id: int | None
    catalogue_version: int
    created_at: datetime
    settings: dict[str, Any] = Field(description="The organisation's overrides")
    effective_settings: dict[str, Any] = Field(description="Overrides over service defaults")


# ---------------------------------------------------------------------- helpers
@contextmanager
def _transaction(session: Session) -> Iterator[None]:
    """Commit at the end; roll back on any error (a unique-key race is a 409)."""
    try:
        yield
        session.commit()
    except IntegrityError:
        session.rollback()
        raise HTTPException(
            status.HTTP_409_CONFLICT, "a concurrent request wrote the same rows; retry"
        ) from None
    except BaseException:
        session.rollback()
        raise


def _lock_org(session: Session, org: Organisation) -> None:
    """Serialise catalogue/settings writers on the organisation row (no-op on SQLite)."""
    session.refresh(org, with_for_update=True)


def _not_found(kind: str, ext: str | int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{kind} {ext!r} not found")


def _one(session: Session, model: Any, org: Organisation, ext: str, kind: str) -> Any:
    row = session.scalar(select(model).where(model.org_id == org.id, model.external_id == ext))
    if row is None:
        raise _not_found(kind, ext)
    return row


def _total(session: Session, q: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(q.subquery())) or 0)


def _utc(dt: datetime | None) -> datetime | None:
    return as_utc(dt)


# ---------------------------------------------------------------------- concepts
def _concept_rows(session: Session, q: Any) -> list[ConceptOut]:
    n = (
        select(ItemConcept.concept_id, func.count().label("n"))
        .group_by(ItemConcept.concept_id)
        .subquery()
    )
    rows = session.execute(
        q.outerjoin(n, n.c.concept_id == Concept.id).add_columns(func.coalesce(n.c.n, 0))
    ).all()
    return [ConceptOut(id=c.external_id, name=c.name, level=c.level, items=int(k)) for c, k in rows]


@router.get("/concepts", response_model=ConceptPage)
def list_concepts(
    session: SessionDep,
    principal: PrincipalDep,
    org: OrgDep,
    limit: Limit = 100,
    offset: Offset = 0,
) -> ConceptPage:
    """The organisation's concepts by id, a page at a time, with how many items use each."""
    require_roles(principal, *CATALOGUE_READERS)
    q = select(Concept).where(Concept.org_id == org.id)
    total = _total(session, q)
    page = _concept_rows(session, q.order_by(Concept.external_id).limit(limit).offset(offset))
    return ConceptPage(total=total, limit=limit, offset=offset, concepts=page)


@router.get("/concepts/{concept_id}", response_model=ConceptOut)
def get_concept(
    concept_id: ExtId, session: SessionDep, principal: PrincipalDep, org: OrgDep
) -> ConceptOut:
    """One concept."""
    require_roles(principal, *CATALOGUE_READERS)
    q = select(Concept).where(Concept.org_id == org.id, Concept.external_id == concept_id)
    rows = _concept_rows(session, q)
    if not rows:
        raise _not_found("concept", concept_id)
    return rows[0]


@router.put(
    "/concepts/{concept_id}",
    response_model=ConceptOut,
    responses={201: {"description": "Created"}, 200: {"description": "Updated"}},
)
def put_concept(
    concept_id: ExtId,
    body: ConceptIn,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    org: OrgDep,
) -> ConceptOut:
    """Create a concept or set its name and teaching level (201 when created, 200 when
    updated)."""
    require_roles(principal, "admin")
    with _transaction(session):
        _lock_org(session, org)
        concept = session.scalar(
            select(Concept).where(Concept.org_id == org.id, Concept.external_id == concept_id)
        )
        if concept is None:
            concept = Concept(
                org_id=org.id, external_id=concept_id, name=body.name, level=body.level
            )
            session.add(concept)
            org.bump_catalogue()
            response.status_code = status.HTTP_201_CREATED
        else:
            # a field the request leaves out keeps its value (a rename keeps the level)
            level = body.level if "level" in body.model_fields_set else concept.level
            if (concept.name, concept.level) != (body.name, level):
                concept.name, concept.level = body.name, level
                org.bump_catalogue()
        session.flush()
        out = _concept_rows(session, select(Concept).where(Concept.id == concept.id))[0]
    return out


@router.delete(
    "/concepts/{concept_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: {"description": "Items still use the concept"}},
)
def delete_concept(
    concept_id: ExtId, session: SessionDep, principal: PrincipalDep, org: OrgDep
) -> Response:
    """Delete a concept and its prerequisite edges; 409 while any item (active or not) is
    still linked to it."""
    require_roles(principal, "admin")
    with _transaction(session):
        _lock_org(session, org)
        concept = _one(session, Concept, org, concept_id, "concept")
        users = session.scalars(
            select(Item.external_id)
            .join(ItemConcept, ItemConcept.item_id == Item.id)
            .where(ItemConcept.concept_id == concept.id)
            .order_by(Item.external_id)
        ).all()
        if users:
            shown = ", ".join(repr(u) for u in users[:5])
            more = f" and {len(users) - 5} more" if len(users) > 5 else ""
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"concept {concept_id!r} is still used by {len(users)} item(s) "
                f"({shown}{more}, active or not); relink them first (PUT /v1/items/{{id}})",
            )
        session.delete(concept)
        org.bump_catalogue()
        session.flush()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---------------------------------------------------------------------- prerequisites
def _edges(session: Session, org: Organisation) -> list[PrerequisiteIO]:
    pre, post = aliased(Concept), aliased(Concept)
    rows = session.execute(
        select(pre.external_id, post.external_id)
        .select_from(PrerequisiteEdge)
        .join(pre, pre.id == PrerequisiteEdge.prerequisite_id)
        .join(post, post.id == PrerequisiteEdge.concept_id)
        .where(PrerequisiteEdge.org_id == org.id)
        .order_by(pre.external_id, post.external_id)
    ).all()
    return [PrerequisiteIO(prerequisite=a, concept=b) for a, b in rows]


@router.get("/prerequisites", response_model=list[PrerequisiteIO])
def get_prerequisites(
    session: SessionDep, principal: PrincipalDep, org: OrgDep
) -> list[PrerequisiteIO]:
    """The organisation's prerequisite graph: one edge per (prerequisite, concept) pair."""
    require_roles(principal, *CATALOGUE_READERS)
    return _edges(session, org)


@router.put(
    "/prerequisites",
    response_model=list[PrerequisiteIO],
    responses={422: {"description": "Unknown concept or a cycle (named); nothing changed"}},
)
def put_prerequisites(
    body: list[PrerequisiteIO], session: SessionDep, principal: PrincipalDep, org: OrgDep
) -> list[PrerequisiteIO]:
    """Replace the whole prerequisite graph (an empty list removes it). An unknown concept or
    a cycle is a 422 naming it, and the graph stays as it was."""
    require_roles(principal, "admin")
    with _transaction(session):
        _lock_org(session, org)
        try:
            ops.set_prerequisites(
                session, org=org, edges=[(e.prerequisite, e.concept) for e in body]
            )
        except ops.OperationError as exc:
            raise HTTPException(UNPROCESSABLE, str(exc)) from None
        out = _edges(session, org)
    return out


# ---------------------------------------------------------------------- items
def _item_out(item: Item) -> ItemOut:
    return ItemOut(
        id=item.external_id,
        concepts=sorted(c.external_id for c in item.concepts),
        metadata=item.meta or {},
        active=bool(item.active),
    )


def upsert_item(
    session: Session,
    *,
    org: Organisation,
    external_id: str,
    concepts: list[str],
    metadata: dict[str, Any],
    active: bool,
    create_concepts: bool = False,
) -> tuple[Item, bool]:
    """Create or replace one item (concept links, metadata and active flag as given);
    returns the item and whether it was created. Bumps the catalogue version when anything
    changed. Unknown concepts are created with ``create_concepts``, else a 422 names them."""
    wanted = list(dict.fromkeys(concepts))
    have = {
        c.external_id: c
        for c in session.scalars(
            select(Concept).where(Concept.org_id == org.id, Concept.external_id.in_(wanted))
        )
    }
    missing = [c for c in wanted if c not in have]
    if missing and not create_concepts:
        raise HTTPException(
            UNPROCESSABLE,
            f"unknown concept(s) {', '.join(repr(c) for c in missing)} in 'concepts': create "
            "them first (PUT /v1/concepts/{id}) or pass ?create_concepts=true",
        )
    for cid in missing:
        have[cid] = Concept(org_id=org.id, external_id=cid, name="")
        session.add(have[cid])
    item = session.scalar(
        select(Item).where(Item.org_id == org.id, Item.external_id == external_id)
    )
    created = item is None
    if item is None:
        item = Item(org_id=org.id, external_id=external_id, meta=metadata, active=active)
        session.add(item)
        changed = True
    else:
        changed = (
            bool(missing)
            or (item.meta or {}) != metadata
            or bool(item.active) != active
            or {c.external_id for c in item.concepts} != set(wanted)
        )
        item.meta, item.active = dict(metadata), active
    if changed:
        item.concepts = [have[c] for c in wanted]
        org.bump_catalogue()
    session.flush()
    return item, created


@router.get("/items", response_model=ItemPage)
def list_items(
    session: SessionDep,
    principal: PrincipalDep,
    org: OrgDep,
    limit: Limit = 100,
    offset: Offset = 0,
    concept: Annotated[str | None, Query(description="Only items linked to this concept")] = None,
    active: Annotated[bool | None, Query(description="Only active (or inactive) items")] = None,
) -> ItemPage:
    """The organisation's items by id, a page at a time."""
    require_roles(principal, *CATALOGUE_READERS)
    q = select(Item).where(Item.org_id == org.id)
    if concept is not None:
        q = q.where(
            Item.id.in_(
                select(ItemConcept.item_id)
                .join(Concept, Concept.id == ItemConcept.concept_id)
                .where(Concept.org_id == org.id, Concept.external_id == concept)
            )
        )
    if active is not None:
        q = q.where(Item.active.is_(active))
    total = _total(session, q)
    rows = session.scalars(q.order_by(Item.external_id).limit(limit).offset(offset)).all()
    return ItemPage(total=total, limit=limit, offset=offset, items=[_item_out(i) for i in rows])


@router.get("/items/{item_id}", response_model=ItemOut)
def get_item(item_id: ExtId, session: SessionDep, principal: PrincipalDep, org: OrgDep) -> ItemOut:
    """One item with its concepts and metadata."""
    require_roles(principal, *CATALOGUE_READERS)
    return _item_out(_one(session, Item, org, item_id, "item"))


@router.put(
    "/items/{item_id}",
    response_model=ItemOut,
    responses={
        201: {"description": "Created"},
        200: {"description": "Replaced"},
        422: {"description": "Unknown concepts (without ?create_concepts=true)"},
    },
)
def put_item(
    item_id: ExtId,
    body: ItemIn,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    org: OrgDep,
    create_concepts: Annotated[
        bool, Query(description="Create the concepts that do not exist yet")
    ] = False,
) -> ItemOut:
    """Create or replace an item: its concepts, metadata and active flag are set as given."""
    require_roles(principal, "admin")
    with _transaction(session):
        _lock_org(session, org)
        item, created = upsert_item(
            session,
            org=org,
            external_id=item_id,
            concepts=body.concepts,
            metadata=body.metadata,
            active=body.active,
            create_concepts=create_concepts,
        )
        out = _item_out(item)
    if created:
        response.status_code = status.HTTP_201_CREATED
    return out


@router.delete("/items/{item_id}", response_model=ItemOut)
def delete_item(
    item_id: ExtId, session: SessionDep, principal: PrincipalDep, org: OrgDep
) -> ItemOut:
    """Deactivate an item (soft delete): it is no longer recommended, and the answers that
    reference it stay valid. ``PUT`` it with ``active: true`` to bring it back."""
    require_roles(principal, "admin")
    with _transaction(session):
        _lock_org(session, org)
        item = _one(session, Item, org, item_id, "item")
        if item.active:
            item.active = False
            org.bump_catalogue()
            session.flush()
        out = _item_out(item)
    return out


# ---------------------------------------------------------------------- learners
def _learner_out(lr: Learner) -> LearnerOut:
    return LearnerOut(
        id=lr.external_id,
        name=lr.name or "",
        n_answers=lr.n_answers or 0,
        first_seen=_utc(lr.first_seen),
        created_at=_utc(lr.created_at),
    )


@router.get("/learners", response_model=LearnerPage)
def list_learners(
    session: SessionDep,
    principal: PrincipalDep,
    org: OrgDep,
    limit: Limit = 100,
    offset: Offset = 0,
) -> LearnerPage:
    """Learners by id, a page at a time: all of them for an admin key, the learners of its
    groups for a teacher key."""
    require_roles(principal, "admin", "teacher")
    q = select(Learner).where(Learner.org_id == org.id)
    if principal.role == "teacher":
        q = q.where(
            Learner.id.in_(
                select(GroupMembership.learner_id).where(
                    GroupMembership.group_id.in_(principal.group_ids)
                )
            )
        )
    total = _total(session, q)
    rows = session.scalars(q.order_by(Learner.external_id).limit(limit).offset(offset)).all()
    return LearnerPage(
        total=total, limit=limit, offset=offset, learners=[_learner_out(r) for r in rows]
    )


@router.get("/learners/{learner_id}", response_model=LearnerOut)
def get_learner(learner_id: ExtId, session: SessionDep, principal: PrincipalDep) -> LearnerOut:
    """One learner (admin: any; teacher: the learners of its groups; learner: itself)."""
    return _learner_out(visible_learner(session, principal, learner_id))


@router.put(
    "/learners/{learner_id}",
    response_model=LearnerOut,
    responses={201: {"description": "Created"}, 200: {"description": "Renamed"}},
)
def put_learner(
    learner_id: ExtId,
    body: LearnerIn,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    org: OrgDep,
) -> LearnerOut:
    """Create a learner or set its name (201 when created, 200 when updated)."""
    require_roles(principal, "admin")
    with _transaction(session):
        learner = session.scalar(
            select(Learner).where(Learner.org_id == org.id, Learner.external_id == learner_id)
        )
        if learner is None:
            learner = Learner(org_id=org.id, external_id=learner_id, name=body.name, n_answers=0)
            session.add(learner)
            response.status_code = status.HTTP_201_CREATED
        else:
            learner.name = body.name
        session.flush()
        out = _learner_out(learner)
    return out


@router.delete("/learners/{learner_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_learner(
    learner_id: ExtId, request: Request, session: SessionDep, principal: PrincipalDep, org: OrgDep
) -> Response:
    """Delete a learner with everything of theirs: answers, model states, group memberships
    and their learner API keys (xAPI statements are kept, unlinked)."""
    require_roles(principal, "admin")
    with _transaction(session):
        learner = _one(session, Learner, org, learner_id, "learner")
        # explicit deletes: do not rely on the database's ON DELETE CASCADE alone
        for table in (Interaction, LearnerState, GroupMembership, ApiKey):
            session.execute(table.__table__.delete().where(table.learner_id == learner.id))
        session.delete(learner)
        session.flush()
    forget_keys(request)  # the learner's keys are gone: no cached principal may outlive them
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---------------------------------------------------------------------- groups
def _visible_group(
    session: Session, principal: Principal, org: Organisation, group_id: str
) -> Group:
    group = _one(session, Group, org, group_id, "group")
    if principal.role == "teacher" and group.id not in principal.group_ids:
        raise _not_found("group", group_id)
    return group


def _group_detail(session: Session, group: Group) -> GroupDetail:
    members = session.scalars(
        select(Learner.external_id)
        .join(GroupMembership, GroupMembership.learner_id == Learner.id)
        .where(GroupMembership.group_id == group.id)
        .order_by(Learner.external_id)
    ).all()
    return GroupDetail(
        id=group.external_id,
        name=group.name or "",
        n_members=len(members),
        created_at=_utc(group.created_at),
        members=list(members),
    )


def set_members(
    session: Session, *, org: Organisation, group: Group, learner_ids: list[str]
) -> None:
    """Replace a group's members by these learners; unknown ids are a 422 naming them."""
    wanted = list(dict.fromkeys(learner_ids))
    found = {
        lr.external_id: lr
        for lr in session.scalars(
            select(Learner).where(Learner.org_id == org.id, Learner.external_id.in_(wanted))
        )
    }
    unknown = [x for x in wanted if x not in found]
    if unknown:
        raise HTTPException(
            UNPROCESSABLE,
            f"unknown learner(s) {', '.join(repr(x) for x in unknown)} in the member list",
        )
    keep = {found[x].id for x in wanted}
    for m in session.scalars(select(GroupMembership).where(GroupMembership.group_id == group.id)):
        if m.learner_id not in keep:
            session.delete(m)
    session.flush()
    ops.add_members(session, group=group, learners=[found[x] for x in wanted])


@router.get("/groups", response_model=GroupPage)
def list_groups(
    session: SessionDep,
    principal: PrincipalDep,
    org: OrgDep,
    limit: Limit = 100,
    offset: Offset = 0,
) -> GroupPage:
    """Groups by id with their sizes: all of them for an admin key, its own for a teacher."""
    require_roles(principal, "admin", "teacher")
    q = select(Group).where(Group.org_id == org.id)
    if principal.role == "teacher":
        q = q.where(Group.id.in_(principal.group_ids))
    total = _total(session, q)
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
    groups = [
        GroupOut(
            id=g.external_id, name=g.name or "", n_members=int(k), created_at=_utc(g.created_at)
        )
        for g, k in rows
    ]
    return GroupPage(total=total, limit=limit, offset=offset, groups=groups)


@router.get("/groups/{group_id}", response_model=GroupDetail)
def get_group(
    group_id: ExtId, session: SessionDep, principal: PrincipalDep, org: OrgDep
) -> GroupDetail:
    """One group with its member ids (a teacher key sees its own groups only)."""
    require_roles(principal, "admin", "teacher")
    return _group_detail(session, _visible_group(session, principal, org, group_id))


@router.put(
    "/groups/{group_id}",
    response_model=GroupDetail,
    responses={201: {"description": "Created"}, 200: {"description": "Renamed"}},
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
    with _transaction(session):
        group = session.scalar(
            select(Group).where(Group.org_id == org.id, Group.external_id == group_id)
        )
        if group is None:
            group = Group(org_id=org.id, external_id=group_id, name=body.name)
            session.add(group)
            response.status_code = status.HTTP_201_CREATED
        else:
            group.name = body.name
        session.flush()
        out = _group_detail(session, group)
    return out


@router.put(
    "/groups/{group_id}/members",
    response_model=GroupDetail,
    responses={422: {"description": "Unknown learner ids (named); nothing changed"}},
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
    with _transaction(session):
        group = _one(session, Group, org, group_id, "group")
        set_members(session, org=org, group=group, learner_ids=body)
        out = _group_detail(session, group)
    return out


@router.delete("/groups/{group_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_group(
    group_id: ExtId, request: Request, session: SessionDep, principal: PrincipalDep, org: OrgDep
) -> Response:
    """Delete a group (its learners stay; teacher keys lose access to it)."""
    require_roles(principal, "admin")
    with _transaction(session):
        group = _one(session, Group, org, group_id, "group")
        session.execute(
            GroupMembership.__table__.delete().where(GroupMembership.group_id == group.id)
        )
        session.delete(group)
        session.flush()
    forget_keys(request)  # teacher keys of the group lose it (cached principals hold its id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---------------------------------------------------------------------- models
def _metrics(info: dict[str, Any]) -> dict[str, float | None] | None:
    test = ((info or {}).get("results") or {}).get("test")
    if not isinstance(test, dict):
        return None
    out: dict[str, float | None] = {}
    for k, v in test.items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[k] = float(v) if math.isfinite(v) else None
    return out


def _model_rows(session: Session, org: Organisation, model_id: int | None = None) -> list[ModelOut]:
    n = (
        select(LearnerState.model_id, func.count().label("n"))
        .group_by(LearnerState.model_id)
        .subquery()
    )
    q = (
        select(ModelVersion, func.coalesce(n.c.n, 0))
        .outerjoin(n, n.c.model_id == ModelVersion.id)
        .where(ModelVersion.org_id == org.id)
        .order_by(ModelVersion.id)
    )
    if model_id is not None:
        q = q.where(ModelVersion.id == model_id)
    return [
        ModelOut(
            id=mv.id,
            name=mv.name,
            label=mv.label or "",
            sha256=mv.sha256,
            created_at=_utc(mv.created_at),
            active=mv.id == org.active_model_id,
            time_unit=(mv.info or {}).get("time_unit"),
            metrics=_metrics(mv.info),
            states=int(k),
        )
        for mv, k in session.execute(q).all()
    ]


def _model(session: Session, org: Organisation, model_id: int) -> ModelOut:
    rows = _model_rows(session, org, model_id)
    if not rows:
        raise _not_found("model", model_id)
    return rows[0]


@router.get("/models", response_model=list[ModelOut])
def list_models(session: SessionDep, principal: PrincipalDep, org: OrgDep) -> list[ModelOut]:
    """The organisation's registered model versions, oldest first; ``active`` marks the one
    that serves. New versions are registered on the command line (checkpoint files)."""
    require_roles(principal, "admin")
    return _model_rows(session, org)


@router.get("/models/{model_id}", response_model=ModelOut)
def get_model(
    model_id: ModelId, session: SessionDep, principal: PrincipalDep, org: OrgDep
) -> ModelOut:
    """One model version."""
    require_roles(principal, "admin")
    return _model(session, org, model_id)


@router.post("/models/{model_id}/activate", response_model=ModelOut)
def activate_model(
    model_id: ModelId, session: SessionDep, principal: PrincipalDep, org: OrgDep, request: Request
) -> ModelOut:
    """Make this version the active one (hot swap), once its checkpoint loads, matches its
    checksum and fits the organisation's catalogue (409 naming the differences otherwise).
    Learner states for it are rebuilt lazily,
    on each learner's next request, or eagerly with ``rebuild-states``; the analytics caches
    for it are filled in the background (``TUTOR_ANALYTICS_WARMUP_GROUPS``)."""
    require_roles(principal, "admin")
    with _transaction(session):
        _lock_org(session, org)
        _model(session, org, model_id)  # 404 for unknown ids and other organisations'
        try:
            ops.activate_model(session, org=org, model_id=model_id)
        except ops.ModelMismatch as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        out = _model(session, org, model_id)
    warmer = getattr(request.app.state, "analytics_warmer", None)
    if warmer is not None:
        warmer.kick()
    return out


@router.post("/models/{model_id}/rebuild-states", response_model=RebuildOut)
def rebuild_states(
    model_id: ModelId, session: SessionDep, principal: PrincipalDep, org: OrgDep
) -> RebuildOut:
    """Rebuild every learner's state for this version now (replaying their histories), e.g.
    before activating it so that the swap costs learners nothing. Runs within the request."""
    require_roles(principal, "admin")
    with _transaction(session):
        _model(session, org, model_id)
        try:
            n = ops.rebuild_states(session, org=org, model_id=model_id)
        except ops.OperationError as exc:
            raise HTTPException(UNPROCESSABLE, str(exc)) from None
    return RebuildOut(model_id=model_id, learners=n)


# ---------------------------------------------------------------------- organisation
SETTING_KEYS = (
    "default_policy",
    "target_success",
    "mastery_threshold",
    "mastery_scale",
    "mastery_min_answers",
    "struggle_run",
    "struggle_answers",
    "concept_daily_cap",
    "review_threshold",
    "recent_exclusion",
    "risk_low_mastery",
    "risk_mastery_drop",
    "risk_window_answers",
    "risk_inactive_days",
    "item_flag_min_attempts",
    "item_flag_z",
    "item_flag_min_learners",
    "curve_min_learners",
)
MAX_RECENT_EXCLUSION = 10_000
#: settings that are positive integers / positive numbers (the rest not named here are
#: probabilities strictly between 0 and 1)
INT_SETTINGS = {
    "recent_exclusion",
    "risk_window_answers",
    "item_flag_min_attempts",
    "item_flag_min_learners",
    "curve_min_learners",
    "mastery_min_answers",
    "struggle_run",
    "struggle_answers",
    "concept_daily_cap",
}
#: integer settings where 0 means "off"
ZERO_OK_SETTINGS = {"recent_exclusion", "concept_daily_cap"}
POSITIVE_SETTINGS = {"risk_inactive_days", "item_flag_z"}


def _check_setting(key: str, value: Any) -> Any:
    def bad(why: str) -> HTTPException:
        return HTTPException(UNPROCESSABLE, f"setting {key!r}: {why}, got {value!r}")

    if key == "default_policy":
        if value not in POLICIES:
            raise bad(f"expected one of {', '.join(POLICIES)}")
        return value
    if key == "mastery_scale":
        if value not in MASTERY_SCALES:
            raise bad(f"expected one of {', '.join(MASTERY_SCALES)}")
        return value
    if key in INT_SETTINGS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("expected an integer")
        low = 0 if key in ZERO_OK_SETTINGS else 1
        if not low <= value <= MAX_RECENT_EXCLUSION:
            raise bad(f"expected {low} <= value <= {MAX_RECENT_EXCLUSION}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad("expected a number")
    if key in POSITIVE_SETTINGS:
        if not (math.isfinite(value) and value > 0):
            raise bad("expected a positive number")
        return float(value)
    if not (math.isfinite(value) and 0 < value < 1):
        raise bad("expected a number strictly between 0 and 1")
    return float(value)


def update_settings(session: Session, *, org: Organisation, changes: dict[str, Any]) -> None:
    """Apply setting overrides (``None`` removes one: the service default applies again).
    Unknown keys and bad values are a 422 naming the key; nothing changes then."""
    unknown = [k for k in changes if k not in SETTING_KEYS]
    if unknown:
        raise HTTPException(
            UNPROCESSABLE,
            f"unknown setting(s) {', '.join(repr(k) for k in unknown)}; "
            f"expected {', '.join(SETTING_KEYS)}",
        )
    new = dict(org.settings or {})
    for k, v in changes.items():
        if v is None:
            new.pop(k, None)
        else:
            new[k] = _check_setting(k, v)
    org.settings = new  # a new dict: the JSON column sees the change
    session.flush()


def _org_out(org: Organisation, settings: Settings) -> OrganisationOut:
    own = dict(org.settings or {})
    return OrganisationOut(
        id=org.id,
        slug=org.slug,
        name=org.name,
        active_model_id=org.active_model_id,
        catalogue_version=org.catalogue_version,
        created_at=_utc(org.created_at),
        settings=own,
        effective_settings={k: own.get(k, getattr(settings, k)) for k in SETTING_KEYS},
    )


@router.get("/organisation", response_model=OrganisationOut)
def get_organisation(
    principal: PrincipalDep, org: OrgDep, settings: SettingsDep
) -> OrganisationOut:
    """The caller's organisation: active model, catalogue version, recommendation settings
    (its overrides, and the values in effect)."""
    require_roles(principal, "admin")
    return _org_out(org, settings)


@router.patch(
    "/organisation/settings",
    response_model=OrganisationOut,
    responses={422: {"description": "Unknown key or bad value (named); nothing changed"}},
)
def patch_settings(
    body: Annotated[
        dict[str, Any],
        Body(
            examples=[{"default_policy": "target", "target_success": 0.75}],
            description=f"Any of {', '.join(SETTING_KEYS)}; null restores the default",
        ),
    ],
    session: SessionDep,
    principal: PrincipalDep,
    org: OrgDep,
    settings: SettingsDep,
) -> OrganisationOut:
    """Change some recommendation settings of the organisation (the others stay)."""
    require_roles(principal, "admin")
    with _transaction(session):
        _lock_org(session, org)
        update_settings(session, org=org, changes=body)
        out = _org_out(org, settings)
    return out
