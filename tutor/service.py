"""The service's domain logic: answers in, learner states, mastery, history.

Functions take keyword arguments and a SQLAlchemy session whose transaction the caller owns
(the API commits once per request, so an answer is stored and applied together or not at
all). Nothing here knows about HTTP; errors are :class:`~tutor.errors.ServiceError`
subclasses (:mod:`tutor.errors`) that the API turns into 404 / 409 / 413 / 422.

Learner states are updated incrementally: an answer later than everything the state holds
(in event order: timestamp, then event id) costs one ``step``. An answer that arrives late
(an earlier timestamp than one already applied), a learner's first request after a model
swap, or a state that folded fewer answers than stored is rebuilt by replaying the learner's
history in event order, so the result never depends on arrival order.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Select, Table, Update, bindparam, func, insert, inspect, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from . import evidence as evidence_mod
from .answer import Answer
from .blocking import may_block
from .catalogue import ConceptRef, ItemRef, catalogue, item_refs
from .clock import as_utc, utcnow
from .db import (
    Interaction,
    Item,
    Learner,
    LearnerState,
    ModelVersion,
    Organisation,
    db_scope,
    driver,
)
from .errors import Conflict, Invalid, NotFound, TooLarge
from .errors import ServiceError as ServiceError  # the errors' base, for this module's callers
from .evidence import Evidence, EvidenceRule
from .runtime import LoadedModel, ModelCache, stack_states
from .settings import Settings, evidence_rule, org_setting
from .states import (
    LOADED_STATES,
    current_state,
    first_answer_priors,
    rebuild_state,
    remember_state,
)

#: the times answers may carry (as the API's schemas: tutor.api.schemas.TIME_MIN/MAX)
TIME_MIN = datetime(1970, 1, 1, tzinfo=UTC)
TIME_MAX = datetime(2200, 1, 1, tzinfo=UTC)


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

    def load() -> tuple[bytes, dict | None]:
        row = session.execute(
            select(ModelVersion.checkpoint, ModelVersion.info).where(ModelVersion.id == mid)
        ).first()
        if row is None or row[0] is None:
            raise NotFound(f"model {mid} not found")
        return row[0], (row[1] or {}).get("mapping")

    return MODELS.get(mid, load, scope=db_scope(session))


# ---------------------------------------------------------------------- answers
@dataclass
class AnswerIn(Answer):
    """An answer as the answer path takes it: with the attempt and the way it came in."""

    attempt: int | None = None
    source: str = "api"


def mastery_of(
    model: LoadedModel,
    state: Any,
    concepts: Sequence[ConceptRef],
    *,
    evidence: Evidence,
    rule: EvidenceRule,
    any_answers: bool,
    at_time: float | None = None,
    scale: str = "reachable",
    success: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Each concept's status and reported mastery (:mod:`tutor.evidence`): the evidence
    mastery where the learner has answered the concept, the model's estimate (labelled so)
    where not; with the model's estimate and mean predicted success beside it. Predicts only
    the items of ``concepts`` (nothing where ``success``, their estimates on the success
    scale, is given)."""
    pos = model.concept_positions
    ids = [c.external_id for c in concepts]
    cidx = np.fromiter((pos.get(c, 0) for c in ids), dtype=np.int64, count=len(ids))
    if success is None:
        at = None if at_time is None else np.array([at_time])
        success = model.estimates(state, cidx, at, scale="success")[0]
    est = success
    if scale == "reachable" and len(cidx):
        est = model.scaled_known(success, cidx)
    # as plain floats, rounded, once (whole arrays: a catalogue has hundreds of concepts); a
    # concept the model does not know has none
    est_r = np.round(np.asarray(est, dtype=np.float64), 6).tolist()
    succ_r = np.round(np.asarray(success, dtype=np.float64), 6).tolist()
    for k in np.flatnonzero(cidx == 0).tolist():
        est_r[k] = succ_r[k] = None
    # a concept without own answers reads the same status and basis as every other such
    none_status = evidence_mod.status(None, rule, any_answers=any_answers)
    none_basis = evidence_mod.basis(None, rule, any_answers=any_answers)
    out = [
        {
            "concept_id": cid,
            "name": c.name,
            "status": none_status,
            "answers": 0,
            "correct": 0,
            "mastery": e_r,
            "estimate": e_r,
            "predicted_success": s_r,
            "basis": none_basis,
        }
        for cid, c, e_r, s_r in zip(ids, concepts, est_r, succ_r, strict=True)
    ]
    if evidence:
        for row in out:
            e = evidence.get(row["concept_id"])
            if e is not None and e.n > 0:
                row["status"] = evidence_mod.status(e, rule, any_answers=any_answers)
                row["basis"] = evidence_mod.basis(e, rule, any_answers=any_answers)
                row["answers"], row["correct"] = e.n, e.n_correct
                row["mastery"] = round(float(e.p), 6)
    return out


