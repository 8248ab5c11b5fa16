"""Prerequisite routes (tag ``admin``): ``/v1/prerequisites``, the organisation's
prerequisite graph between concepts, read and replaced whole.

Readable by admin and teacher keys; replaced by admin keys only, in one transaction, through
:mod:`tutor.catalogue_admin` (the change bumps the organisation's catalogue version).
"""

from __future__ import annotations

from fastapi import APIRouter

from .. import catalogue_admin as catalogue
from .deps import CATALOGUE_READERS, ViewDep, admin_write, require_roles
from .schemas import PrerequisiteIO, PrerequisiteOut

router = APIRouter(tags=["admin"])


def _out(edges: list[tuple[str, str]]) -> list[PrerequisiteOut]:
    return [PrerequisiteOut(prerequisite=a, concept=b) for a, b in edges]


@router.get("/prerequisites", response_model=list[PrerequisiteOut])
def get_prerequisites(view: ViewDep) -> list[PrerequisiteOut]:
    """The organisation's prerequisite graph: one edge per (prerequisite, concept) pair."""
    require_roles(view.principal, *CATALOGUE_READERS)
    return _out(catalogue.prerequisite_edges(view.session, org=view.org))


@router.put(
    "/prerequisites",
    response_model=list[PrerequisiteOut],
    responses={422: {"description": "Unknown concept or a cycle (named); nothing changed"}},
)
def put_prerequisites(body: list[PrerequisiteIO], view: ViewDep) -> list[PrerequisiteOut]:
    """Replace the whole prerequisite graph (an empty list removes it). An unknown concept or
    a cycle is a 422 naming it, and the graph stays as it was."""
    with admin_write(view) as session:
        edges = catalogue.replace_prerequisites(
            session, org=view.org, edges=[(e.prerequisite, e.concept) for e in body]
        )
    return _out(edges)
