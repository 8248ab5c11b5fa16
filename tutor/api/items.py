"""Item routes (tag ``admin``): ``/v1/items``, the organisation's items with their concepts,
metadata and active flag.

Readable by admin and teacher keys; written by admin keys only, in one transaction, through
:mod:`tutor.catalogue_admin` (every change bumps the organisation's catalogue version). An
item is never deleted, only deactivated: the answers that reference it stay valid.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from .. import catalogue_admin as catalogue
from .. import operations as ops
from ..db import Item
from .deps import (
    CATALOGUE_READERS,
    ViewDep,
    admin_write,
    created_or,
    mark_created,
    require_roles,
)
from .schemas import MAX_ITEM_CONCEPTS, ExtId, ItemIn, ItemOut, ItemPage, Limit, Offset

router = APIRouter(tags=["admin"])


def _out(item: Item) -> ItemOut:
    return ItemOut(
        id=item.external_id,
        concepts=sorted(c.external_id for c in item.concepts),
        metadata=item.meta or {},
        active=bool(item.active),
    )


@router.get("/items", response_model=ItemPage)
def list_items(
    view: ViewDep,
    limit: Limit = 100,
    offset: Offset = 0,
    concept: Annotated[str | None, Query(description="Only items linked to this concept")] = None,
    active: Annotated[bool | None, Query(description="Only active (or inactive) items")] = None,
) -> ItemPage:
    """The organisation's items by id, a page at a time."""
    require_roles(view.principal, *CATALOGUE_READERS)
    total, rows = catalogue.items_page(
        view.session, org=view.org, limit=limit, offset=offset, concept=concept, active=active
    )
    return ItemPage(total=total, limit=limit, offset=offset, items=[_out(i) for i in rows])


@router.get("/items/{item_id}", response_model=ItemOut)
def get_item(item_id: ExtId, view: ViewDep) -> ItemOut:
    """One item with its concepts and metadata."""
    require_roles(view.principal, *CATALOGUE_READERS)
    return _out(ops.find(view.session, Item, org=view.org, external_id=item_id))


@router.put(
    "/items/{item_id}",
    response_model=ItemOut,
    responses=created_or(
        "Replaced",
        {
            422: "Unknown concepts (without ?create_concepts=true), or more than "
            f"{MAX_ITEM_CONCEPTS} of them"
        },
    ),
)
def put_item(
    item_id: ExtId,
    body: ItemIn,
    response: Response,
    view: ViewDep,
    create_concepts: Annotated[
        bool, Query(description="Create the concepts that do not exist yet")
    ] = False,
) -> ItemOut:
    """Create or replace an item: its concepts, metadata and active flag are set as given."""
    with admin_write(view) as session:
        item, created = catalogue.upsert_item(
            session,
            org=view.org,
            external_id=item_id,
            concepts=body.concepts,
            metadata=body.metadata,
            active=body.active,
            create_concepts=create_concepts,
        )
        out = _out(item)
    mark_created(response, created)
    return out


@router.delete("/items/{item_id}", response_model=ItemOut)
def delete_item(item_id: ExtId, view: ViewDep) -> ItemOut:
    """Deactivate an item (soft delete): it is no longer recommended, and the answers that
    reference it stay valid. ``PUT`` it with ``active: true`` to bring it back."""
    with admin_write(view) as session:
        out = _out(catalogue.deactivate_item(session, org=view.org, external_id=item_id))
    return out
