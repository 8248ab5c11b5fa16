"""The service's domain logic: answers in, learner states, mastery, history.

Functions take keyword arguments and a SQLAlchemy session whose transaction the caller owns
(the API commits once per request, so an answer is stored and applied together or not at
all). Nothing here knows about HTTP; errors are :class:`ServiceError` subclasses that the API
turns into 404 / 409 / 422.

Learner states are updated incrementally: an answer later than everything the state holds
(in event order: timestamp, then event id) costs one ``step``. An answer that arrives late
(an earlier timestamp than one already applied), a learner's first request after a model
swap, or a state that folded fewer answers than stored is rebuilt by replaying the learner's
history in event order, so the result never depends on arrival order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .db import (
    Concept,
    Interaction,
    Item,
    ItemConcept,
    Learner,
    LearnerState,
    ModelVersion,
    Organisation,
)
from .runtime import LoadedModel, ModelCache


class ServiceError(Exception):
    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class Invalid(ServiceError):
    status = 422


def as_utc(dt: datetime | None) -> datetime | None:
    """Datetimes read back from SQLite are naive; all of ours are UTC."""
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


MODELS = ModelCache()


# ---------------------------------------------------------------------- lookups
def get_learner(session: Session, *, org_id: int, external_id: str, lock: bool = False) -> Learner:
    q = select(Learner).where(Learner.org_id == org_id, Learner.external_id == external_id)
    if lock:
        q = q.with_for_update()
    learner = session.scalar(q)
    if learner is None:
        raise NotFound(f"learner {external_id!r} not found")
    return learner


def get_item(session: Session, *, org_id: int, external_id: str) -> Item:
    item = session.scalar(
        select(Item).where(Item.org_id == org_id, Item.external_id == external_id)
    )
    if item is None:
        raise NotFound(f"item {external_id!r} not found")
    return item


def active_model(session: Session, *, org: Organisation) -> LoadedModel | None:
    if org.active_model_id is None:
        return None
    mid = org.active_model_id

    def load() -> bytes:
        blob = session.scalar(select(ModelVersion.checkpoint).where(ModelVersion.id == mid))
        if blob is None:
            raise NotFound(f"model {mid} not found")
        return blob

    return MODELS.get(mid, load, scope=db_scope(session))


def db_scope(session: Session) -> str:
    """The database a session talks to, as a cache scope."""
    return session.get_bind().url.render_as_string(hide_password=True)


# ---------------------------------------------------------------------- states
def _history(session: Session, learner_id: int) -> list[tuple[str, int, datetime, str]]:
    rows = session.execute(
        select(Item.external_id, Interaction.correct, Interaction.timestamp, Interaction.event_id)
        .join(Item, Item.id == Interaction.item_id)
        .where(Interaction.learner_id == learner_id)
        .order_by(Interaction.timestamp, Interaction.event_id)
    ).all()
    return [(r[0], int(r[1]), as_utc(r[2]), r[3]) for r in rows]


def rebuild_state(
    session: Session, *, learner: Learner, model: LoadedModel
) -> tuple[Any, LearnerState]:
    """Replay the learner's whole history through the model (rare path, see module doc)."""
    hist = _history(session, learner.id)
    first = as_utc(learner.first_seen)
    if hist and (first is None or hist[0][2] < first):
        first = learner.first_seen = hist[0][2]
    state = model.model.init_state(1)
    if hist:
        items = model.item_idx([h[0] for h in hist]).tolist()
        times = [model.time_value(h[2], first, k) for k, h in enumerate(hist)]
        state = model.step_many(state, items, [h[1] for h in hist], times)
    row = session.get(LearnerState, (learner.id, model.model_id))
    if row is None:
        row = LearnerState(learner_id=learner.id, model_id=model.model_id, state=b"")
        session.add(row)
    row.state = model.encode(state)
    row.n_applied = len(hist)
    row.last_timestamp = hist[-1][2] if hist else None
    row.last_event_id = hist[-1][3] if hist else None
    learner.n_answers = len(hist)
    session.info.setdefault("rebuilt", []).append(row)
    return state, row


