"""Learner states: the one replay of a learner's answers through a model, and the states kept.

A learner's state for a model is rebuilt by replaying the stored answers in event order
(timestamp, then event id) with :func:`replay_histories`, the one loop that steps models over
histories. :func:`rebuild_states` is the one place that turns replayed histories into stored
state rows: for a missing or stale state (:func:`current_state`, through
:func:`rebuild_state`), after a model swap (``tutor.operations.rebuild_states``) and for a
class's statuses (``tutor.analytics.status``); the analytics' timeline replays without
storing. States rebuilt during a read request are written back at its end by
:func:`keep_rebuilt_states`, in a transaction of their own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import numpy as np
import torch
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from . import evidence as evidence_mod
from .blocking import may_block
from .clock import as_utc
from .db import Concept, Interaction, Item, ItemConcept, Learner, LearnerState
from .evidence import Evidence
from .runtime import LoadedModel, step_through


def concepts_of_items(
    session: Session, *, org_id: int, item_ext: list[str] | None = None
) -> dict[str, tuple[str, ...]]:
    """Item external id -> its concepts' external ids (sorted by concept id), for the items
    named (every item of the organisation when ``item_ext`` is None)."""
    out: dict[str, list[str]] = {}
    q = (
        select(Item.external_id, Concept.external_id)
        .join(ItemConcept, ItemConcept.item_id == Item.id)
        .join(Concept, Concept.id == ItemConcept.concept_id)
        .where(Item.org_id == org_id)
        .order_by(Item.external_id, Concept.id)
    )
    if item_ext is None:
        chunks: list[list[str] | None] = [None]
    else:
        uniq = sorted(set(item_ext))
        chunks = [uniq[k : k + 5000] for k in range(0, len(uniq), 5000)]
    for chunk in chunks:
        qq = q if chunk is None else q.where(Item.external_id.in_(chunk))
        for it, c in session.execute(qq):
            out.setdefault(it, []).append(c)
    return {k: tuple(v) for k, v in out.items()}


def replay_histories(
    model: LoadedModel,
    hists: list[list[tuple[str, int, datetime, str]]],
    firsts: list[datetime | None],
    concepts_of: dict[str, tuple[str, ...]],
    after_step: Callable[[int, Any, list[Evidence]], None] | None = None,
) -> list[tuple[Any, Evidence]]:
    """The one replay of stored histories (event order) through the model's serving form:
    each learner's final state and own evidence (:mod:`tutor.evidence`), the evidence filter
    started at a concept's first own answer from the model's estimate just before it (as
    ``GET /mastery`` reports it: at the previous answer), as the answer path does. Histories
    are stepped together, one ``step`` per position (:func:`tutor.runtime.step_through`);
    ``after_step(t, state, evidence)`` sees
    the batched state and every learner's evidence after position ``t`` (the analytics'
    timelines read them as they go; the evidence is updated in place afterwards)."""
    n = len(hists)
    lens = np.array([len(h) for h in hists], dtype=np.int64)
    t_max = int(lens.max()) if n else 0
    items = np.zeros((n, max(t_max, 1)), dtype=np.int64)
    correct = np.zeros((n, max(t_max, 1)), dtype=np.float32)
    times = np.zeros((n, max(t_max, 1)), dtype=np.float32)
    for k, h in enumerate(hists):
        if not h:
            continue
        items[k, : len(h)] = model.item_idx([x[0] for x in h])
        correct[k, : len(h)] = [x[1] for x in h]
        times[k, : len(h)] = [model.time_value(x[2], firsts[k], j) for j, x in enumerate(h)]
    evs: list[Evidence] = [{} for _ in range(n)]
    finals: list[Any] = [None] * n

    def visit(t: int, state: Any) -> None:
        # ``state``: after ``t`` answers; answer ``t`` (if any) is folded into the evidence
        # here, from the estimates before it, and into the state by the step that follows
        if t > 0:
            if after_step is not None:
                after_step(t - 1, state, evs)
            for k in np.flatnonzero(lens == t):
                finals[k] = state if n == 1 else model.model.state_select(state, torch.tensor([k]))
        if t < t_max:
            _fold_evidence(model, hists, concepts_of, evs, state, t, np.flatnonzero(lens > t))

    step_through(model, items, correct, times, stop=t_max, visit=visit)
    return [
        (finals[k] if finals[k] is not None else model.model.init_state(1), evs[k])
        for k in range(n)
    ]


def _fold_evidence(
    model: LoadedModel,
    hists: list[list[tuple[str, int, datetime, str]]],
    concepts_of: dict[str, tuple[str, ...]],
    evs: list[Evidence],
    state: Any,
    t: int,
    active: np.ndarray,
) -> None:
    """Fold answer ``t`` of the ``active`` learners into their evidence, a concept's first
    own answer starting the filter from the model's estimate in ``state`` (before it)."""
    n = len(hists)
    need: dict[int, list[str]] = {}
    for k in active:
        miss = evidence_mod.needs_prior(evs[k], concepts_of.get(hists[k][t][0], ()))
        if miss:
            need[int(k)] = miss
    priors: dict[int, dict[str, float]] = {}
    shown: dict[int, dict[str, tuple[float, float]]] = {}
    if need:
        ks = np.array(sorted(need), dtype=np.int64)
        cset = sorted({c for v in need.values() for c in v})
        col = {c: j for j, c in enumerate(cset)}
        cidx = np.array([model.concept_index(c) or 0 for c in cset], dtype=np.int64)
        sub = state if len(ks) == n else model.model.state_select(state, torch.from_numpy(ks))
        raw = model.estimates(sub, cidx, scale="success")
        est = model.scaled_known(raw, cidx)
        for r, k in enumerate(ks.tolist()):
            priors[k] = {c: float(est[r, col[c]]) for c in need[k]}
            shown[k] = {c: _both(est[r, col[c]], raw[r, col[c]]) for c in need[k]}
    for k in active:
        h = hists[k][t]
        evidence_mod.fold(
            evs[k], concepts_of.get(h[0], ()), bool(h[1]), h[2], priors.get(k), shown.get(k)
        )


