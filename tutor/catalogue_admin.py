"""The catalogue's administration, as the API's ``/v1/concepts``, ``/v1/prerequisites`` and
``/v1/items`` routes do it: listings with their counts, and the writes.

Every write locks the organisation row first (:func:`tutor.operations.lock_org`) and bumps the
organisation's ``catalogue_version`` when it changes anything, which invalidates the
recommenders' cached catalogues in every process. Functions take a session and leave
committing to the caller; refusals are :mod:`tutor.errors`' errors (404 / 409 / 422).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, aliased

from . import operations as ops
from .db import Concept, Item, ItemConcept, Organisation, PrerequisiteEdge
from .errors import Conflict, Invalid, NotFound, listed


# ---------------------------------------------------------------------- concepts
def _with_item_counts(session: Session, q: Select) -> list[tuple[Concept, int]]:
    """The concepts ``q`` selects, each with how many items (active or not) link it."""
    n = (
        select(ItemConcept.concept_id, func.count().label("n"))
        .group_by(ItemConcept.concept_id)
        .subquery()
    )
    rows = session.execute(
        q.outerjoin(n, n.c.concept_id == Concept.id).add_columns(func.coalesce(n.c.n, 0))
    ).all()
    return [(c, int(k)) for c, k in rows]


def concepts_page(
    session: Session, *, org: Organisation, limit: int, offset: int
) -> tuple[int, list[tuple[Concept, int]]]:
    """How many concepts the organisation has, and a page of them by id with their item
    counts."""
    q = select(Concept).where(Concept.org_id == org.id)
    total = ops.count_rows(session, q)
    page = _with_item_counts(session, q.order_by(Concept.external_id).limit(limit).offset(offset))
    return total, page


def concept(session: Session, *, org: Organisation, external_id: str) -> tuple[Concept, int]:
    """One concept with its item count; :class:`~tutor.errors.NotFound` otherwise."""
    q = select(Concept).where(Concept.org_id == org.id, Concept.external_id == external_id)
    rows = _with_item_counts(session, q)
    if not rows:
        raise NotFound(f"concept {external_id!r} not found")
    return rows[0]


def put_concept(
    session: Session,
    *,
    org: Organisation,
    external_id: str,
    name: str,
    level: float | None,
    keep_level: bool = False,
) -> tuple[Concept, int, bool]:
    """Create a concept or set its name and teaching level (``keep_level``: an existing
    concept keeps its level, as when a request leaves it out); returns the concept, its item
    count and whether it was created."""
    ops.lock_org(session, org)
    row = ops.lookup(session, Concept, org=org, external_id=external_id)
    created = row is None
    if row is None:
        row = Concept(org_id=org.id, external_id=external_id, name=name, level=level)
        session.add(row)
        org.bump_catalogue()
    else:
        if keep_level:
            level = row.level
        if (row.name, row.level) != (name, level):
            row.name, row.level = name, level
            org.bump_catalogue()
    session.flush()
    out, n_items = _with_item_counts(session, select(Concept).where(Concept.id == row.id))[0]
    return out, n_items, created


def delete_concept(session: Session, *, org: Organisation, external_id: str) -> None:
    """Delete a concept and its prerequisite edges; :class:`~tutor.errors.Conflict` naming
    the items (active or not) still linked to it."""
    ops.lock_org(session, org)
    row = ops.find(session, Concept, org=org, external_id=external_id)
    users = session.scalars(
        select(Item.external_id)
        .join(ItemConcept, ItemConcept.item_id == Item.id)
        .where(ItemConcept.concept_id == row.id)
        .order_by(Item.external_id)
    ).all()
    if users:
        raise Conflict(
            f"concept {external_id!r} is still used by {len(users)} item(s) "
            f"({listed(users, 5)}, active or not); relink them first (PUT /v1/items/{{id}})"
        )
    session.delete(row)
    org.bump_catalogue()
    session.flush()


# ---------------------------------------------------------------------- prerequisites
def prerequisite_edges(session: Session, *, org: Organisation) -> list[tuple[str, str]]:
    """The organisation's prerequisite graph as ``(prerequisite, concept)`` id pairs, sorted."""
    pre, post = aliased(Concept), aliased(Concept)
    rows = session.execute(
        select(pre.external_id, post.external_id)
        .select_from(PrerequisiteEdge)
        .join(pre, pre.id == PrerequisiteEdge.prerequisite_id)
        .join(post, post.id == PrerequisiteEdge.concept_id)
        .where(PrerequisiteEdge.org_id == org.id)
        .order_by(pre.external_id, post.external_id)
    ).all()
    return [(a, b) for a, b in rows]


def replace_prerequisites(
    session: Session, *, org: Organisation, edges: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Replace the whole graph (:func:`tutor.operations.set_prerequisites`); an unknown
    concept or a cycle is :class:`~tutor.errors.Invalid` naming it. Returns the new graph."""
    ops.lock_org(session, org)
    try:
        ops.set_prerequisites(session, org=org, edges=edges)
    except ops.OperationError as exc:
        raise Invalid(str(exc)) from None
    return prerequisite_edges(session, org=org)


# ---------------------------------------------------------------------- items
def items_page(
    session: Session,
    *,
    org: Organisation,
    limit: int,
    offset: int,
    concept: str | None = None,
    active: bool | None = None,
) -> tuple[int, list[Item]]:
    """How many items match, and a page of them by id: only those linked to ``concept``,
    only active (or inactive) ones, when given."""
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
    total = ops.count_rows(session, q)
    rows = session.scalars(q.order_by(Item.external_id).limit(limit).offset(offset)).all()
    return total, list(rows)


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
    changed. Unknown concepts are created with ``create_concepts``, else
    :class:`~tutor.errors.Invalid` names them."""
    ops.lock_org(session, org)
    wanted = list(dict.fromkeys(concepts))
    have = ops.by_external_id(session, Concept, org=org, external_ids=wanted)
    missing = [c for c in wanted if c not in have]
    if missing and not create_concepts:
        raise Invalid(
            f"unknown concept(s) {listed(missing)} in 'concepts': create "
            "them first (PUT /v1/concepts/{id}) or pass ?create_concepts=true"
        )
    for cid in missing:
        have[cid] = Concept(org_id=org.id, external_id=cid, name="")
        session.add(have[cid])
    item = ops.lookup(session, Item, org=org, external_id=external_id)
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


def deactivate_item(session: Session, *, org: Organisation, external_id: str) -> Item:
    """Deactivate an item (soft delete: its answers stay valid); returns it."""
    ops.lock_org(session, org)
    item = ops.find(session, Item, org=org, external_id=external_id)
    if item.active:
        item.active = False
        org.bump_catalogue()
        session.flush()
    return item