def keep_rebuilt_states(session: Session) -> None:
    """End a read request: keep the states it had to rebuild.

    On PostgreSQL the request's transaction simply commits. A SQLite read runs in a read
    transaction (it never waits for writers) that cannot write, so the rebuilt states are
    written afterwards in a short write transaction of their own, each only if the learner
    has not answered meanwhile; if the database is busy they are rebuilt again next time.
    """
    rebuilt = session.info.pop("rebuilt", [])
    if session.get_bind().dialect.name != "sqlite":
        session.commit()
        return
    snap = [
        (r.learner_id, r.model_id, r.state, r.n_applied, r.last_timestamp, r.last_event_id)
        for r in rebuilt
    ]
    session.rollback()
    factory = session.info.get("write_factory")
    if not snap or factory is None:
        return
    from sqlalchemy.exc import OperationalError

    try:
        with factory() as w, w.begin():
            for lid, mid, blob, n, ts, ev in snap:
                learner = w.get(Learner, lid)
                if learner is None or learner.n_answers != n:
                    continue
                row = w.get(LearnerState, (lid, mid))
                if row is None:
                    row = LearnerState(learner_id=lid, model_id=mid, state=blob)
                    w.add(row)
                row.state, row.n_applied, row.last_timestamp, row.last_event_id = blob, n, ts, ev
    except OperationalError:
        pass


def current_state(
    session: Session, *, learner: Learner, model: LoadedModel
) -> tuple[Any, LearnerState]:
    """The learner's up-to-date state for ``model`` (rebuilt if missing or stale)."""
    row = session.get(LearnerState, (learner.id, model.model_id))
    if row is None or row.n_applied != learner.n_answers:
        return rebuild_state(session, learner=learner, model=model)
    return model.decode(row.state), row


# ---------------------------------------------------------------------- answers
@dataclass
class AnswerIn:
    event_id: str
    learner_id: str
    item_id: str
    correct: int
    timestamp: datetime | None = None
    elapsed_ms: int | None = None
    attempt: int | None = None
    source: str = "api"


@dataclass
class Catalogue:
    """What recommendation and mastery need about an organisation's items and concepts."""

    version: int
    item_db_ids: np.ndarray
    item_ext: list[str]
    item_concepts: list[list[int]]  # concept db ids per item
    concept_db_ids: np.ndarray
    concept_ext: list[str]
    concept_names: list[str]
    prerequisites: list[tuple[int, int]]  # (prerequisite db id, concept db id)
    by_model: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)


def _touched_concepts(session: Session, item: Item) -> list[Concept]:
    return list(item.concepts)


def mastery_of(
    model: LoadedModel, state: Any, concepts: list[Concept], at_time: float | None = None
) -> list[dict[str, Any]]:
    m = model.concept_mastery(state, at_time)
    out = []
    for c in concepts:
        idx = _model_concept_index(model, c.external_id)
        out.append(
            {
                "concept_id": c.external_id,
                "name": c.name,
                "mastery": None if idx is None else round(float(m[idx]), 6),
            }
        )
    return out


def _model_concept_index(model: LoadedModel, concept_ext: str) -> int | None:
    idx = getattr(model, "_concept_pos", None)
    if idx is None:
        idx = {c: i + 1 for i, c in enumerate(model.concept_ids)}
        model._concept_pos = idx  # type: ignore[attr-defined]
    return idx.get(concept_ext)


def _same(inter: Interaction, ans: AnswerIn, learner_ext: str, item_ext: str) -> bool:
    if learner_ext != ans.learner_id or item_ext != ans.item_id:
        return False
    if int(inter.correct) != int(ans.correct):
        return False
    return ans.timestamp is None or as_utc(inter.timestamp) == as_utc(ans.timestamp)