def _both(reachable: float, success: float) -> tuple[float, float]:
    """(low, high) of a concept's estimate on the two mastery scales (nan-safe)."""
    vals = [float(x) for x in (reachable, success) if x == x]
    return (min(vals), max(vals)) if vals else (float("nan"), float("nan"))


def first_answer_priors(
    model: LoadedModel, state: Any, concepts: list[str], raw: np.ndarray | None = None
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """For a learner's first own answers on ``concepts``: the evidence filter's prior (the
    reachable estimate) and the range ``GET /mastery`` could have shown on either scale.
    ``raw``: the concepts' estimates on the success scale for ``state``, where the caller
    has them already."""
    cidx = np.array([model.concept_index(c) or 0 for c in concepts], dtype=np.int64)
    if raw is None:
        raw = model.estimates(state, cidx, scale="success")[0]
    est = model.scaled_known(raw, cidx)
    priors = {c: float(est[k]) for k, c in enumerate(concepts)}
    shown = {c: _both(est[k], raw[k]) for k, c in enumerate(concepts)}
    return priors, shown


#: ids bound in one ``IN`` list (a statement's parameters stay well under every driver's limit)
IN_CHUNK = 1000


def in_chunks(ids: list[int]) -> Iterator[list[int]]:
    """``ids`` in slices of :data:`IN_CHUNK`, one query's ``IN`` list each."""
    for start in range(0, len(ids), IN_CHUNK):
        yield ids[start : start + IN_CHUNK]


def histories(
    session: Session, learner_ids: list[int]
) -> dict[int, list[tuple[str, int, datetime, str]]]:
    """Each learner's answers in event order as (item external id, correct, time, event id),
    one query per :data:`IN_CHUNK` learners."""
    out: dict[int, list[tuple[str, int, datetime, str]]] = {lid: [] for lid in learner_ids}
    for chunk in in_chunks(learner_ids):
        rows = session.execute(
            select(
                Interaction.learner_id,
                Item.external_id,
                Interaction.correct,
                Interaction.timestamp,
                Interaction.event_id,
            )
            .join(Item, Item.id == Interaction.item_id)
            .where(Interaction.learner_id.in_(chunk))
            .order_by(Interaction.learner_id, Interaction.timestamp, Interaction.event_id)
        )
        for lid, item, correct, ts, ev in rows:
            out[lid].append((item, int(correct), as_utc(ts), ev))
    return out


def answers_in_order(session: Session, learner_id: int) -> list[tuple[str, int, datetime, str]]:
    """One learner's :func:`histories`."""
    return histories(session, [learner_id])[learner_id]


def rebuild_states(
    session: Session,
    *,
    model: LoadedModel,
    learners: list[Learner],
    update_learners: bool,
    keep_after_read: bool,
    concepts_of: dict[str, tuple[str, ...]] | None = None,
    rows: dict[int, LearnerState | None] | None = None,
    watch: dict[str, Any] | None = None,
) -> list[tuple[Any, LearnerState]]:
    """Replay the learners' whole histories together (:func:`replay_histories`) and put the
    results in their state rows for ``model`` (created where missing): the one place that
    turns replayed histories into stored states, for a stale state read
    (:func:`rebuild_state`), a model swap (``tutor.operations.rebuild_states``) and a class's
    statuses (``tutor.analytics.status``). Returns each learner's (state, row), in order.

    - ``update_learners``: also correct each learner's answer count and first-seen time from
      the history where they disagree (one learner's rebuild and a model swap; a class's
      statuses leave the learners as they were read);
    - ``keep_after_read``: the rows are written at the read request's end by
      :func:`keep_rebuilt_states` (and :func:`current_state` finds them);
    - ``concepts_of`` and ``rows`` (learner id -> its state row, None where it has none):
      what the caller has read already (the learners not in ``rows`` are read here);
    - ``watch`` (one learner only; event id -> None) receives, for each of its event ids,
      the state and a copy of the evidence right after that answer.

    Nothing is flushed here (a read request must not write): answers the replay must see are
    written before (the answer path writes them with Core statements, then flushes).
    """
    if watch and len(learners) != 1:
        raise ValueError("watch follows one learner's replay")
    may_block("replaying learners' histories")
    if not learners:
        return []
    ids = [lr.id for lr in learners]
    with session.no_autoflush:
        by_learner = histories(session, ids)
        hists = [by_learner[i] for i in ids]
        firsts: list[datetime | None] = []
        for lr, h in zip(learners, hists, strict=True):
            first = as_utc(lr.first_seen)
            if h and (first is None or h[0][2] < first):
                first = h[0][2]
            firsts.append(first)
        if concepts_of is None:
            concepts_of = concepts_of_items(
                session, org_id=learners[0].org_id, item_ext=[x[0] for h in hists for x in h]
            )
        rows = dict(rows or {})
        missing = [i for i in ids if i not in rows]
        if len(missing) == 1:  # the identity map may hold it: no query
            row = session.get(LearnerState, (missing[0], model.model_id))
            if row is not None:
                rows[missing[0]] = row
        else:
            for chunk in in_chunks(missing):
                rows.update(
                    (r.learner_id, r)
                    for r in session.scalars(
                        select(LearnerState).where(
                            LearnerState.model_id == model.model_id,
                            LearnerState.learner_id.in_(chunk),
                        )
                    )
                )
    after_step = None
    if watch:
        at = {t: h[3] for t, h in enumerate(hists[0]) if h[3] in watch}

        def after_step(t: int, st: Any, evs: list[Evidence]) -> None:
            if t in at:
                watch[at[t]] = (st, evidence_mod.load(evidence_mod.dump(evs[0])))

    with torch.no_grad():
        replayed = replay_histories(model, hists, firsts, concepts_of, after_step)
    out: list[tuple[Any, LearnerState]] = []
    kept = session.info.setdefault("rebuilt", []) if keep_after_read else None
    for lr, h, first, (state, ev) in zip(learners, hists, firsts, replayed, strict=True):
        row = rows.get(lr.id)
        if row is None:
            row = LearnerState(learner_id=lr.id, model_id=model.model_id, state=b"")
            session.add(row)
        row.state = model.encode(state)
        row.evidence = evidence_mod.dump(ev)
        row.n_applied = len(h)
        row.last_timestamp = h[-1][2] if h else None
        row.last_event_id = h[-1][3] if h else None
        if update_learners:
            if h and as_utc(lr.first_seen) != first:
                lr.first_seen = first
            if lr.n_answers != len(h):
                lr.n_answers = len(h)
        if kept is not None:
            kept.append(row)
            remember_state(session, lr.id, model.model_id, row)
        out.append((state, row))
    return out


def rebuild_state(
    session: Session,
    *,
    learner: Learner,
    model: LoadedModel,
    watch: dict[str, Any] | None = None,
) -> tuple[Any, LearnerState]:
    """Replay one learner's whole history through the model (rare path, see module doc)
    with :func:`rebuild_states` (``watch``: as there)."""
    return rebuild_states(
        session,
        model=model,
        learners=[learner],
        update_learners=True,
        keep_after_read=True,
        watch=watch,
    )[0]


def keep_rebuilt_states(session: Session) -> None:
    """End a read request: keep the states it had to rebuild.

    With nothing rebuilt the session is closed (the read transaction ends in the route's
    thread). A read never writes in its own session (a SQLite read transaction cannot; a
    PostgreSQL read runs in autocommit): the rebuilt states are written afterwards in a short
    write transaction of their own, each only if its learner is not being written by an
    answer right now (PostgreSQL: the learner's row locked ``SKIP LOCKED``; an answer's
    transaction holds it) and has not answered meanwhile; if the database is busy they are
    rebuilt again next time. (Writing a state while an answer held its learner could
    deadlock: the read's insert waited for the answer's lock on the learner, the answer's
    insert of the same state for the read's.)
    """
    rebuilt = session.info.pop("rebuilt", [])
    session.info.pop(LOADED_STATES, None)
    if not rebuilt:
        # nothing to keep: end the read transaction here, in the route's thread (closing keeps
        # the loaded attributes readable, where a rollback would expire them all)
        session.close()
        return
    snap = [
        (
            r.learner_id,
            r.model_id,
            r.state,
            r.evidence,
            r.n_applied,
            r.last_timestamp,
            r.last_event_id,
        )
        for r in rebuilt
    ]
    session.rollback()
    factory = session.info.get("write_factory")
    if factory is None:
        return
    from sqlalchemy.exc import OperationalError

    try:
        with factory() as w, w.begin():
            for lid, mid, blob, evid, n, ts, ev in snap:
                learner = w.get(Learner, lid, with_for_update={"skip_locked": True})
                if learner is None or learner.n_answers != n:
                    continue
                row = w.get(LearnerState, (lid, mid))
                if row is None:
                    row = LearnerState(learner_id=lid, model_id=mid, state=blob)
                    w.add(row)
                row.state, row.evidence, row.n_applied = blob, evid, n
                row.last_timestamp, row.last_event_id = ts, ev
    except OperationalError:
        pass


#: ``session.info`` key: {(learner id, model id): the LearnerState row or None (no row)} of
#: states read together with their learners (the session's identity map holds its objects
#: weakly: this keeps them, so that :func:`current_state` needs no second query)
LOADED_STATES = "loaded_states"


def remember_state(
    session: Session, learner_id: int, model_id: int, row: LearnerState | None
) -> None:
    session.info.setdefault(LOADED_STATES, {})[(learner_id, model_id)] = row


def last_answers(learner: Any, limit: Any) -> Select:
    """The item, time and event id of a learner's last ``limit`` answers, latest first (the
    reverse of event order): ``learner`` and ``limit`` are values, bound parameters or, for
    a correlated subquery, the learner's id column."""
    return (
        select(Interaction.item_id, Interaction.timestamp, Interaction.event_id)
        .where(Interaction.learner_id == learner)
        .order_by(Interaction.timestamp.desc(), Interaction.event_id.desc())
        .limit(limit)
    )


#: ``session.info`` key: {learner id: (limit, item ids)}: the database ids of the items of a
#: learner's last ``limit`` answers (the latest first; fewer when the learner has fewer),
#: read together with the learner (``tutor.api.deps.visible_learner``), so that
#: :func:`recent_items` needs no query of its own
LOADED_RECENT = "loaded_recent"


def remember_recent(session: Session, learner_id: int, limit: int, item_ids: list[int]) -> None:
    session.info.setdefault(LOADED_RECENT, {})[learner_id] = (limit, item_ids)


def recent_items(session: Session, learner_id: int, keep: int) -> list[int] | None:
    """The items of the learner's last ``keep`` answers, latest first, where the learner's
    statement read them (at least ``keep``, or the whole history); None: read them."""
    limit, ids = session.info.get(LOADED_RECENT, {}).get(learner_id, (0, None))
    if ids is None or (limit < keep and len(ids) >= limit):
        return None
    return ids[:keep]


def current_state(
    session: Session, *, learner: Learner, model: LoadedModel
) -> tuple[Any, LearnerState]:
    """The learner's up-to-date state for ``model`` (rebuilt if missing or stale)."""
    key = (learner.id, model.model_id)
    known = session.info.get(LOADED_STATES)
    row = known[key] if known and key in known else session.get(LearnerState, key)
    if row is None or row.n_applied != learner.n_answers or row.evidence is None:
        return rebuild_state(session, learner=learner, model=model)
    return model.decode(row.state), row
