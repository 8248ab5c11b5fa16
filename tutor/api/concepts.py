"""Concept routes (tag ``admin``): ``/v1/concepts``, the organisation's concepts with their
names and teaching levels.

Readable by admin and teacher keys; written by admin keys only, in one transaction, through
:mod:`tutor.catalogue_admin` (every change bumps the organisation's catalogue version). Ids
that another organisation owns answer 404, never 403.
"""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from .. import catalogue_admin as catalogue
from ..db import Concept
from .deps import (
    CATALOGUE_READERS,
    ViewDep,
    admin_write,
    created_or,
    mark_created,
    require_roles,
)
from .schemas import ConceptIn, ConceptOut, ConceptPage, ExtId, Limit, Offset

router = APIRouter(tags=["admin"])


def _out(concept: Concept, n_items: int) -> ConceptOut:
    return ConceptOut(id=concept.external_id, name=concept.name, level=concept.level, items=n_items)


@router.get("/concepts", response_model=ConceptPage)
def list_concepts(view: ViewDep, limit: Limit = 100, offset: Offset = 0) -> ConceptPage:
    """The organisation's concepts by id, a page at a time, with how many items use each."""
    require_roles(view.principal, *CATALOGUE_READERS)
    total, page = catalogue.concepts_page(view.session, org=view.org, limit=limit, offset=offset)
    return ConceptPage(
        total=total, limit=limit, offset=offset, concepts=[_out(c, k) for c, k in page]
    )


@router.get("/concepts/{concept_id}", response_model=ConceptOut)
def get_concept(concept_id: ExtId, view: ViewDep) -> ConceptOut:
    """One concept."""
    require_roles(view.principal, *CATALOGUE_READERS)
    return _out(*catalogue.concept(view.session, org=view.org, external_id=concept_id))


@router.put("/concepts/{concept_id}", response_model=ConceptOut, responses=created_or("Updated"))
def put_concept(
    concept_id: ExtId, body: ConceptIn, response: Response, view: ViewDep
) -> ConceptOut:
    """Create a concept or set its name and teaching level (201 when created, 200 when
    updated)."""
    with admin_write(view) as session:
        concept, n_items, created = catalogue.put_concept(
            session,
            org=view.org,
            external_id=concept_id,
            name=body.name,
            level=body.level,
            # a field the request leaves out keeps its value (a rename keeps the level)
            keep_level="level" not in body.model_fields_set,
        )
        out = _out(concept, n_items)
    mark_created(response, created)
    return out


@router.delete(
    "/concepts/{concept_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: {"description": "Items still use the concept"}},
)
def delete_concept(concept_id: ExtId, view: ViewDep) -> Response:
    """Delete a concept and its prerequisite edges; 409 while any item (active or not) is
    still linked to it."""
    with admin_write(view) as session:
        catalogue.delete_concept(session, org=view.org, external_id=concept_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