def _same(inter: Interaction, ans: AnswerIn, learner_ext: str, item_ext: str) -> bool:
    if learner_ext != ans.learner_id or item_ext != ans.item_id:
        return False
    if int(inter.correct) != int(ans.correct):
        return False
    # what the client sent must equal what is stored (a field it left out is no difference)
    if ans.elapsed_ms is not None and inter.elapsed_ms != ans.elapsed_ms:
        return False
    if ans.attempt is not None and inter.attempt != ans.attempt:
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
    rule: EvidenceRule | None = None,
    scale: str | None = None,
    defaults: Settings | None = None,
    max_future_seconds: float | None = None,
    max_replay_answers: int | None = None,
) -> list[dict[str, Any]]:
    """Store and apply answers (idempotent by event id); results in the input order.
    Answers timed more than ``max_future_seconds`` after now are refused (:class:`Invalid`):
    a far-future answer would make every later answer of its learner a late one, replaying
    the whole history. A request whose late answers would replay more than
    ``max_replay_answers`` stored answers in all is refused (:class:`TooLarge`, nothing
    stored): the bound on how long one request holds the write lock.
    ``rule`` and ``scale`` are the organisation's mastery criterion and estimate scale (for
    the statuses in the responses); where not given, the organisation's settings over
    ``defaults`` (read from its row once the locking statement has loaded it), else
    :class:`tutor.evidence.EvidenceRule` and the reachable scale.

    One statement locks the answers' learners and loads, with them, the organisation's row,
    their states for its active model and any answers already stored under the request's
    event ids (the replays); then the new answers are written (:class:`_Writes`).

    ``allowed_learner`` restricts every answer to one learner (a learner's own key): others
    are reported as not found.
    """
    results: list[dict[str, Any] | None] = [None] * len(answers)
    # 1. replays: event ids already stored
    ids = [a.event_id for a in answers]
    pairs = [(a.learner_id, a.event_id) for a in answers]
    if len(set(pairs)) != len(pairs):
        seen: set[tuple[str, str]] = set()
        dup = next(p for p in pairs if p in seen or seen.add(p))  # type: ignore[func-returns-value]
        raise Invalid(f"event id {dup[1]!r} appears twice in the request for learner {dup[0]!r}")
    received = utcnow()
    for a in answers:
        if allowed_learner is not None and a.learner_id != allowed_learner:
            raise NotFound(f"learner {a.learner_id!r} not found")
        if a.timestamp is not None:
            if not (TIME_MIN <= a.timestamp <= TIME_MAX):
                raise Invalid(
                    f"answer {a.event_id!r}: timestamp {a.timestamp.isoformat()} outside "
                    f"{TIME_MIN.date()} .. {TIME_MAX.date()}"
                )
            ahead = (as_utc(a.timestamp) - received).total_seconds()
            if max_future_seconds is not None and ahead > max_future_seconds:
                raise Invalid(
                    f"answer {a.event_id!r}: timestamp {as_utc(a.timestamp).isoformat()} is "
                    f"{ahead / 3600:.1f} hours in the future (at most "
                    f"{max_future_seconds / 3600:g} hours ahead of the server's clock)"
                )
    # the learners, locked, with the organisation, their states and the stored answers of
    # these event ids (event ids are unique per learner: only the answers' own learners' are
    # looked up, so a conflict can only ever describe what the caller sent for that learner)
    learners, stored = _lock_learners(
        session, org=org, external_ids=sorted({a.learner_id for a in answers}), event_ids=ids
    )
    model = active_model(session, org=org)
    if rule is None:
        rule = evidence_rule(org.settings, defaults) if defaults is not None else EvidenceRule()
    if scale is None:
        scale = org_setting(org, defaults, "mastery_scale", "reachable")
    fresh: dict[str, list[tuple[int, AnswerIn]]] = {}
    for k, a in enumerate(answers):
        if (a.learner_id, a.event_id) in stored:
            inter, l_ext, i_ext = stored[(a.learner_id, a.event_id)]
            if not _same(inter, a, l_ext, i_ext):
                raise Conflict(
                    f"event id {a.event_id!r} was already recorded for learner {l_ext!r} with "
                    f"different content (item {i_ext!r}, correct {inter.correct})"
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

    # 2. items (the cached catalogue), then learner by learner in event order
    items = item_refs(
        session,
        org=org,
        external_ids=sorted({a.item_id for group in fresh.values() for _, a in group}),
        auto_create=auto_create_items,
    )
    writes = _Writes()
    writes.replay_budget = max_replay_answers
    batch = _Batch(org, items, model, rule, scale, results, writes)
    now = utcnow()
    for learner_ext in sorted(fresh):
        group = fresh[learner_ext]
        learner = learners.get(learner_ext)
        if learner is None:
            if not auto_create_learners:
                raise NotFound(f"learner {learner_ext!r} not found")
            learner = Learner(org_id=org.id, external_id=learner_ext, n_answers=0)
            session.add(learner)
            session.flush()
        for _, a in group:
            if a.timestamp is None:
                a.timestamp = now
            a.timestamp = as_utc(a.timestamp)
        group.sort(key=lambda ka: (ka[1].timestamp, ka[1].event_id))
        _apply_learner(session, batch, learner, group)
    writes.apply(session)
    session.flush()
    return results  # type: ignore[return-value]


@functools.cache
def _lock_query(n_ext: int, n_ids: int) -> Select:
    """The answers' learners by external id (bound ``ext_0`` .. ``ext_<n_ext - 1>``), locked,
    each with its organisation's row, its state for the organisation's active model (or
    none) and its stored answers among the event ids bound as ``ids_0`` .. (a row per stored
    answer, else one with none), as plain columns (:data:`_LOCK_PARTS`, read by
    :func:`tutor.db.driver.fetch`): built once per list lengths (powers of two,
    :func:`tutor.db.driver.bucket`), bound per request.

    One parameter per value, not an array (``= ANY``): PostgreSQL plans a prepared
    statement once (its generic plan) only where that plan's estimated cost is close to
    those it made for the values; for an array of unknown length it assumes ten learners
    and planned every execution anew (0.5 ms of its CPU an answer, measured)."""
    ext_in = Learner.external_id.in_([bindparam(f"ext_{k}") for k in range(n_ext)])
    ids_in = Interaction.event_id.in_([bindparam(f"ids_{k}") for k in range(n_ids)])
    cols = [c for cls in _LOCK_PARTS for c in driver.columns_of(cls)]
    return (
        select(*cols, Item.external_id)
        .select_from(Learner)
        .join(Organisation, Organisation.id == Learner.org_id)
        .outerjoin(
            LearnerState,
            (LearnerState.learner_id == Learner.id)
            & (LearnerState.model_id == Organisation.active_model_id),
        )
        .outerjoin(Interaction, (Interaction.learner_id == Learner.id) & ids_in)
        .outerjoin(Item, Item.id == Interaction.item_id)
        .where(Learner.org_id == bindparam("org"), ext_in)
        .order_by(Learner.external_id)
        .with_for_update(of=Learner.__table__)
    )


def _lock_params(org_id: int, external_ids: list[str], event_ids: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {"org": org_id}
    for name, values in (("ext", external_ids), ("ids", event_ids)):
        # the rest NULL, which IN never matches
        padded = list(values) + [None] * (driver.bucket(len(values)) - len(values))
        params.update({f"{name}_{k}": v for k, v in enumerate(padded)})
    return params


#: the classes whose columns :func:`_lock_query` reads, in its order (then the item's
#: external id of a stored answer)
_LOCK_PARTS = (Learner, Organisation, LearnerState, Interaction)


def _lock_learners(
    session: Session, *, org: Organisation, external_ids: list[str], event_ids: list[str]
) -> tuple[dict[str, Learner], dict[tuple[str, str], tuple[Interaction, str, str]]]:
    """The learners of ``external_ids`` that exist, locked (``FOR UPDATE`` on PostgreSQL, in
    external id order so that two requests never wait on each other crosswise; SQLite holds
    the database lock since ``BEGIN IMMEDIATE``), and their stored answers among
    ``event_ids`` by (learner, event id), with the learner's and the item's external ids: one
    statement, run on the driver (:mod:`tutor.db.driver`), which also reads the
    organisation's row and the learners' states for its active model into the session (so
    neither :func:`active_model` nor :func:`current_state` needs a query)."""
    query = _lock_query(driver.bucket(len(external_ids)), driver.bucket(len(event_ids)))
    rows = driver.fetch(session, query, _lock_params(org.id, external_ids, event_ids))
    learners: dict[str, Learner] = {}
    stored: dict[tuple[str, str], tuple[Interaction, str, str]] = {}
    bounds = driver.slices(_LOCK_PARTS)
    for row in rows:
        parts = [row[part] for part in bounds]
        learner_ext = parts[0][_LEARNER_EXT]
        if learner_ext not in learners:
            learner = driver.attach(session, Learner, parts[0])
            learners[learner_ext] = learner
            org_row = driver.attach(session, Organisation, parts[1])
            if org_row.active_model_id is not None:
                state = None
                if driver.present(LearnerState, parts[2]):
                    state = driver.attach(session, LearnerState, parts[2])
                remember_state(session, learner.id, org_row.active_model_id, state)
        if driver.present(Interaction, parts[3]):
            inter = driver.attach(session, Interaction, parts[3])
            stored[(learner_ext, inter.event_id)] = (inter, learner_ext, row[-1])
    return learners, stored


#: the position of the learner's external id among its columns
_LEARNER_EXT = [c.key for c in driver.columns_of(Learner)].index("external_id")


@functools.cache
def _update_query(table: Table, columns: tuple[str, ...]) -> Update:
    """``UPDATE table SET columns WHERE primary key``, values bound by column name and the
    key by ``pk_<column>``: built once per (table, columns)."""
    cond = [c == bindparam(f"pk_{c.key}") for c in table.primary_key.columns]
    return update(table).where(*cond).values({c: bindparam(c) for c in columns})


@functools.cache
def _response_query() -> Update:
    """An answer's stored response by (learner, event id): built once."""
    t = Interaction.__table__
    return (
        update(t)
        .where(t.c.learner_id == bindparam("pk_learner"), t.c.event_id == bindparam("pk_event"))
        .values(response=bindparam("response"))
    )


class _Writes:
    """The answer path's writes as plain Core statements (the unit of work's bookkeeping
    costs more than the three statements themselves): new answers, and column updates of
    learners and states that are already in the database. Their in-memory ORM attributes
    are set as if loaded (:func:`set_committed_value`), so a later flush never writes them
    again; objects not yet in the database (a state the replay just created) are set as
    usual and inserted by the flush."""

    def __init__(self) -> None:
        #: stored answers late answers may still replay in this request (None: no bound)
        self.replay_budget: int | None = None
        self.interactions: list[dict[str, Any]] = []
        self.updates: dict[tuple[Any, tuple[Any, ...]], dict[str, Any]] = {}
        self.responses: list[tuple[int, str, dict[str, Any]]] = []

    def set(self, obj: Any, attr: str, value: Any) -> None:
        st = inspect(obj)
        if not st.persistent:
            setattr(obj, attr, value)
            return
        set_committed_value(obj, attr, value)
        col = st.mapper.attrs[attr].columns[0]
        self.updates.setdefault((st.mapper.local_table, st.identity), {})[col.key] = value

    def apply(self, session: Session) -> None:
        # on the session's connection: Core statements need none of the ORM's execution
        # layer (about 50 microseconds a statement)
        conn = session.connection()
        if conn.dialect.name == "postgresql" and self._apply_as_one(session):
            return
        if self.interactions:
            conn.execute(insert(Interaction.__table__), self.interactions)
            self.interactions = []
        for (table, ident), values in self.updates.items():
            pk = {f"pk_{c.key}": v for c, v in zip(table.primary_key.columns, ident, strict=True)}
            conn.execute(_update_query(table, tuple(values)), {**pk, **values})
        self.updates = {}
        for learner_id, event_id, response in self.responses:
            conn.execute(
                _response_query(),
                {"pk_learner": learner_id, "pk_event": event_id, "response": response},
            )
        self.responses = []

    def _apply_as_one(self, session: Session) -> bool:
        """PostgreSQL: one answer's writes (its row, its learner's and its state's updates)
        as one statement, the others as data-modifying CTEs of the last update (one round
        trip instead of three). False, having written nothing, for anything else (several
        answers or learners, stored responses to update: the statements one by one)."""
        if len(self.interactions) > 1 or self.responses or not self.updates:
            return False
        tables = [table for table, _ in self.updates]
        if len(set(tables)) != len(tables):
            return False
        now = utcnow()
        shape, params = [], {}
        for k, ((table, ident), values) in enumerate(self.updates.items()):
            pk = [c.key for c in table.primary_key.columns]
            cols = tuple(values) + (("updated_at",) if "updated_at" in table.c else ())
            shape.append((table, tuple(pk), cols))
            params.update({f"u{k}_pk_{c}": v for c, v in zip(pk, ident, strict=True)})
            params.update({f"u{k}_{c}": v for c, v in values.items()})
            params.setdefault(f"u{k}_updated_at", now)
        row = self.interactions[0] if self.interactions else None
        if row is not None:
            params.update({f"i_{c}": v for c, v in row.items()})
            params.setdefault("i_received_at", now)
        cols_in = tuple(row) + (("received_at",) if "received_at" not in row else ()) if row else ()
        driver.execute(session, _writes_query(tuple(shape), cols_in), params)
        self.interactions, self.updates = [], {}
        return True


@functools.cache
def _writes_query(
    shape: tuple[tuple[Table, tuple[str, ...], tuple[str, ...]], ...], insert_cols: tuple[str, ...]
) -> Update:
    """The statement of :meth:`_Writes._apply_as_one` for one shape (the updates' tables,
    keys and columns; the inserted answer's columns, none without one): built once per
    shape, bound per request (parameters ``u<k>_<column>``, ``u<k>_pk_<key>``,
    ``i_<column>``)."""
    parts = []
    for k, (table, pk, cols) in enumerate(shape):
        cond = [table.c[c] == bindparam(f"u{k}_pk_{c}") for c in pk]
        parts.append(
            update(table).where(*cond).values({table.c[c]: bindparam(f"u{k}_{c}") for c in cols})
        )
    main = parts.pop()
    ctes = [p.cte(f"w_u{k}") for k, p in enumerate(parts)]
    if insert_cols:
        t = Interaction.__table__
        ctes.append(insert(t).values({t.c[c]: bindparam(f"i_{c}") for c in insert_cols}).cte("w_i"))
    for cte in ctes:
        main = main.add_cte(cte)
    return main


@dataclass
class _Batch:
    """What every learner's group of one request's answers is applied with: the request's
    items, active model, mastery criterion and scale, its results (in the input order) and
    its writes."""

    org: Organisation
    items: dict[str, ItemRef]
    model: LoadedModel | None
    rule: EvidenceRule
    scale: str
    results: list[dict[str, Any] | None]
    writes: _Writes

    def mastery(
        self,
        model: LoadedModel,
        state: Any,
        item: ItemRef,
        ev: Evidence,
        success: np.ndarray | None = None,
    ) -> list[dict[str, Any]]:
        """The answered item's concepts as the answer's response reports them (``success``:
        their estimates for ``state``, where already computed)."""
        return mastery_of(
            model,
            state,
            item.concepts,
            evidence=ev,
            rule=self.rule,
            any_answers=True,
            scale=self.scale,
            success=success,
        )


def _apply_learner(
    session: Session, batch: _Batch, learner: Learner, group: list[tuple[int, AnswerIn]]
) -> None:
    """Apply one learner's new answers (sorted in event order): one ``step`` each, or the
    late path (:func:`_apply_late`) where one is late or the learner's state is stale."""
    org, items, model, writes = batch.org, batch.items, batch.model, batch.writes
    state, row = (None, None)
    ev: Evidence = {}
    if model is not None:
        stale = _stale(session, learner=learner, model=model)
        late = False
        if not stale:
            state, row = current_state(session, learner=learner, model=model)
            ev = evidence_mod.load(row.evidence)
            late = _any_late(learner, row, group)
        if stale or late:
            # one replay serves both: a stale state (after a model swap or an import) is
            # rebuilt by the same replay that folds these answers
            _apply_late(session, batch, model, learner, group, bounded=late)
            return
    for k, a in group:
        item = items[a.item_id]
        inter = _interaction_row(org, learner, item, a)
        writes.interactions.append(inter)
        first = as_utc(learner.first_seen)
        n_before = learner.n_answers
        writes.set(learner, "n_answers", n_before + 1)
        if first is None or a.timestamp < first:
            writes.set(learner, "first_seen", a.timestamp)
        mastery: list[dict[str, Any]] = []
        if model is not None:
            # in event order here: a late answer (or a stale state) took _apply_late
            t = model.time_value(a.timestamp, as_utc(learner.first_seen), n_before)
            cexts = [c.external_id for c in item.concepts]
            need = evidence_mod.needs_prior(ev, cexts)
            priors: dict[str, float] = {}
            shown: dict[str, tuple[float, float]] = {}
            idx = model.item_idx([a.item_id]).tolist()
            after = model.step_many(state, idx, [int(a.correct)], [t])
            success = None  # the item's concepts after the answer (success scale)
            if need:  # the model's estimate just before the first own answer (as GET
                # /mastery reports it: at the learner's previous answer), and after this
                # answer, for the response: one model call over the two states
                pos = model.concept_positions
                cidx = np.array([pos.get(c, 0) for c in cexts], dtype=np.int64)
                both = model.estimates(stack_states(model, [state, after]), cidx, scale="success")
                raw = {c: both[0, k] for k, c in enumerate(cexts)}
                priors, shown = first_answer_priors(
                    model, state, need, raw=np.array([raw[c] for c in need])
                )
                success = both[1]
            evidence_mod.fold(ev, cexts, bool(a.correct), a.timestamp, priors, shown)
            state = after
            writes.set(row, "state", model.encode(state))
            writes.set(row, "evidence", evidence_mod.dump(ev))
            writes.set(row, "n_applied", learner.n_answers)
            writes.set(row, "last_timestamp", a.timestamp)
            writes.set(row, "last_event_id", a.event_id)
            mastery = batch.mastery(model, state, item, ev, success)
        response = _answer_response(learner, item, a, model, mastery)
        if writes.interactions and writes.interactions[-1] is inter:
            inter["response"] = response  # not inserted yet
        else:
            writes.responses.append((learner.id, a.event_id, response))
        batch.results[k] = response


def _interaction_row(
    org: Organisation, learner: Learner, item: ItemRef, a: AnswerIn
) -> dict[str, Any]:
    """An answer as the row the answer path inserts (its response is set afterwards)."""
    return {
        "org_id": org.id,
        "learner_id": learner.id,
        "item_id": item.id,
        "event_id": a.event_id,
        "correct": int(a.correct),
        "timestamp": a.timestamp,
        "elapsed_ms": a.elapsed_ms,
        "attempt": a.attempt,
        "source": a.source,
        "response": None,
    }


def _answer_response(
    learner: Learner,
    item: ItemRef,
    a: AnswerIn,
    model: LoadedModel | None,
    mastery: list[dict[str, Any]],
) -> dict[str, Any]:
    """What ``POST /v1/answers`` answers for a new answer (kept with it for replays)."""
    return {
        "event_id": a.event_id,
        "learner_id": learner.external_id,
        "item_id": item.external_id,
        "correct": int(a.correct),
        "timestamp": a.timestamp.isoformat(),
        "model": None
        if model is None
        else {"id": model.model_id, "name": model.name, "forgets": model.forgets},
        "mastery": mastery,
        "replayed": False,
    }


def _stale(session: Session, *, learner: Learner, model: LoadedModel) -> bool:
    """Whether the learner's stored state must be rebuilt before use (see current_state)."""
    key = (learner.id, model.model_id)
    known = session.info.get(LOADED_STATES)
    row = known[key] if known and key in known else session.get(LearnerState, key)
    return row is None or row.n_applied != learner.n_answers or row.evidence is None


def _any_late(
    learner: Learner, row: LearnerState | None, group: list[tuple[int, AnswerIn]]
) -> bool:
    """Whether an answer of the (time-sorted) group comes before what the state has folded
    (or before the learner's first answer): the group then takes :func:`_apply_late`."""
    first = as_utc(learner.first_seen)
    last = None
    if row is not None and row.last_timestamp is not None:
        last = (as_utc(row.last_timestamp), row.last_event_id or "")
    for _, a in group:
        if (last is not None and (a.timestamp, a.event_id) < last) or (
            first is not None and a.timestamp < first
        ):
            return True
    return False


def _apply_late(
    session: Session,
    batch: _Batch,
    model: LoadedModel,
    learner: Learner,
    group: list[tuple[int, AnswerIn]],
    *,
    bounded: bool = True,
) -> None:
    """A group with late answers (or a learner whose state is stale): every answer is
    stored, then the learner's history is
    replayed **once** (not once per late answer), each answer's response read at its place
    in the replay. The cost is one replay of the learner's history per request, whatever
    the number of late answers in it. ``model`` is the batch's (never None here)."""
    may_block("replaying a learner's history")
    items, writes = batch.items, batch.writes
    if bounded and writes.replay_budget is not None:
        writes.replay_budget -= learner.n_answers + len(group)
        if writes.replay_budget < 0:
            raise TooLarge(
                "this request's late answers (earlier than answers already applied) would "
                "replay more stored answers than the limit allows; send them in smaller "
                "requests (or per learner)"
            )
    for _, a in group:
        item = items[a.item_id]
        writes.interactions.append(_interaction_row(batch.org, learner, item, a))
        writes.set(learner, "n_answers", learner.n_answers + 1)
        first = as_utc(learner.first_seen)
        if first is None or a.timestamp < first:
            writes.set(learner, "first_seen", a.timestamp)
    writes.apply(session)
    session.flush()
    watch: dict[str, Any] = {a.event_id: None for _, a in group}
    rebuild_state(session, learner=learner, model=model, watch=watch)
    for k, a in group:
        item = items[a.item_id]
        st, ev = watch[a.event_id]
        mastery = batch.mastery(model, st, item, ev)
        response = _answer_response(learner, item, a, model, mastery)
        writes.responses.append((learner.id, a.event_id, response))
        batch.results[k] = response


# ---------------------------------------------------------------------- reading
def learner_mastery(
    session: Session,
    *,
    org: Organisation,
    learner: Learner,
    at: datetime | None = None,
    rule: EvidenceRule | None = None,
    scale: str = "reachable",
) -> dict[str, Any]:
    model = active_model(session, org=org)
    if model is None:
        raise NotFound("no active model for this organisation")
    concepts = catalogue(session, org).concepts_by_id  # cached per catalogue version
    state, row = current_state(session, learner=learner, model=model)
    at_time = None
    if at is not None and model.forgets and learner.first_seen is not None:
        at_time = model.time_value(as_utc(at), as_utc(learner.first_seen), learner.n_answers)
    rows = mastery_of(
        model,
        state,
        concepts,
        evidence=evidence_mod.load(row.evidence),
        rule=rule or EvidenceRule(),
        any_answers=learner.n_answers > 0,
        at_time=at_time,
        scale=scale,
    )
    counts = {s: 0 for s in evidence_mod.STATUSES}
    for r in rows:
        counts[r["status"]] += 1
    return {
        "learner_id": learner.external_id,
        "model": {"id": model.model_id, "name": model.name, "forgets": model.forgets},
        "at": at.isoformat() if at is not None else None,
        "n_answers": learner.n_answers,
        "statuses": counts,
        "concepts": rows,
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
