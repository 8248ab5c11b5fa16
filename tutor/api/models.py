"""Model version routes (tag ``admin``): ``/v1/models``, the organisation's registered model
versions: listed, activated (hot swap) and their learner states rebuilt. Admin keys only.

Registering a new version (checkpoint) stays a command-line task
(:func:`tutor.operations.register_model`): uploading large checkpoint files is out of scope
for the API. The work is :mod:`tutor.operations`'.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from .. import operations as ops
from ..db import ModelVersion, Organisation
from ..service import as_utc
from .deps import ViewDep, admin_write, require_roles
from .schemas import ModelOut, RebuildOut

router = APIRouter(tags=["admin"])

ModelId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Model version id")]


def _out(org: Organisation, mv: ModelVersion, states: int) -> ModelOut:
    return ModelOut(
        id=mv.id,
        name=mv.name,
        label=mv.label or "",
        sha256=mv.sha256,
        created_at=as_utc(mv.created_at),
        active=mv.id == org.active_model_id,
        time_unit=(mv.info or {}).get("time_unit"),
        metrics=ops.model_metrics(mv.info),
        states=states,
    )


@router.get("/models", response_model=list[ModelOut])
def list_models(view: ViewDep) -> list[ModelOut]:
    """The organisation's registered model versions, oldest first; ``active`` marks the one
    that serves. New versions are registered on the command line (checkpoint files)."""
    require_roles(view.principal, "admin")
    return [_out(view.org, mv, k) for mv, k in ops.model_versions(view.session, org=view.org)]


@router.get("/models/{model_id}", response_model=ModelOut)
def get_model(model_id: ModelId, view: ViewDep) -> ModelOut:
    """One model version."""
    require_roles(view.principal, "admin")
    return _out(view.org, *ops.model_version(view.session, org=view.org, model_id=model_id))


@router.post("/models/{model_id}/activate", response_model=ModelOut)
def activate_model(model_id: ModelId, view: ViewDep) -> ModelOut:
    """Make this version the active one (hot swap), once its checkpoint loads, matches its
    checksum and fits the organisation's catalogue (409 naming the differences otherwise).
    Learner states for it are rebuilt lazily,
    on each learner's next request, or eagerly with ``rebuild-states``; the analytics caches
    for it are filled in the background (``TUTOR_ANALYTICS_WARMUP_GROUPS``)."""
    with admin_write(view) as session:
        out = _out(view.org, *ops.activate_version(session, org=view.org, model_id=model_id))
    warmer = getattr(view.request.app.state, "analytics_warmer", None)
    if warmer is not None:
        warmer.kick()
    return out


@router.post("/models/{model_id}/rebuild-states", response_model=RebuildOut)
def rebuild_states(model_id: ModelId, view: ViewDep) -> RebuildOut:
    """Rebuild every learner's state for this version now (replaying their histories), e.g.
    before activating it so that the swap costs learners nothing. Runs within the request,
    in batches of learners, each written in a short transaction of its own, so answers keep
    being stored meanwhile; a learner who answers during the rebuild is skipped (counted in
    ``skipped``): the answer path keeps its state current."""
    require_roles(view.principal, "admin")
    state = view.request.app.state
    n, skipped = ops.rebuild_version_states(
        org_id=view.principal.org_id,
        model_id=model_id,
        read_factory=state.read_sessionmaker,
        write_factory=state.sessionmaker,
    )
    return RebuildOut(model_id=model_id, learners=n, skipped=skipped)