def record_answers(
    session: Session,
    *,
    org: Organisation,
    answers: list[AnswerIn],
    auto_create_learners: bool = False,
    auto_create_items: bool = False,
    allowed_learner: str | None = None,
) -> list[dict[str, Any]]:
    """Store and apply answers (idempotent by event id); results in the input order.

    ``allowed_learner`` restricts every answer to one learner (a learner's own key): others
    are reported as not found.
    """
    results: list[dict[str, Any] | None] = [None] * len(answers)
    model = active_model(session, org=org)
    # 1. replays: event ids already stored
    ids = [a.event_id for a in answers]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise Invalid(f"event id {dup!r} appears twice in the request")
    stored = {
        r.Interaction.event_id: r
        for r in session.execute(
            select(Interaction, Learner.external_id, Item.external_id)
            .join(Learner, Learner.id == Interaction.learner_id)
            .join(Item, Item.id == Interaction.item_id)
            .where(Interaction.org_id == org.id, Interaction.event_id.in_(ids))
        )
    }
    fresh: dict[str, list[tuple[int, AnswerIn]]] = {}
    for k, a in enumerate(answers):
        if allowed_learner is not None and a.learner_id != allowed_learner:
            raise NotFound(f"learner {a.learner_id!r} not found")
        if a.event_id in stored:
            inter, l_ext, i_ext = stored[a.event_id]
            if not _same(inter, a, l_ext, i_ext):
                raise Conflict(
                    f"event id {a.event_id!r} was already recorded with different content "
                    f"(learner {l_ext!r}, item {i_ext!r}, correct {inter.correct})"
                )
            base = inter.response or {  # answers stored by a bulk import have no response
                "event_id": inter.event_id,
                "learner_id": l_ext,
                "item_id": i_ext,
                "correct": int(inter.correct),
                "timestamp": as_utc(inter.timestamp).isoformat(),
                "model": None,
                "mastery": [],
            }
            results[k] = {**base, "replayed": True}
        else:
            fresh.setdefault(a.learner_id, []).append((k, a))
    if not fresh:
        return results  # type: ignore[return-value]

    # 2. items (one query), then learner by learner (each locked) in event order
    item_ids = sorted({a.item_id for group in fresh.values() for _, a in group})
    items = {
        i.external_id: i
        for i in session.scalars(
            select(Item).where(Item.org_id == org.id, Item.external_id.in_(item_ids))
        )
    }
    for iid in item_ids:
        if iid not in items:
            if not auto_create_items:
                raise NotFound(f"item {iid!r} not found")
            items[iid] = Item(org_id=org.id, external_id=iid, meta={})
            session.add(items[iid])
            org.bump_catalogue()
    session.flush()
    now = utcnow()
    for learner_ext in sorted(fresh):
        group = fresh[learner_ext]
        try:
            learner = get_learner(session, org_id=org.id, external_id=learner_ext, lock=True)
        except NotFound:
            if not auto_create_learners:
                raise
            learner = Learner(org_id=org.id, external_id=learner_ext, n_answers=0)
            session.add(learner)
            session.flush()
        for _, a in group:
            if a.timestamp is None:
                a.timestamp = now
            a.timestamp = as_utc(a.timestamp)
        group.sort(key=lambda ka: (ka[1].timestamp, ka[1].event_id))
        _apply_learner(
            session,
            org=org,
            learner=learner,
            group=group,
            items=items,
            model=model,
            results=results,
        )
    return results  # type: ignore[return-value]


