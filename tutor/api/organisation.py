"""Organisation routes (tag ``admin``): ``/v1/organisation``, the caller's organisation (active
model, catalogue version) and its recommendation settings. Admin keys only.

Settings writes run in one transaction under the organisation lock
(:func:`tutor.operations.update_settings`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from .. import operations as ops
from ..db import Organisation
from ..service import as_utc
from ..settings import Settings
from .deps import ViewDep, admin_write, require_roles
from .schemas import OrganisationOut

router = APIRouter(tags=["admin"])


def _out(org: Organisation, settings: Settings) -> OrganisationOut:
    return OrganisationOut(
        id=org.id,
        slug=org.slug,
        name=org.name,
        active_model_id=org.active_model_id,
        catalogue_version=org.catalogue_version,
        created_at=as_utc(org.created_at),
        settings=dict(org.settings or {}),
        effective_settings=ops.effective_settings(org, settings),
    )


@router.get("/organisation", response_model=OrganisationOut)
def get_organisation(view: ViewDep) -> OrganisationOut:
    """The caller's organisation: active model, catalogue version, recommendation settings
    (its overrides, and the values in effect)."""
    require_roles(view.principal, "admin")
    return _out(view.org, view.settings)


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
            description=f"Any of {', '.join(ops.SETTING_KEYS)}; null restores the default",
        ),
    ],
    view: ViewDep,
) -> OrganisationOut:
    """Change some recommendation settings of the organisation (the others stay)."""
    with admin_write(view) as session:
        ops.update_settings(session, org=view.org, changes=body)
        out = _out(view.org, view.settings)
    return out
