"""``/xapi/statements``: the subset of an xAPI 1.0.3 learning record store that answers need.

Statements are stored as received (immutable, xAPI 1.0.3 Data §2.3.1); answer statements
(see :mod:`tutor.xapi` for the mapping, the file loader's) are also recorded as answers, in the
same transaction. Not supported: voiding (a ``voided`` statement is stored like any other and
voids nothing), attachments, the document resources, HEAD, the ``activity``, ``registration``,
``related_*`` and ``format`` query parameters, and the alternate request syntax.

Every request needs ``X-Experience-API-Version: 1.0.x`` (Communication §3.3); every response
carries ``X-Experience-API-Version: 1.0.3`` and ``X-Experience-API-Consistent-Through``. Errors
are JSON ``{"detail": ...}``; a request that does not validate is a 400, as the spec asks.

Keys: admin and ingest keys write; admin, teacher (the learners of its groups) and learner
(itself) keys read. A statement is visible to a teacher or learner key through its actor's
learner, so statements of actors that are no learner of the organisation are visible to admin
keys only.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from .. import service
from .. import xapi as mapping
from ..db import GroupMembership, Interaction, Learner, Organisation, XAPIStatement
from ..security import Principal
from ..settings import Settings, evidence_rule
from .deps import (
    View,
    ViewDep,
    commit_with_retries,
    detail_response,
    limit_batch,
    require_roles,
    validation_errors,
)
from .schemas import unstorable_text

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
VERSION_HEADER = "X-Experience-API-Version"
_VERSION_RE = re.compile(r"^1\.0(\.\d+)?$")


def _now_iso() -> str:
    return service.utcnow().isoformat().replace("+00:00", "Z")


class XAPIRoute(APIRoute):
    """Checks the version header before anything else, answers every error as JSON with the
    xAPI headers, and turns request validation errors into 400 (xAPI 1.0.3 Communication
    §3.2: a malformed request is a 400)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            version = request.headers.get(VERSION_HEADER)
            if version is None:
                response: Response = detail_response(
                    400, f"the {VERSION_HEADER} header is required (1.0.x; this LRS is 1.0.3)"
                )
            elif not _VERSION_RE.match(version.strip()):
                response = detail_response(
                    400, f"{VERSION_HEADER} {version!r} is not supported (1.0.x; this LRS is 1.0.3)"
                )
            else:
                try:
                    response = await handler(request)
                except HTTPException as exc:
                    response = detail_response(exc.status_code, exc.detail, exc.headers)
                except service.ServiceError as exc:
                    response = detail_response(400 if exc.status == 422 else exc.status, exc.detail)
                except RequestValidationError as exc:
                    response = detail_response(400, validation_errors(exc))
            response.headers[VERSION_HEADER] = mapping.VERSION
            response.headers["X-Experience-API-Consistent-Through"] = _now_iso()
            return response

        return route


router = APIRouter(prefix="/xapi", tags=["xapi"], route_class=XAPIRoute)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (RFC 8259)")


def strict_json(raw: str | bytes, what: str) -> Any:
    """JSON as RFC 8259 defines it: ``NaN`` and ``Infinity`` refused (a score of NaN would be
    stored and break every later read), nesting bounded by the parser (a RecursionError is a
    400 too), and no NUL character or lone UTF-16 surrogate in any key or string (no IRI, id
    or text of a statement may hold one; no database can store either). HTTP 400 naming
    ``what`` otherwise."""
    try:
        doc = json.loads(raw, parse_constant=_reject_constant)
        if unstorable_text(doc) is not None:
            raise ValueError("a string holds a NUL character or a lone UTF-16 surrogate")
        return doc
    except RecursionError:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{what}: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"{what}: not JSON ({str(exc)[:200]})"
        ) from None


async def _json_body(request: Request) -> Any:
    return strict_json(await request.body(), "the body")


JsonBody = Annotated[Any, Depends(_json_body)]


def _body_doc(description: str) -> dict[str, Any]:
    """The request body in the OpenAPI document (it is read raw, to answer bad JSON with 400)."""
    schema = {"type": "object", "description": "An xAPI 1.0.3 statement"}
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
    }


