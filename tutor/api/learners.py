"""Learner routes: ``/v1/learners``, the organisation's learners.

Tag ``learners``: a learner's mastery, next items, history and curriculum, for admin keys, the
teacher keys of the learner's groups and the learner's own key. Tag ``admin``: the learner
list (admin keys: all; teacher keys: the learners of their groups), one learner (as the
learner routes), and creation, renaming and deletion (admin keys only, in one transaction,
through :mod:`tutor.learners_admin`). A learner a key may not see answers 404, never 403.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from .. import learners_admin, recommend, service, states
from ..db import Learner
from ..settings import POLICIES, evidence_rule
from .deps import (
    View,
    ViewDep,
    admin_write,
    created_or,
    forget_keys,
    get_view,
    json_response,
    mark_created,
    org_setting,
    require_roles,
    run_route,
    visible_groups,
    visible_learner,
)
from .lean import LeanRoute, int_in, plain_query
from .schemas import (
    MAX_OFFSET,
    AtQuery,
    CurriculumOut,
    ExtId,
    History,
    LearnerIn,
    LearnerOut,
    LearnerPage,
    Limit,
    Mastery,
    NextItems,
    Offset,
    Time,
)

router = APIRouter()

#: next-items' ``n``: its default and bounds
NEXT_ITEMS_N, NEXT_ITEMS_MAX = 5, 100
_NEXT_ITEMS_QUERY = {"n": int_in(1, NEXT_ITEMS_MAX), "policy": str}


# ---------------------------------------------------------------------- teaching
@router.get("/learners/{learner_id}/mastery", response_model=Mastery, tags=["learners"])
async def get_mastery(learner_id: str, view: ViewDep, at: AtQuery = None) -> Response:
    """Every concept of the organisation with its status (not started, estimated from other
    concepts, learning, mastered, struggling), the learner's own answer count and the
    reported mastery: from own answers where there are any, else the model's estimate."""
    return await run_route(view, _mastery, learner_id, view, at)


async def _lean_mastery(request: Request) -> Response | None:
    """:func:`get_mastery` without query parameters (see :mod:`.lean`)."""
    if request.scope.get("query_string"):
        return None
    view = await get_view(request)
    return await run_route(view, _mastery, request.path_params["learner_id"], view, None)


def _mastery(learner_id: str, view: View, at: datetime | None) -> Response:
    session, org, settings = view.session, view.org, view.settings
    learner = visible_learner(session, view.principal, learner_id, with_state=True)
    out = service.learner_mastery(
        session,
        org=org,
        learner=learner,
        at=at,
        rule=evidence_rule(org.settings, settings),
        scale=org_setting(org, settings, "mastery_scale"),
    )
    states.keep_rebuilt_states(session)
    return json_response(out)


@router.get("/learners/{learner_id}/next-items", response_model=NextItems, tags=["learners"])
async def next_items(
    learner_id: str,
    view: ViewDep,
    n: Annotated[int, Query(ge=1, le=NEXT_ITEMS_MAX)] = NEXT_ITEMS_N,
    policy: Annotated[str | None, Query(description=f"One of {', '.join(POLICIES)}")] = None,
    target: Annotated[float | None, Query(gt=0, lt=1)] = None,
    at: Annotated[
        Time | None,
        Query(
            description="Recommend for this time (ISO 8601; default now): models that forget "
            "predict mastery and review needs at that time, e.g. for the start of a session"
        ),
    ] = None,
) -> Response:
    """The next items for the learner, each with its predicted success and the reason."""
    return await run_route(view, _next_items, learner_id, view, n, policy, target, at)


async def _lean_next_items(request: Request) -> Response | None:
    """:func:`next_items` with at most ``n`` and ``policy`` (see :mod:`.lean`)."""
    query = plain_query(request, _NEXT_ITEMS_QUERY)
    if query is None:
        return None
    view = await get_view(request)
    learner_id = request.path_params["learner_id"]
    n, policy = query.get("n", NEXT_ITEMS_N), query.get("policy")
    return await run_route(view, _next_items, learner_id, view, n, policy, None, None)


#: the hot reads' lean routes (:mod:`.lean`)
LEAN = [
    LeanRoute("GET", "/learners/{learner_id}/mastery", _lean_mastery),
    LeanRoute("GET", "/learners/{learner_id}/next-items", _lean_next_items),
]