def _apply_learner(
    session: Session,
    *,
    org: Organisation,
    learner: Learner,
    group: list[tuple[int, AnswerIn]],
    items: dict[str, Item],
    model: LoadedModel | None,
    results: list[dict[str, Any] | None],
) -> None:
    state, row = (None, None)
    if model is not None:
        state, row = current_state(session, learner=learner, model=model)
    for k, a in group:
        item = items[a.item_id]
        inter = Interaction(
            org_id=org.id,
            learner_id=learner.id,
            item_id=item.id,
            event_id=a.event_id,
            correct=int(a.correct),
            timestamp=a.timestamp,
            elapsed_ms=a.elapsed_ms,
            attempt=a.attempt,
            source=a.source,
        )
        session.add(inter)
        first = as_utc(learner.first_seen)
        n_before = learner.n_answers
        learner.n_answers = n_before + 1
        late = (
            row is not None
            and row.last_timestamp is not None
            and (a.timestamp, a.event_id) < (as_utc(row.last_timestamp), row.last_event_id or "")
        )
        if first is None or a.timestamp < first:
            late = late or first is not None
            learner.first_seen = a.timestamp
        mastery: list[dict[str, Any]] = []
        if model is not None:
            if late:
                session.flush()
                state, row = rebuild_state(session, learner=learner, model=model)
            else:
                t = model.time_value(a.timestamp, as_utc(learner.first_seen), n_before)
                idx = model.item_idx([a.item_id]).tolist()
                state = model.step_many(state, idx, [int(a.correct)], [t])
                row.state = model.encode(state)
                row.n_applied = learner.n_answers
                row.last_timestamp = a.timestamp
                row.last_event_id = a.event_id
            mastery = mastery_of(model, state, _touched_concepts(session, item))
        response = {
            "event_id": a.event_id,
            "learner_id": learner.external_id,
            "item_id": item.external_id,
            "correct": int(a.correct),
            "timestamp": a.timestamp.isoformat(),
            "model": None if model is None else {"id": model.model_id, "name": model.name},
            "mastery": mastery,
            "replayed": False,
        }
        inter.response = response
        results[k] = response
    session.flush()


# ---------------------------------------------------------------------- reading
def learner_mastery(
    session: Session, *, org: Organisation, learner: Learner, at: datetime | None = None
) -> dict[str, Any]:
    model = active_model(session, org=org)
    concepts = list(
        session.scalars(
            select(Concept).where(Concept.org_id == org.id).order_by(Concept.external_id)
        )
    )
    if model is None:
        raise NotFound("no active model for this organisation")
    state, _ = current_state(session, learner=learner, model=model)
    at_time = None
    if at is not None and model.forgets and learner.first_seen is not None:
        at_time = model.time_value(as_utc(at), as_utc(learner.first_seen), learner.n_answers)
    return {
        "learner_id": learner.external_id,
        "model": {"id": model.model_id, "name": model.name, "forgets": model.forgets},
        "at": at.isoformat() if at is not None else None,
        "n_answers": learner.n_answers,
        "concepts": mastery_of(model, state, concepts, at_time),
    }


def learner_history(
    session: Session, *, learner: Learner, limit: int = 100, offset: int = 0
) -> dict[str, Any]:
    rows = session.execute(
        select(Interaction, Item.external_id)
        .join(Item, Item.id == Interaction.item_id)
        .where(Interaction.learner_id == learner.id)
        .order_by(Interaction.timestamp, Interaction.event_id)
        .limit(limit)
        .offset(offset)
    ).all()
    total = session.scalar(
        select(func.count()).select_from(Interaction).where(Interaction.learner_id == learner.id)
    )
    return {
        "learner_id": learner.external_id,
        "total": int(total or 0),
        "offset": offset,
        "answers": [
            {
                "event_id": r.Interaction.event_id,
                "item_id": r[1],
                "correct": int(r.Interaction.correct),
                "timestamp": as_utc(r.Interaction.timestamp).isoformat(),
                "elapsed_ms": r.Interaction.elapsed_ms,
                "attempt": r.Interaction.attempt,
                "source": r.Interaction.source,
            }
            for r in rows
        ],
    }


def item_concept_ids(session: Session, item_ids: list[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for iid, cid in session.execute(
        select(ItemConcept.item_id, ItemConcept.concept_id).where(ItemConcept.item_id.in_(item_ids))
    ):
        out.setdefault(iid, []).append(cid)
    return out