# ---------------------------------------------------------------------- writing
def _prepare(raw: list[Any]) -> list[tuple[dict[str, Any], mapping.XAPIAnswer | None]]:
    """Validate and map every statement (ids assigned), before the database is touched."""
    out = []
    seen: dict[str, int] = {}
    for k, st in enumerate(raw):
        try:
            st = mapping.validate_statement(st)
            st.pop("stored", None)  # the LRS sets it (Data §2.4.8)
            stored_by_client = raw[k].get("stored")
            if "id" not in st:
                st["id"] = mapping.new_statement_id()
            if st["id"] in seen:
                raise mapping.StatementError(
                    "id", f"{st['id']} is also the id of statement {seen[st['id']]}"
                )
            seen[st["id"]] = k
            # the loader falls back on the statement's own 'stored' for an answer's time
            answer = mapping.statement_to_answer({**st, "stored": stored_by_client})
        except mapping.StatementError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"statement {k}: {exc}") from None
        out.append((st, answer))
    return out


def _store(view: View, prepared: list[tuple[dict[str, Any], mapping.XAPIAnswer | None]]) -> None:
    """Store the statements and record their answers in one transaction (committed here)."""
    session, org_id = view.session, view.org.id
    # a concurrent request that stored the same statement (or answer, or learner) first is
    # seen by the next attempt's comparison with what is stored
    commit_with_retries(
        session,
        lambda _: _store_once(
            session,
            org=session.get(Organisation, org_id),
            settings=view.settings,
            prepared=prepared,
        ),
    )


def _store_once(
    session: Session,
    *,
    org: Organisation,
    settings: Settings,
    prepared: list[tuple[dict[str, Any], mapping.XAPIAnswer | None]],
) -> None:
    ids = [st["id"] for st, _ in prepared]
    stored = {
        row.statement_id: row
        for row in session.scalars(
            select(XAPIStatement).where(
                XAPIStatement.org_id == org.id, XAPIStatement.statement_id.in_(ids)
            )
        )
    }
    fresh = []
    for k, (st, answer) in enumerate(prepared):
        row = stored.get(st["id"])
        if row is None:
            fresh.append((st, answer))
        elif not mapping.same_statement(row.statement, st):
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"statement {k}: id {st['id']} is already stored with different content",
            )
    if not fresh:
        return
    now = service.utcnow()
    answers = [
        service.AnswerIn(
            event_id=a.event_id,
            learner_id=a.learner_id,
            item_id=a.item_id,
            correct=a.correct,
            timestamp=a.timestamp or now,
            elapsed_ms=a.elapsed_ms,
            source="xapi",
        )
        for _, a in fresh
        if a is not None
    ]
    if answers:
        service.record_answers(
            session,
            org=org,
            answers=answers,
            auto_create_learners=settings.auto_create_learners,
            auto_create_items=settings.auto_create_items,
            rule=evidence_rule(org.settings, settings),
            max_future_seconds=settings.max_future_seconds,
            max_replay_answers=settings.max_replay_answers,
        )
    actors = {st["id"]: mapping.actor_id(st["actor"]) for st, _ in fresh}
    learners = dict(
        session.execute(
            select(Learner.external_id, Learner.id).where(
                Learner.org_id == org.id, Learner.external_id.in_(set(actors.values()))
            )
        ).all()
    )
    # an answer statement's interaction: its event id for its own learner (event ids are
    # unique per learner; this reads the (learner, event id) unique index)
    interactions = (
        {
            (lid, ev): iid
            for lid, ev, iid in session.execute(
                select(Interaction.learner_id, Interaction.event_id, Interaction.id).where(
                    Interaction.learner_id.in_(set(learners.values())),
                    Interaction.event_id.in_([a.event_id for a in answers]),
                )
            )
        }
        if answers and learners
        else {}
    )
    for st, _ in fresh:
        session.add(
            XAPIStatement(
                org_id=org.id,
                statement_id=st["id"],
                statement=st,
                learner_id=learners.get(actors[st["id"]]),
                interaction_id=interactions.get((learners.get(actors[st["id"]]), st["id"])),
                verb=st["verb"]["id"],
                stored=now,
            )
        )
    session.flush()


@router.post(
    "/statements",
    responses={
        200: {"description": "The statement ids, in the order of the request"},
        400: {"description": "Invalid statement (the detail names its index and field)"},
        404: {"description": "An answer's learner or item is unknown (no auto-creation)"},
        409: {"description": "A statement id already stored with different content"},
    },
    openapi_extra=_body_doc("One statement or an array of statements"),
)
def post_statements(body: JsonBody, view: ViewDep) -> JSONResponse:
    """Store one statement or an array of them (xAPI 1.0.3 Communication §2.1.2 POST
    Statements); returns the array of their ids, in order.

    Statements without an id get one. The request is one transaction: a statement whose id is
    already stored with equal content (compared as Data §2.3.1 asks, ignoring stored,
    authority and version) changes nothing; with different content the request is a 409 and
    nothing of it is stored. Answer statements are recorded as answers (event id = statement
    id), unknown learners and items as the settings ``auto_create_learners`` /
    ``auto_create_items`` say (404 otherwise).
    """
    require_roles(view.principal, "admin", "ingest")
    if isinstance(body, dict):
        raw = [body]
    elif isinstance(body, list):
        raw = body
    else:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, "expected a statement or an array of statements"
        )
    limit_batch(len(raw), "statements", view.settings)
    prepared = _prepare(raw)
    _store(view, prepared)
    return JSONResponse([st["id"] for st, _ in prepared])


