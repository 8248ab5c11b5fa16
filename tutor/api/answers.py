"""``POST /v1/answers``: one answer or a batch, idempotent by event id."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .. import service
from ..db import Learner
from ..settings import evidence_rule
from .deps import OrgDep, PrincipalDep, SessionDep, SettingsDep, require_roles
from .schemas import AnswerBatch, AnswerBatchResult, AnswerIn, AnswerResult

router = APIRouter(tags=["answers"])

RETRIES = 3


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
def post_answers(
    body: AnswerIn | AnswerBatch,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    org: OrgDep,
    settings: SettingsDep,
) -> AnswerResult | AnswerBatchResult:
    """Store answers and fold them into each learner's state, all in one transaction.

    A repeated event id with the same content returns the original result (``replayed``:
    true); with different content it is a 409 and nothing is stored. Answers are applied in
    event order (timestamp, then event id), whatever order they arrive in.
    """
    require_roles(principal, "admin", "ingest", "learner")
    single = isinstance(body, AnswerIn)
    answers = [body] if single else body.answers
    if len(answers) > settings.max_batch_answers:
        raise HTTPException(
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            f"{len(answers)} answers in one request; the limit is {settings.max_batch_answers}",
        )
    allowed = None
    if principal.role == "learner":
        allowed = session.scalar(
            select(Learner.external_id).where(Learner.id == principal.learner_id)
        )
    org_id = org.id
    for attempt in range(RETRIES):
        try:
            results = service.record_answers(
                session,
                org=org,
                answers=[service.AnswerIn(**a.model_dump()) for a in answers],
                auto_create_learners=settings.auto_create_learners and allowed is None,
                auto_create_items=settings.auto_create_items,
                allowed_learner=allowed,
                rule=evidence_rule(org.settings, settings),
                scale=(org.settings or {}).get("mastery_scale", settings.mastery_scale),
                max_future_seconds=settings.max_future_seconds,
                max_replay_answers=settings.max_replay_answers,
            )
            session.commit()
            break
        except IntegrityError:
            # a concurrent request stored the same event id (or created the same learner)
            # first: start again, and the replay check will see it
            session.rollback()
            if attempt == RETRIES - 1:
                raise HTTPException(
                    status.HTTP_409_CONFLICT, "concurrent conflicting writes; retry"
                ) from None
            org = session.get(service.Organisation, org_id)
        except Exception:
            session.rollback()
            raise
    if any(not r["replayed"] for r in results):
        response.status_code = status.HTTP_201_CREATED
    if single:
        return AnswerResult.model_validate(results[0])
    return AnswerBatchResult(results=[AnswerResult.model_validate(r) for r in results])
