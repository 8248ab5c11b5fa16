"""``POST /v1/answers``: one answer or a batch, idempotent by event id."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select

from .. import service
from ..db import Learner
from .deps import (
    View,
    ViewDep,
    commit_with_retries,
    get_view,
    json_response,
    limit_batch,
    model_response,
    require_roles,
    run_route,
)
from .lean import LeanRoute, is_json
from .schemas import AnswerBatch, AnswerBatchResult, AnswerIn, AnswerResult

router = APIRouter(tags=["answers"])

#: the body the route takes: one answer or a batch (the lean route below parses the same)
AnswerBody = AnswerIn | AnswerBatch


@router.post(
    "/answers",
    response_model=AnswerResult | AnswerBatchResult,
    responses={
        201: {"description": "Stored and applied (at least one new answer)"},
        200: {"description": "Every answer was a replay of one already stored"},
        404: {"description": "Unknown learner or item (unless auto-creation is on)"},
        409: {"description": "An event id already stored with different content"},
    },
)
async def post_answers(
    body: AnswerBody,
    view: ViewDep,
) -> Response:
    """Store answers and fold them into each learner's state, all in one transaction.

    A repeated event id with the same content returns the original result (``replayed``:
    true); with different content it is a 409 and nothing is stored. Answers are applied in
    event order (timestamp, then event id), whatever order they arrive in.
    """
    return await run_route(view, _post_answers, body, view)


_BODY = TypeAdapter(AnswerBody)


async def _lean_post_answers(request: Request) -> Response | None:
    """:func:`post_answers` for a JSON body that validates as it is (see :mod:`.lean`)."""
    if not is_json(request):
        return None
    try:
        body = _BODY.validate_json(await request.body())
    except ValidationError:
        return None
    view = await get_view(request)
    return await run_route(view, _post_answers, body, view)


LEAN = [LeanRoute("POST", "/answers", _lean_post_answers)]


def _post_answers(body: AnswerBody, view: View) -> Response:
    session, principal, org, settings = view.session, view.principal, view.org, view.settings
    require_roles(principal, "admin", "ingest", "learner")
    single = isinstance(body, AnswerIn)
    answers = [body] if single else body.answers
    limit_batch(len(answers), "answers", settings)
    allowed = None
    if principal.role == "learner":
        allowed = session.scalar(
            select(Learner.external_id).where(Learner.id == principal.learner_id)
        )

    def record(attempt: int) -> list[dict]:  # noqa: ARG001
        # (after a lost race the session was rolled back: the locking statement reads the
        # organisation's row again)
        return service.record_answers(
            session,
            org=org,
            answers=[service.AnswerIn(**a.model_dump()) for a in answers],
            auto_create_learners=settings.auto_create_learners and allowed is None,
            auto_create_items=settings.auto_create_items,
            allowed_learner=allowed,
            defaults=settings,  # the rule and scale: the organisation's, over these
            max_future_seconds=settings.max_future_seconds,
            max_replay_answers=settings.max_replay_answers,
        )

    results = commit_with_retries(session, record)
    code = 201 if any(not r["replayed"] for r in results) else 200
    if any(r["replayed"] for r in results):
        # stored responses may predate a field of the model (its default then fills it in)
        if single:
            return model_response(AnswerResult, results[0], status_code=code)
        return model_response(AnswerBatchResult, {"results": results}, status_code=code)
    return json_response(results[0] if single else {"results": results}, status_code=code)