@router.put(
    "/statements",
    status_code=204,
    responses={
        204: {"description": "Stored (or already stored with equal content)"},
        400: {"description": "Invalid statement, or its id is not the statementId"},
        409: {"description": "The statement id is already stored with different content"},
    },
    openapi_extra=_body_doc("One statement"),
)
def put_statement(
    body: JsonBody,
    view: ViewDep,
    statement_id: Annotated[str, Query(alias="statementId")],
) -> Response:
    """Store one statement under ``statementId`` (xAPI 1.0.3 Communication §2.1.1 PUT
    Statements): 204; the same replay and conflict rules as POST."""
    require_roles(view.principal, "admin", "ingest")
    if not mapping.is_uuid(statement_id):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"statementId {statement_id!r}: not a UUID"
        )
    if not isinstance(body, dict):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "expected one statement (a JSON object)")
    body_id = body.get("id")
    if body_id is not None and (
        not isinstance(body_id, str) or body_id.lower() != statement_id.lower()
    ):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"statement 0: id: {body_id!r} is not the statementId {statement_id!r}",
        )
    _store(view, _prepare([{**body, "id": statement_id}]))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---------------------------------------------------------------------- reading
def _visible(q: Select, principal: Principal) -> Select:
    if principal.role == "learner":
        return q.where(XAPIStatement.learner_id == principal.learner_id)
    if principal.role == "teacher":
        return q.where(
            XAPIStatement.learner_id.in_(
                select(GroupMembership.learner_id).where(
                    GroupMembership.group_id.in_(principal.group_ids)
                )
            )
        )
    return q


def _out(row: XAPIStatement) -> dict[str, Any]:
    """The statement as the LRS returns it: with id, stored, version and timestamp set."""
    st = dict(row.statement)
    st["id"] = row.statement_id
    stored = service.as_utc(row.stored).isoformat().replace("+00:00", "Z")
    st["stored"] = stored
    st.setdefault("version", "1.0.0")  # Data §2.4.10
    if st.get("timestamp") is None:
        st["timestamp"] = stored  # Data §2.4.7
    return st


def _parse_time(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        at = mapping.parse_instant(value)
        if not (service.TIME_MIN <= at <= service.TIME_MAX):
            raise ValueError("out of range")
        return at
    except (ValueError, TypeError, OverflowError):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"{name}: {value!r} is not an ISO 8601 timestamp"
        ) from None


def _encode_cursor(row: XAPIStatement) -> str:
    raw = f"{service.as_utc(row.stored).isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, rid = raw.partition("|")
        at, row = datetime.fromisoformat(when), int(rid)
        if at.tzinfo is None or not (service.TIME_MIN <= at <= service.TIME_MAX):
            raise ValueError("cursor time out of range")
        if not 0 < row < 2**63:
            raise ValueError("cursor id out of range")
        return service.as_utc(at), row
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, "cursor: not a cursor of this LRS"
        ) from None


