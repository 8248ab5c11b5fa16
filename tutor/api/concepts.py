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
    OrgDep,
    PrincipalDep,
    SessionDep,
    created_or,
    require_roles,
    write_transaction,
)
from .schemas import ConceptIn, ConceptOut, ConceptPage, ExtId, Limit, Offset

router = APIRouter(tags=["admin"])


def _out(concept: Concept, n_items: int) -> ConceptOut:
    return ConceptOut(id=concept.external_id, name=concept.name, level=concept.level, items=n_items)


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
    total, page = catalogue.concepts_page(session, org=org, limit=limit, offset=offset)
    return ConceptPage(
        total=total, limit=limit, offset=offset, concepts=[_out(c, k) for c, k in page]
    )


@router.get("/concepts/{concept_id}", response_model=ConceptOut)
def get_concept(
    concept_id: ExtId, session: SessionDep, principal: PrincipalDep, org: OrgDep
) -> ConceptOut:
    """One concept."""
    require_roles(principal, *CATALOGUE_READERS)
    return _out(*catalogue.concept(session, org=org, external_id=concept_id))


@router.put("/concepts/{concept_id}", response_model=ConceptOut, responses=created_or("Updated"))
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
    with write_transaction(session):
        concept, n_items, created = catalogue.put_concept(
            session,
            org=org,
            external_id=concept_id,
            name=body.name,
            level=body.level,
            # a field the request leaves out keeps its value (a rename keeps the level)
            keep_level="level" not in body.model_fields_set,
        )
        out = _out(concept, n_items)
    if created:
        response.status_code = status.HTTP_201_CREATED
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
    with write_transaction(session):
        catalogue.delete_concept(session, org=org, external_id=concept_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