def _next_items(
    learner_id: str,
    view: View,
    n: int,
    policy: str | None,
    target: float | None,
    at: datetime | None,
) -> Response:
    session, org, settings = view.session, view.org, view.settings
    # the learner's statement also reads their recent items, as many as the organisation
    # excluded at its last request here (a change is read with a query of its own once)
    org_id, last_seen = view.principal.org_id, view.request.app.state.recent_exclusion_seen
    seen = last_seen.get(org_id, settings.recent_exclusion)
    learner = visible_learner(
        session, view.principal, learner_id, with_state=True, recent=max(seen, 1)
    )
    learner_ext = learner.external_id
    recent_exclusion = int(org_setting(org, settings, "recent_exclusion"))
    last_seen[org_id] = recent_exclusion
    lv = recommend.learner_view(
        session,
        org=org,
        learner=learner,
        recent_exclusion=recent_exclusion,
        at=at,
        scale=org_setting(org, settings, "mastery_scale"),
        rule=evidence_rule(org.settings, settings),
    )
    out = recommend.recommend(
        lv,
        n=n,
        policy=policy or org_setting(org, settings, "default_policy"),
        target=target
        if target is not None
        else float(org_setting(org, settings, "target_success")),
        review_threshold=float(org_setting(org, settings, "review_threshold")),
        seed=learner.id * 100_003 + learner.n_answers,
    )
    # keep any state rebuilt while answering (may end the transaction: nothing of the
    # session is read after it)
    states.keep_rebuilt_states(session)
    return json_response({"learner_id": learner_ext, **out})


@router.get("/learners/{learner_id}/history", response_model=History, tags=["learners"])
def history(
    learner_id: str,
    view: ViewDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> History:
    """The learner's answers in event order, a page at a time."""
    learner = visible_learner(view.session, view.principal, learner_id)
    return History.model_validate(
        service.learner_history(view.session, learner=learner, limit=limit, offset=offset)
    )


@router.get("/learners/{learner_id}/curriculum", response_model=CurriculumOut, tags=["learners"])
def learner_curriculum(learner_id: str, view: ViewDep) -> CurriculumOut:
    """The designed concept order (prerequisites first) with this learner's mastery; the
    concepts already mastered are marked."""
    session, org, settings = view.session, view.org, view.settings
    learner = visible_learner(session, view.principal, learner_id)
    learner_ext = learner.external_id
    lv = recommend.learner_view(
        session,
        org=org,
        learner=learner,
        recent_exclusion=0,
        scale=org_setting(org, settings, "mastery_scale"),
        rule=evidence_rule(org.settings, settings),
    )
    statuses = [lv.status(c) for c in range(len(lv.cat.concept_ext))]
    out = recommend.curriculum_for(lv.view, lv.cat, lv.mastery, lv.mastered, statuses)
    states.keep_rebuilt_states(session)
    return CurriculumOut.model_validate({"scope": f"learner {learner_ext}", **out})


# ---------------------------------------------------------------------- administration
def _out(lr: Learner) -> LearnerOut:
    return LearnerOut(
        id=lr.external_id,
        name=lr.name or "",
        n_answers=lr.n_answers or 0,
        first_seen=service.as_utc(lr.first_seen),
        created_at=service.as_utc(lr.created_at),
    )


@router.get("/learners", response_model=LearnerPage, tags=["admin"])
def list_learners(view: ViewDep, limit: Limit = 100, offset: Offset = 0) -> LearnerPage:
    """Learners by id, a page at a time: all of them for an admin key, the learners of its
    groups for a teacher key."""
    require_roles(view.principal, "admin", "teacher")
    total, rows = learners_admin.learners_page(
        view.session,
        org=view.org,
        limit=limit,
        offset=offset,
        groups=visible_groups(view.principal),
    )
    return LearnerPage(total=total, limit=limit, offset=offset, learners=[_out(r) for r in rows])


@router.get("/learners/{learner_id}", response_model=LearnerOut, tags=["admin"])
def get_learner(learner_id: ExtId, view: ViewDep) -> LearnerOut:
    """One learner (admin: any; teacher: the learners of its groups; learner: itself)."""
    return _out(visible_learner(view.session, view.principal, learner_id))


@router.put(
    "/learners/{learner_id}",
    response_model=LearnerOut,
    responses=created_or("Renamed"),
    tags=["admin"],
)
def put_learner(
    learner_id: ExtId, body: LearnerIn, response: Response, view: ViewDep
) -> LearnerOut:
    """Create a learner or set its name (201 when created, 200 when updated)."""
    with admin_write(view) as session:
        learner, created = learners_admin.upsert_learner(
            session, org=view.org, external_id=learner_id, name=body.name
        )
        out = _out(learner)
    mark_created(response, created)
    return out


@router.delete("/learners/{learner_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["admin"])
def delete_learner(learner_id: ExtId, view: ViewDep) -> Response:
    """Delete a learner with everything of theirs: answers, model states, group memberships
    and their learner API keys (xAPI statements are kept, unlinked)."""
    with admin_write(view) as session:
        learners_admin.delete_learner(session, org=view.org, external_id=learner_id)
    forget_keys(view.request)  # the learner's keys are gone: no cached principal may outlive them
    return Response(status_code=status.HTTP_204_NO_CONTENT)