@router.get(
    "/statements",
    responses={
        200: {"description": "One statement (statementId) or a StatementResult"},
        400: {"description": "Invalid parameters"},
        404: {"description": "No such statement visible to this key (or voidedStatementId)"},
    },
)
def get_statements(
    view: ViewDep,
    statement_id: Annotated[str | None, Query(alias="statementId")] = None,
    voided_statement_id: Annotated[str | None, Query(alias="voidedStatementId")] = None,
    agent: Annotated[str | None, Query(description="Agent JSON; matched on the actor")] = None,
    verb: Annotated[str | None, Query(description="Verb IRI")] = None,
    since: Annotated[str | None, Query(description="Stored after (ISO 8601)")] = None,
    until: Annotated[str | None, Query(description="Stored at or before (ISO 8601)")] = None,
    limit: Annotated[
        int, Query(ge=0, description=f"0 or more than {MAX_LIMIT}: {MAX_LIMIT}")
    ] = DEFAULT_LIMIT,
    ascending: bool = False,
    cursor: Annotated[str | None, Query(description="From a StatementResult's 'more'")] = None,
) -> JSONResponse:
    """One statement, or a page of them (xAPI 1.0.3 Communication §2.1.3 GET Statements).

    ``statementId``: that statement (404 when absent or not visible to the key).
    ``voidedStatementId``: always 404, as voiding is not supported (Communication §2.1.4: no
    statement is ever voided here). Otherwise a StatementResult (Data §2.5)
    ``{"statements": [...], "more": "<IRL of the next page, or empty>"}`` of the visible
    statements, newest stored first (``ascending=true``: oldest first), filtered by ``agent``
    (the actor, identified as the file loader identifies actors: an Agent or identified Group
    as actor only, not as object), ``verb`` (the IRI), ``since`` (stored after, exclusive) and
    ``until`` (stored at or before), at most ``limit`` (default 100, at most 500).
    """
    request, session, principal, org = view.request, view.session, view.principal, view.org
    require_roles(principal, "admin", "teacher", "learner")
    params = request.query_params
    if statement_id is not None or voided_statement_id is not None:
        if statement_id is not None and voided_statement_id is not None:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                "statementId and voidedStatementId cannot be used together",
            )
        extra = sorted(set(params) - {"statementId", "voidedStatementId", "format", "attachments"})
        if extra:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                f"statementId / voidedStatementId take no other parameters (got {extra})",
            )
        wanted = statement_id if statement_id is not None else voided_statement_id
        if not mapping.is_uuid(wanted):
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{wanted!r}: not a UUID")
        if voided_statement_id is not None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                "no voided statement: this LRS does not support voiding",
            )
        row = session.scalar(
            _visible(
                select(XAPIStatement).where(
                    XAPIStatement.org_id == org.id,
                    XAPIStatement.statement_id == wanted.lower(),
                ),
                principal,
            )
        )
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"statement {wanted} not found")
        return JSONResponse(_out(row))

    limit = MAX_LIMIT if limit == 0 or limit > MAX_LIMIT else limit
    q = _visible(select(XAPIStatement).where(XAPIStatement.org_id == org.id), principal)
    want_actor: str | None = None
    if agent is not None:
        agent_obj = strict_json(agent, "agent")
        want_actor = mapping.actor_id(agent_obj)
        if want_actor is None:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST, "agent: not an Agent or identified Group"
            )
        learner_id = session.scalar(
            select(Learner.id).where(Learner.org_id == org.id, Learner.external_id == want_actor)
        )
        # a statement's learner is its actor's; statements of actors that were no learner
        # when stored have none, and are matched on their actor below
        cond = XAPIStatement.learner_id.is_(None)
        if learner_id is not None:
            cond = or_(XAPIStatement.learner_id == learner_id, cond)
        q = q.where(cond)
    if verb is not None:
        q = q.where(XAPIStatement.verb == verb)
    t_since, t_until = _parse_time("since", since), _parse_time("until", until)
    if t_since is not None:
        q = q.where(XAPIStatement.stored > t_since)
    if t_until is not None:
        q = q.where(XAPIStatement.stored <= t_until)
    if ascending:
        q = q.order_by(XAPIStatement.stored, XAPIStatement.id)
    else:
        q = q.order_by(XAPIStatement.stored.desc(), XAPIStatement.id.desc())

    def after(pos: tuple[datetime, int]) -> Any:
        s, i = pos
        if ascending:
            return or_(
                XAPIStatement.stored > s, and_(XAPIStatement.stored == s, XAPIStatement.id > i)
            )
        return or_(XAPIStatement.stored < s, and_(XAPIStatement.stored == s, XAPIStatement.id < i))

    pos = _decode_cursor(cursor) if cursor is not None else None
    chunk = limit + 1 if want_actor is None else max(limit + 1, 200)
    rows: list[XAPIStatement] = []
    while len(rows) <= limit:
        page = session.scalars((q if pos is None else q.where(after(pos))).limit(chunk)).all()
        for row in page:
            pos = (row.stored, row.id)
            if want_actor is None or mapping.actor_id(row.statement.get("actor")) == want_actor:
                rows.append(row)
                if len(rows) > limit:
                    break
        if len(page) < chunk:
            break
    more = ""
    if len(rows) > limit:
        rows = rows[:limit]
        query = [(k, v) for k, v in params.multi_items() if k != "cursor"]
        query.append(("cursor", _encode_cursor(rows[-1])))
        more = f"{request.url.path}?{urlencode(query)}"
    return JSONResponse({"statements": [_out(r) for r in rows], "more": more})
