"""Analytics for teachers and administrators: group mastery grids, learner timelines,
learning curves, item statistics, learners at risk and the active model's card.

Nothing here knows about HTTP (the routes are in :mod:`tutor.api.analytics`); errors are
:class:`~tutor.service.ServiceError` subclasses. Everything is computed per request from the
database and the active model, vectorised:

* **Current statuses and mastery of a group** (grid, at-risk, and the teacher's views of
  :mod:`tutor.teaching`): the members' stored learner states and evidence are read in one
  query, decoded into one batched state (:func:`tutor.runtime.decode_many`) and scored by
  one batched ``predict`` (:func:`tutor.runtime.concept_mastery_many`), so a grid cell
  equals the learner's ``/v1/learners/{id}/mastery`` value; after new answers only the
  learners who answered are read again. Stale or missing states (after a model swap or a
  bulk import) are rebuilt by one batched replay and kept, as the mastery route keeps its.
* **Predictions before each answer** (learning curves, item statistics): the group's
  answers are read in one ordered query (timestamps as epoch seconds computed by the
  database) and run through the model's batch ``forward`` (its training form, equal to the
  serving form to 1e-5) in length-bucketed batches. The result is cached per learner and
  model (keyed by the learner's answer count, so a new answer replays that learner only).
* **Aggregates**: opportunities (the k-th answer of a learner on a concept's items, in event
  order) by a stable sort and a segmented count; attempts, success and predictions per item
  and per (concept, opportunity) by ``np.bincount``; group membership, answer counts and last
  answers by SQL.
* **Caches** (per process, least recently used evicted): group results per (database, group,
  model version, catalogue version, members and their answer counts), timelines per
  (database, learner, model version, answer count), model cards per (database, model).

Thresholds (learners at risk, item flags) are organisation settings (``org.settings``,
``PATCH /v1/organisation/settings``) with the defaults in :data:`DEFAULTS`.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import torch
from sqlalchemy import Float, cast, func, literal_column, select
from sqlalchemy.orm import Session, sessionmaker

from kt_models.data import Sequences, iter_batches

from . import recommend
from .db import (
    Group,
    GroupMembership,
    Interaction,
    Item,
    ItemConcept,
    Learner,
    LearnerState,
    ModelVersion,
    Organisation,
)
from .runtime import (
    SECONDS_PER_DAY,
    LoadedModel,
    concept_mastery_many,
    decode_many,
    replay_many,
    stack_states,
)
from .service import Invalid, NotFound, active_model, as_utc, db_scope, utcnow

log = logging.getLogger(__name__)

#: organisation settings read here, with their defaults
DEFAULTS: dict[str, float | int] = {
    #: at risk: mean mastery over the concepts the group has covered below this
    "risk_low_mastery": 0.5,
    #: at risk: that mean fell by more than this over the learner's last answers ...
    "risk_mastery_drop": 0.1,
    #: ... namely over this many answers
    "risk_window_answers": 10,
    #: at risk: no answer for more than this many days
    "risk_inactive_days": 14.0,
    #: item statistics: items with at least this many attempts can be flagged ...
    "item_flag_min_attempts": 20,
    #: ... when observed and predicted success differ by more than this many standard errors
    "item_flag_z": 3.0,
    #: ... and at least this many learners answered the item
    "item_flag_min_learners": 10,
    #: learning curves: a point (an opportunity) is shown with at least this many learners
    "curve_min_learners": 5,
}
#: the learned prerequisite graph's edges shown on the model card
GRAPH_EDGE_THRESHOLD = 0.5
#: default number of concepts on a timeline (the learner's most practised)
TIMELINE_CONCEPTS = 8
#: answers kept in the per-learner prediction cache, all learners together
SEQ_CACHE_ROWS = 5_000_000
#: tokens per batch of the forward pass (memory: DKT needs ~ tokens x concepts floats)
FORWARD_TOKENS = 32_768


def setting(org: Organisation, name: str, settings: Any = None) -> float | int:
    """An analytics threshold: the organisation's value, else the service settings' (when
    they have one), else :data:`DEFAULTS`."""
    value = (org.settings or {}).get(name)
    if value is None and settings is not None:
        value = getattr(settings, name, None)
    if value is None:
        value = DEFAULTS[name]
    return type(DEFAULTS[name])(value)


# ---------------------------------------------------------------------- caches
class _LRU:
    def __init__(self, size: int) -> None:
        self.size = size
        self._d: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            if key not in self._d:
                return None
            self._d.move_to_end(key)
            return self._d[key]

    def put(self, key: Any, value: Any) -> Any:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._d.clear()


@dataclass
class _Seq:
    """One learner's answers in event order with the model's prediction before each."""

    item_db: np.ndarray  # int64
    correct: np.ndarray  # int8
    t: np.ndarray  # float64 epoch seconds
    p: np.ndarray  # float32 predicted success (nan: item unknown to the model)


class _SeqCache:
    """Per (database, model, learner, answers): the learner's :class:`_Seq`, bounded by the
    total number of answers held."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self._d: OrderedDict[tuple, _Seq] = OrderedDict()
        self._rows = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> _Seq | None:
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key: tuple, value: _Seq) -> None:
        with self._lock:
            old = self._d.pop(key, None)
            if old is not None:
                self._rows -= len(old.p)
            self._d[key] = value
            self._rows += len(value.p)
            while self._rows > self.max_rows and len(self._d) > 1:
                _, v = self._d.popitem(last=False)
                self._rows -= len(v.p)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()
            self._rows = 0


_GROUP = _LRU(64)
#: the kinds of per-group results cached in _GROUP (one entry each per group, model, rule)
GROUP_RESULTS_PER_GROUP = 4
_TIMELINE = _LRU(256)
_CARD = _LRU(16)
_ITEMS = _LRU(16)
#: learner states some answers back (at-risk), per learner
_SNAPS = _LRU(200_000)
_SEQS = _SeqCache(SEQ_CACHE_ROWS)


def _current(key: tuple, members: _Members) -> Any:
    """A group's cached result if it was computed for these members and answer counts (one
    slot per group and kind: a new answer replaces the entry instead of adding one)."""
    hit = _GROUP.get(key)
    return hit[1] if hit is not None and hit[0] == members.fingerprint else None


def _keep(key: tuple, members: _Members, value: Any) -> Any:
    _GROUP.put(key, (members.fingerprint, value))
    return value


def clear_caches() -> None:
    for c in (_GROUP, _TIMELINE, _CARD, _ITEMS, _SNAPS, _SEQS):
        c.clear()


# ---------------------------------------------------------------------- shared pieces
def _rnd(x: Any, nd: int = 6) -> float | None:
    """A JSON-safe rounded float (None for nan/inf/None)."""
    if x is None:
        return None
    x = float(x)
    return round(x, nd) if math.isfinite(x) else None


def _json_safe(obj: Any) -> Any:
    """Replace non-finite floats (nan in stored results) by None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    """Mean over the finite values (nan where there are none, without a warning)."""
    ok = np.isfinite(a)
    cnt = ok.sum(axis)
    total = np.where(ok, a, 0.0).sum(axis)
    return np.where(cnt > 0, total / np.maximum(cnt, 1), np.nan)


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else as_utc(dt).isoformat()


@dataclass
class _Context:
    model: LoadedModel
    cat: recommend.Catalogue
    view: dict[str, Any]
    scope: str

    def model_ref(self) -> dict[str, Any]:
        m = self.model
        return {"id": m.model_id, "name": m.name, "forgets": m.forgets}

    def concept_order(self) -> list[int]:
        """Positions of the organisation's concepts the model knows, in curriculum order."""
        cidx = self.view["concept_idx"]
        return [int(p) for p in self.view["curriculum_pos"] if cidx[p] > 0]

    def concept_refs(self, positions: list[int] | np.ndarray) -> list[dict[str, str]]:
        return [
            {"concept_id": self.cat.concept_ext[p], "name": self.cat.name(p)} for p in positions
        ]


def _context(session: Session, org: Organisation) -> _Context:
    model = active_model(session, org=org)
    if model is None:
        raise NotFound("no active model for this organisation")
    cat = recommend.catalogue(session, org)
    return _Context(model, cat, recommend._model_view(cat, model), db_scope(session))


@dataclass
class _ItemIndex:
    """Every item of the organisation (active or not), by database id."""

    db_ids: np.ndarray  # [I] sorted
    ext: list[str]
    model_idx: np.ndarray  # [I] model item index, 0 = unknown to the model
    link_start: np.ndarray  # [I + 1] CSR offsets into link_concept
    link_concept: np.ndarray  # concept positions (in the catalogue's concept order)

    def positions(self, item_db: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.db_ids, item_db)


def _item_index(session: Session, org: Organisation, ctx: _Context) -> _ItemIndex:
    key = (ctx.scope, org.id, ctx.cat.version, ctx.model.model_id)
    hit = _ITEMS.get(key)
    if hit is not None:
        return hit
    rows = session.execute(
        select(Item.id, Item.external_id).where(Item.org_id == org.id).order_by(Item.id)
    ).all()
    db_ids = np.array([r[0] for r in rows], dtype=np.int64)
    ext = [r[1] for r in rows]
    links = np.array(
        session.execute(
            select(ItemConcept.item_id, ItemConcept.concept_id)
            .join(Item, Item.id == ItemConcept.item_id)
            .where(Item.org_id == org.id)
        ).all(),
        dtype=np.int64,
    ).reshape(-1, 2)
    cdb = ctx.cat.concept_db
    ipos = np.searchsorted(db_ids, links[:, 0])
    cpos = np.searchsorted(cdb, links[:, 1])
    ok = (cpos < len(cdb)) & (cdb[np.minimum(cpos, max(len(cdb) - 1, 0))] == links[:, 1])
    ipos, cpos = ipos[ok], cpos[ok]
    order = np.lexsort((cpos, ipos))
    ipos, cpos = ipos[order], cpos[order]
    start = np.zeros(len(db_ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(ipos, minlength=len(db_ids)), out=start[1:])
    idx = _ItemIndex(db_ids, ext, ctx.model.item_idx(ext), start, cpos.astype(np.int64))
    return _ITEMS.put(key, idx)


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _epoch(session: Session, col: Any) -> Any:
    """Seconds since 1970 (UTC) of a timestamp column, computed by the database."""
    if _dialect(session) == "sqlite":
        return (func.julianday(col) - 2440587.5) * 86400.0
    return cast(func.extract("epoch", col), Float)


def _ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + l) for every (s, l)."""
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    shift = np.repeat(starts - (np.cumsum(lens) - lens), lens)
    return np.arange(total, dtype=np.int64) + shift


def _pad(lens: np.ndarray, *flat: np.ndarray) -> tuple[np.ndarray, ...]:
    """Flat per-learner arrays (learner-major, ``lens`` each) as ``[n, max(lens)]``."""
    n, t_max = len(lens), max(int(lens.max()) if len(lens) else 0, 1)
    rows = np.repeat(np.arange(n), lens)
    cols = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
    out = []
    for a in flat:
        p = np.zeros((n, t_max), dtype=a.dtype)
        p[rows, cols] = a
        out.append(p)
    return tuple(out)


# ---------------------------------------------------------------------- group members
@dataclass
class _Members:
    ids: np.ndarray  # [L] learner db ids, ordered by external id
    ext: list[str]
    names: list[str]
    n_answers: np.ndarray  # [L]
    first_seen: np.ndarray  # [L] epoch seconds (nan: none)
    #: the last answer with a real time (imported answers of learners without a clock carry
    #: a synthetic one, :data:`tutor.importer.SOURCE_UNTIMED`, and do not count)
    last_answer: list[datetime | None]

    @property
    def fingerprint(self) -> tuple[int, int, str]:
        """Who the members are and how many answers each has (a digest of both arrays): a
        cached result for the group is current exactly when this is unchanged."""
        h = hashlib.blake2b(self.ids.tobytes(), digest_size=16)
        h.update(self.n_answers.astype(np.int64).tobytes())
        return (len(self.ids), int(self.n_answers.sum()), h.hexdigest())

    def label(self, k: int) -> str:
        """What a teacher reads: the display name where the organisation gave one."""
        return self.names[k] or self.ext[k]

    @property
    def latest(self) -> datetime | None:
        """The group's own latest timed answer (its clock, for imported histories)."""
        times = [t for t in self.last_answer if t is not None]
        return max(times) if times else None


def _members(session: Session, group: Group) -> _Members:
    from .importer import SOURCE_UNTIMED

    # the newest answer with a real time: the (learner, time) index read backwards, stopping
    # at the first answer not imported without a clock
    last = (
        select(Interaction.timestamp)
        .where(
            Interaction.learner_id == Learner.id,
            # a literal, not a bound parameter: the planners match it to the partial index
            # ix_interactions_learner_timed only then
            Interaction.source != literal_column(f"'{SOURCE_UNTIMED}'"),
        )
        .order_by(Interaction.timestamp.desc())
        .limit(1)
        .correlate(Learner)
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            Learner.id,
            Learner.external_id,
            Learner.name,
            Learner.n_answers,
            Learner.first_seen,
            last,
        )
        .join(GroupMembership, GroupMembership.learner_id == Learner.id)
        .where(GroupMembership.group_id == group.id)
        .order_by(Learner.external_id)
    ).all()
    return _Members(
        ids=np.array([r[0] for r in rows], dtype=np.int64),
        ext=[r[1] for r in rows],
        names=[r[2] or "" for r in rows],
        n_answers=np.array([r[3] or 0 for r in rows], dtype=np.int64),
        first_seen=np.array(
            [as_utc(r[4]).timestamp() if r[4] is not None else np.nan for r in rows],
            dtype=np.float64,
        ),
        last_answer=[as_utc(r[5]) if isinstance(r[5], datetime) else _parse(r[5]) for r in rows],
    )


def _parse(v: Any) -> datetime | None:
    """A timestamp a scalar subquery returned as text (SQLite without type information)."""
    if v is None:
        return None
    return as_utc(datetime.fromisoformat(str(v)))


def _fetch_answers(
    session: Session, *, group_id: int | None = None, learner_ids: np.ndarray | None = None
) -> np.ndarray:
    """``[N, 4]`` float64 (learner id, item id, correct, epoch seconds) in event order per
    learner (learners in id order): one ordered query over the (learner, time) index."""
    cols = (
        Interaction.learner_id,
        Interaction.item_id,
        Interaction.correct,
        _epoch(session, Interaction.timestamp),
    )
    order = (Interaction.learner_id, Interaction.timestamp, Interaction.event_id)
    queries = []
    if group_id is not None:
        queries.append(
            select(*cols)
            .join(GroupMembership, GroupMembership.learner_id == Interaction.learner_id)
            .where(GroupMembership.group_id == int(group_id))
            .order_by(*order)
        )
    else:
        ids = np.sort(np.asarray(learner_ids, dtype=np.int64))
        for s in range(0, len(ids), 500):
            chunk = [int(x) for x in ids[s : s + 500]]
            queries.append(select(*cols).where(Interaction.learner_id.in_(chunk)).order_by(*order))
    parts = [_raw_rows(session, q) for q in queries]
    n = sum(len(p) for p in parts)
    flat = itertools.chain.from_iterable(itertools.chain.from_iterable(parts))
    return np.fromiter(flat, dtype=np.float64, count=4 * n).reshape(n, 4)


def _raw_rows(session: Session, stmt: Any) -> list[tuple]:
    """Rows of a query as the driver's plain tuples, in the session's transaction (no
    per-row result objects: 200,000 rows cost the driver's time only). The statement's
    parameters are integers, rendered inline."""
    conn = session.connection()
    sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    cur = conn.connection.cursor()
    try:
        cur.execute(sql)
        return cur.fetchall()
    finally:
        cur.close()


# ---------------------------------------------------------------------- predictions
@torch.no_grad()
def _predict_before(
    model: LoadedModel, lens: np.ndarray, item_idx: np.ndarray, correct: np.ndarray, t: np.ndarray
) -> np.ndarray:
    """The model's success probability for every answer from the answers before it (batch
    forward over length-bucketed batches); nan for items the model does not know."""
    n_users = len(lens)
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    seqs = Sequences(
        users=np.arange(n_users).astype(object),
        offsets=offsets,
        item=item_idx.astype(np.int64),
        correct=correct.astype(np.int8),
        time=t.astype(np.float64),
        split=np.full(n_users, None, dtype=object),
        fold=np.full(n_users, np.nan),
        has_time=model.time_unit == "days",
    )
    p = np.full(len(item_idx), np.nan, dtype=np.float32)
    users = np.flatnonzero(lens > 0)
    for batch in iter_batches(seqs, users, batch_tokens=FORWARD_TOKENS, max_batch=1024):
        prob = torch.sigmoid(model.model(batch)).numpy()
        mask = batch.mask.numpy()
        pos = offsets[batch.users][:, None] + np.arange(mask.shape[1])[None, :]
        p[pos[mask]] = prob[mask]
    p[item_idx == 0] = np.nan
    return p


@dataclass
class _Replay:
    """A group's answers (members in order, each in event order) with predictions."""

    lens: np.ndarray  # [L]
    item_db: np.ndarray  # [N]
    ipos: np.ndarray  # [N] positions in the item index
    correct: np.ndarray  # [N] int8
    t: np.ndarray  # [N] epoch seconds
    p: np.ndarray  # [N] predicted success before the answer (nan: unknown item)

    @property
    def learner(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.lens)), self.lens)


def _group_replay(
    session: Session, ctx: _Context, items: _ItemIndex, group: Group, members: _Members
) -> _Replay:
    model = ctx.model
    seqs: list[_Seq | None] = [
        _SEQS.get((ctx.scope, model.model_id, int(lid), int(n)))
        for lid, n in zip(members.ids, members.n_answers, strict=True)
    ]
    need = np.array([k for k, s in enumerate(seqs) if s is None], dtype=np.int64)
    if len(need):
        # PostgreSQL plans the join with the membership table well for any group size;
        # SQLite would scan every answer of the database in index order, so it gets the
        # learners' ids (a range of the (learner, time) index each)
        whole = len(need) * 2 > len(members.ids) and _dialect(session) != "sqlite"
        if whole:
            raw = _fetch_answers(session, group_id=group.id)
        else:
            raw = _fetch_answers(session, learner_ids=members.ids[need])
        lid = raw[:, 0].astype(np.int64)
        want = members.ids[need]
        lo = np.searchsorted(lid, want, side="left")
        hi = np.searchsorted(lid, want, side="right")
        rows = _ranges(lo, hi - lo)
        lens = hi - lo
        item_db = raw[rows, 1].astype(np.int64)
        correct = raw[rows, 2].astype(np.int8)
        t = raw[rows, 3]
        idx = items.model_idx[items.positions(item_db)]
        p = _predict_before(model, lens, idx, correct, t)
        offsets = np.concatenate([[0], np.cumsum(lens)])
        for j, k in enumerate(need):
            s, e = offsets[j], offsets[j + 1]
            seq = _Seq(item_db[s:e], correct[s:e], t[s:e], p[s:e])
            seqs[k] = seq
            _SEQS.put((ctx.scope, model.model_id, int(members.ids[k]), int(e - s)), seq)
    done = [s for s in seqs if s is not None]
    lens = np.array([len(s.p) for s in done], dtype=np.int64)

    def cat(name: str, dtype: Any) -> np.ndarray:
        parts = [getattr(s, name) for s in done]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

    item_db = cat("item_db", np.int64)
    return _Replay(
        lens=lens,
        item_db=item_db,
        ipos=items.positions(item_db),
        correct=cat("correct", np.int8),
        t=cat("t", np.float64),
        p=cat("p", np.float32),
    )


@dataclass
class _GroupStats:
    """Everything derived from a group's replay that the curves and item routes need."""

    replay: _Replay
    # per (answer, concept of its item): concept position, opportunity, answer row
    e_concept: np.ndarray
    e_opp: np.ndarray
    e_row: np.ndarray
    # per item position: attempts, learners, successes, predicted sums (known items)
    attempts: np.ndarray
    learners: np.ndarray
    successes: np.ndarray
    p_n: np.ndarray
    p_sum: np.ndarray
    p_var: np.ndarray


def _group_stats(
    session: Session, org: Organisation, ctx: _Context, group: Group, members: _Members
) -> _GroupStats:
    key = (ctx.scope, "stats", group.id, ctx.model.model_id, ctx.cat.version)
    hit = _current(key, members)
    if hit is not None:
        return hit
    items = _item_index(session, org, ctx)
    rep = _group_replay(session, ctx, items, group, members)
    n = len(rep.p)
    # explode answers into (answer, concept) pairs
    cnt = items.link_start[rep.ipos + 1] - items.link_start[rep.ipos]
    e_row = np.repeat(np.arange(n, dtype=np.int64), cnt)
    e_concept = items.link_concept[_ranges(items.link_start[rep.ipos], cnt)]
    # opportunity: rank of the answer among the learner's answers on the concept
    order = np.argsort(e_concept, kind="stable")  # rows stay learner-major, in event order
    learner = rep.learner
    c_s, l_s = e_concept[order], learner[e_row[order]]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (c_s[1:] != c_s[:-1]) | (l_s[1:] != l_s[:-1])
    ar = np.arange(len(order))
    start = np.maximum.accumulate(np.where(new, ar, 0)) if len(order) else ar
    e_opp = np.empty(len(order), dtype=np.int64)
    e_opp[order] = ar - start + 1
    # per item
    n_items = len(items.db_ids)
    known = ~np.isnan(rep.p)
    pk = np.where(known, rep.p, 0.0).astype(np.float64)
    pairs = np.unique(learner * max(n_items, 1) + rep.ipos)
    stats = _GroupStats(
        replay=rep,
        e_concept=e_concept,
        e_opp=e_opp,
        e_row=e_row,
        attempts=np.bincount(rep.ipos, minlength=n_items),
        learners=np.bincount(pairs % max(n_items, 1), minlength=n_items),
        successes=np.bincount(rep.ipos, weights=rep.correct, minlength=n_items),
        p_n=np.bincount(rep.ipos, weights=known, minlength=n_items),
        p_sum=np.bincount(rep.ipos, weights=pk, minlength=n_items),
        p_var=np.bincount(rep.ipos, weights=pk * (1 - pk), minlength=n_items),
    )
    return _keep(key, members, stats)


# ---------------------------------------------------------------------- current states
def _time_values(
    model: LoadedModel, lens: np.ndarray, t: np.ndarray, first_seen: np.ndarray
) -> np.ndarray:
    """:meth:`LoadedModel.time_value` of flat answers (learner-major): days since the
    learner's first answer (or ``first_seen`` when earlier), or the answer's position."""
    starts = np.cumsum(lens) - lens
    pos = np.arange(int(lens.sum())) - np.repeat(starts, lens)
    if model.time_unit == "answers" or not len(t):
        return pos.astype(np.float64)
    first_t = t[np.minimum(starts, len(t) - 1)]
    first = np.fmin(first_seen, first_t)  # fmin: a missing first_seen gives the first answer
    return np.maximum(t - np.repeat(first, lens), 0.0) / SECONDS_PER_DAY


def _rebuild_states(
    session: Session, ctx: _Context, items: _ItemIndex, members: _Members, which: list[int]
) -> list[bytes]:
    """Replay the histories of some members together; returns their state bytes and keeps
    the rebuilt rows (the request ends with ``service.keep_rebuilt_states``)."""
    from .evidence import dump as evidence_dump
    from .operations import _histories
    from .service import concepts_of_items, replay_histories

    model = ctx.model
    ids = [int(x) for x in members.ids[which]]
    by_learner = _histories(session, ids)
    hists = [by_learner[i] for i in ids]
    learners = {lr.id: lr for lr in session.scalars(select(Learner).where(Learner.id.in_(ids)))}
    firsts = []
    for i, h in zip(ids, hists, strict=True):
        first = as_utc(learners[i].first_seen)
        if h and (first is None or h[0][2] < first):
            first = h[0][2]
        firsts.append(first)
    concepts_of = concepts_of_items(
        session,
        org_id=next(iter(learners.values())).org_id,
        item_ext=[x[0] for h in hists for x in h],
    )
    with torch.no_grad():
        replayed = replay_histories(model, hists, firsts, concepts_of)
    out = []
    rebuilt = session.info.setdefault("rebuilt", [])
    for learner_id, h, (st, ev) in zip(ids, hists, replayed, strict=True):
        blob = model.encode(st)
        out.append(blob)
        row = session.get(LearnerState, (learner_id, model.model_id))
        if row is None:
            row = LearnerState(learner_id=learner_id, model_id=model.model_id, state=b"")
            session.add(row)
        row.state, row.n_applied, row.evidence = blob, len(h), evidence_dump(ev)
        row.last_timestamp = h[-1][2] if h else None
        row.last_event_id = h[-1][3] if h else None
        rebuilt.append(row)
    return out


def _at_times(model: LoadedModel, members: _Members, at: datetime | None) -> np.ndarray | None:
    """Per member, :meth:`LoadedModel.time_value` of ``at`` (None: at each last answer)."""
    if at is None or not model.forgets:
        return None
    days = (as_utc(at).timestamp() - members.first_seen) / SECONDS_PER_DAY
    return np.maximum(days, 0.0)


# ---------------------------------------------------------------------- group mastery grid
def group_mastery(
    session: Session,
    *,
    org: Organisation,
    group: Group,
    at: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
    settings: Any = None,
) -> dict[str, Any]:
    """Learners x concepts (the model's concepts, in curriculum order): each cell's status and
    reported mastery as ``GET /v1/learners/{id}/mastery`` gives them (the learner's own
    evidence where it answered the concept, the model's estimate, on the organisation's
    scale, where not) with the number of own answers; a page of learners, with per-concept
    means and status counts over every member. ``at`` (models that forget) moves the
    estimates to that time."""
    from .teaching import STATUSES, group_status, rule_json, rule_text

    ctx = _context(session, org)
    members = _members(session, group)
    gs = group_status(
        session, org=org, ctx=ctx, group=group, members=members, settings=settings, at=at
    )
    grid = gs.mastery
    n = len(members.ids)
    page = range(offset, min(offset + limit, n))
    learner_mean = _nanmean(grid, 1) if grid.shape[1] and n else np.full(n, np.nan)
    concept_means = _nanmean(grid, 0) if n else np.full(len(gs.cols), np.nan)
    counts = gs.counts(0)
    return {
        "group": {"id": group.external_id, "name": group.name, "learners": n},
        "model": ctx.model_ref(),
        "at": at.isoformat() if at is not None else None,
        "scale": gs.scale,
        "rule": rule_json(gs.rule),
        "rule_text": rule_text(gs.rule),
        "concepts": ctx.concept_refs(gs.cols),
        "learners": [
            {
                "learner_id": members.ext[k],
                "name": members.names[k],
                "mastery": [_rnd(x) for x in grid[k].tolist()],
                "status": [STATUSES[x] for x in gs.status[k].tolist()],
                "answers": gs.answers[k].tolist(),
                "mean": _rnd(learner_mean[k]),
                "n_answers": int(members.n_answers[k]),
                "last_answer": _iso(members.last_answer[k]),
            }
            for k in page
        ],
        "concept_means": [_rnd(x) for x in concept_means.tolist()],
        "concept_counts": {
            **{s: v.tolist() for s, v in counts.items()},
            "practised": (gs.answers > 0).sum(0).tolist(),
        },
        "offset": offset,
        "limit": limit,
    }


# ---------------------------------------------------------------------- learner timeline
def _concept_positions(ctx: _Context, ids: list[str]) -> list[int]:
    pos = {c: k for k, c in enumerate(ctx.cat.concept_ext)}
    unknown = [c for c in ids if c not in pos]
    if unknown:
        raise Invalid(f"unknown concept(s): {', '.join(unknown)}")
    return [pos[c] for c in dict.fromkeys(ids)]


def learner_timeline(
    session: Session,
    *,
    org: Organisation,
    learner: Learner,
    concepts: list[str] | None = None,
    max_points: int = 500,
    settings: Any = None,
) -> dict[str, Any]:
    """The learner's answers in event order with, after each, some concepts' mastery as
    ``GET /mastery`` reported it then (own evidence where the learner had answered the
    concept, else the model's estimate on the organisation's scale; both given, with the own
    answers so far), from the one replay of the stored history (at most ``max_points``
    points, evenly spaced, always the last). ``timed``
    says whether the answers carry real times (dates on the x axis) or not (imported without
    a clock: answer numbers)."""
    from .teaching import mastery_scale

    ctx = _context(session, org)
    items = _item_index(session, org, ctx)
    model = ctx.model
    key = (
        ctx.scope,
        learner.id,
        model.model_id,
        ctx.cat.version,
        int(learner.n_answers or 0),
        max_points,
    )
    entry = _TIMELINE.get(key)
    if entry is None:
        entry = _TIMELINE.put(key, _replay_learner(session, ctx, items, learner, max_points))
    hist, chosen, mastery, own, counts = entry
    scale = mastery_scale(org, settings)
    if scale == "reachable" and len(mastery):
        mastery = ctx.model.scaled_mastery(mastery)
    if concepts is None:
        cidx = ctx.view["concept_idx"]
        cand = np.flatnonzero((counts > 0) & (cidx > 0))
        rank = {p: k for k, p in enumerate(ctx.view["curriculum_pos"])}
        cand = sorted(cand.tolist(), key=lambda p: (-counts[p], rank.get(p, p)))
        positions = cand[:TIMELINE_CONCEPTS]
    else:
        positions = _concept_positions(ctx, concepts)
    midx = ctx.view["concept_idx"][positions] if positions else np.zeros(0, dtype=np.int64)
    known = midx > 0
    cols = mastery[:, midx] if len(positions) else np.zeros((len(chosen), 0))
    ext = [ctx.cat.concept_ext[p] for p in positions]
    points = []
    for r, j in enumerate(chosen.tolist()):
        ev, ts, item_pos, correct, _ = hist[j]
        cs = items.link_concept[items.link_start[item_pos] : items.link_start[item_pos + 1]]
        estimate = [_rnd(v) if ok else None for v, ok in zip(cols[r].tolist(), known, strict=True)]
        mine = own[r]
        points.append(
            {
                "index": j + 1,
                "event_id": ev,
                "timestamp": _iso(ts),
                "item_id": items.ext[item_pos],
                "correct": int(correct),
                "concepts": [ctx.cat.concept_ext[c] for c in cs.tolist()],
                # what /mastery reported after this answer: own evidence, else the estimate
                "mastery": [
                    _rnd(mine[c][0]) if c in mine else e for c, e in zip(ext, estimate, strict=True)
                ],
                "answers": [mine[c][1] if c in mine else 0 for c in ext],
                "estimate": estimate,
            }
        )
    return {
        "learner_id": learner.external_id,
        "model": ctx.model_ref(),
        "concepts": ctx.concept_refs(positions),
        "scale": scale,
        "timed": bool(hist) and all(h[4] for h in hist),
        "points": points,
    }


@torch.no_grad()
def _replay_learner(
    session: Session, ctx: _Context, items: _ItemIndex, learner: Learner, max_points: int
) -> tuple[list[tuple], np.ndarray, np.ndarray, list[dict[str, tuple[float, int]]], np.ndarray]:
    """The learner's history through the one replay (:func:`tutor.service.replay_histories`):
    at each chosen answer the model's concept mastery ``[points, C + 1]`` (success scale) and
    the own evidence so far (concept id -> (evidence mastery, own answers))."""
    from .importer import SOURCE_UNTIMED
    from .service import concepts_of_items, replay_histories

    model = ctx.model
    rows = session.execute(
        select(
            Interaction.event_id,
            Interaction.timestamp,
            Interaction.item_id,
            Interaction.correct,
            Interaction.source,
        )
        .where(Interaction.learner_id == learner.id)
        .order_by(Interaction.timestamp, Interaction.event_id)
    ).all()
    n = len(rows)
    item_pos = items.positions(np.array([r[2] for r in rows], dtype=np.int64))
    hist = [
        (r[0], as_utc(r[1]), int(p), int(r[3]), r[4] != SOURCE_UNTIMED)
        for r, p in zip(rows, item_pos.tolist(), strict=True)
    ]
    counts = np.zeros(len(ctx.cat.concept_ext), dtype=np.int64)
    if n:
        cnt = items.link_start[item_pos + 1] - items.link_start[item_pos]
        cs = items.link_concept[_ranges(items.link_start[item_pos], cnt)]
        counts = np.bincount(cs, minlength=len(ctx.cat.concept_ext))
    if n == 0:
        empty = np.zeros((0, 1), dtype=np.float32)
        return hist, np.zeros(0, dtype=np.int64), empty, [], counts
    chosen = (
        np.arange(n)
        if n <= max_points
        else np.unique(np.round(np.linspace(0, n - 1, max_points)).astype(np.int64))
    )
    first = as_utc(learner.first_seen)
    if first is None or hist[0][1] < first:
        first = hist[0][1]
    keep = np.zeros(n, dtype=bool)
    keep[chosen] = True
    replay = [(items.ext[h[2]], h[3], h[1], h[0]) for h in hist]
    concepts_of = concepts_of_items(session, org_id=learner.org_id, item_ext=[x[0] for x in replay])
    snaps: list[Any] = []
    own: list[dict[str, tuple[float, int]]] = []

    def capture(t: int, state: Any, evs: list[Any]) -> None:
        if keep[t]:
            snaps.append(state)
            own.append({c: (e.p, e.n) for c, e in evs[0].items()})

    replay_histories(model, [replay], [first], concepts_of, after_step=capture)
    mastery = concept_mastery_many(model, stack_states(model, snaps))
    return hist, chosen, mastery, own, counts


# ---------------------------------------------------------------------- learning curves
def learning_curves(
    session: Session,
    *,
    org: Organisation,
    group: Group,
    concepts: list[str] | None = None,
    max_opportunity: int = 20,
    settings: Any = None,
) -> dict[str, Any]:
    """Per concept, error rate by practice opportunity (DataShop style): observed (with its
    95% Wilson interval), and predicted by the model before each answer, with the number of
    learners at each point. Points with fewer than ``curve_min_learners`` learners are left
    out (counted in ``hidden_points``): a rate over a handful of learners is noise."""
    from .teaching import wilson

    min_learners = int(setting(org, "curve_min_learners", settings))
    ctx = _context(session, org)
    members = _members(session, group)
    st = _group_stats(session, org, ctx, group, members)
    rep = st.replay
    n_c = len(ctx.cat.concept_ext)
    if concepts is None:
        practised = np.bincount(st.e_concept, minlength=n_c) > 0
        rank = ctx.view["curriculum_pos"]
        positions = [int(p) for p in rank if practised[p]]
    else:
        positions = _concept_positions(ctx, concepts)
    sel = st.e_opp <= max_opportunity
    c, o, r = st.e_concept[sel], st.e_opp[sel] - 1, st.e_row[sel]
    key = c * max_opportunity + o
    size = n_c * max_opportunity
    n = np.bincount(key, minlength=size)
    ok = np.bincount(key, weights=rep.correct[r], minlength=size)
    p = rep.p[r]
    known = ~np.isnan(p)
    pn = np.bincount(key[known], minlength=size)
    ps = np.bincount(key[known], weights=p[known].astype(np.float64), minlength=size)
    curves = []
    for pos in positions:
        pts, hidden = [], 0
        for k in range(max_opportunity):
            i = pos * max_opportunity + k
            if n[i] == 0:
                continue
            if n[i] < min_learners:
                hidden += 1
                continue
            lo, hi = wilson(n[i] - ok[i], n[i])
            pts.append(
                {
                    "opportunity": k + 1,
                    "learners": int(n[i]),
                    "observed_error": _rnd(1.0 - ok[i] / n[i]),
                    "observed_low": _rnd(lo),
                    "observed_high": _rnd(hi),
                    "predicted_error": _rnd(1.0 - ps[i] / pn[i]) if pn[i] else None,
                }
            )
        curves.append(
            {
                "concept_id": ctx.cat.concept_ext[pos],
                "name": ctx.cat.name(pos),
                "points": pts,
                "hidden_points": hidden,
            }
        )
    return {
        "group": {"id": group.external_id, "name": group.name, "learners": len(members.ids)},
        "model": ctx.model_ref(),
        "max_opportunity": max_opportunity,
        "min_learners": min_learners,
        "curves": curves,
    }


# ---------------------------------------------------------------------- item statistics
ITEM_SORTS = ("attempts", "observed_success", "predicted_success", "gap")


def _item_parameters(model: LoadedModel) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """The model's own per-item difficulty and discrimination (indexed by model item), if
    it has them, and what the difficulty column means."""
    m = model.model
    diff, disc = m.item_parameters()
    if diff is not None:
        d = diff.detach().cpu().numpy().astype(np.float64)
        dd = None if disc is None else disc.detach().cpu().numpy().astype(np.float64)
        return d, dd, f"the {m.name} model's item difficulty parameter (logit scale)"
    return None, None, "1 - mean predicted success over the attempts"


def item_statistics(
    session: Session,
    *,
    org: Organisation,
    group: Group,
    sort: str = "attempts",
    desc: bool = True,
    limit: int = 50,
    offset: int = 0,
    settings: Any = None,
) -> dict[str, Any]:
    """Per item answered by the group: attempts, learners, observed and predicted success
    (the model's prediction before each attempt), difficulty, discrimination; flagged when
    observed success is more than ``item_flag_z`` standard errors from the predicted one
    (Poisson-binomial variance given the predictions) over at least
    ``item_flag_min_attempts`` attempts by at least ``item_flag_min_learners`` learners. The
    observed success comes with its 95% Wilson interval."""
    from .teaching import wilson

    if sort not in ITEM_SORTS:
        raise Invalid(f"unknown sort {sort!r}; expected one of {', '.join(ITEM_SORTS)}")
    ctx = _context(session, org)
    members = _members(session, group)
    st = _group_stats(session, org, ctx, group, members)
    items = _item_index(session, org, ctx)
    min_attempts = int(setting(org, "item_flag_min_attempts", settings))
    z_max = float(setting(org, "item_flag_z", settings))
    min_learners = int(setting(org, "item_flag_min_learners", settings))
    pos = np.flatnonzero(st.attempts > 0)
    att = st.attempts[pos].astype(np.float64)
    obs = st.successes[pos] / att
    pn = st.p_n[pos]
    with np.errstate(invalid="ignore", divide="ignore"):
        pred = np.where(pn > 0, st.p_sum[pos] / np.maximum(pn, 1), np.nan)
        # observed successes over the predicted attempts vs their expectation
        obs_k = np.where(pn > 0, st.successes[pos], np.nan)
        z = (obs_k - st.p_sum[pos]) / np.sqrt(st.p_var[pos])
    gap = obs - pred
    d_param, disc_param, d_source = _item_parameters(ctx.model)
    midx = items.model_idx[pos]
    known_param = d_param is not None
    difficulty = np.where(midx > 0, d_param[midx], np.nan) if known_param else 1.0 - pred
    disc = np.where(midx > 0, disc_param[midx], np.nan) if disc_param is not None else None
    enough = (att >= min_attempts) & (st.learners[pos] >= min_learners)
    flagged = enough & (pn == att) & np.isfinite(z) & (np.abs(z) > z_max)
    key = {
        "attempts": att,
        "observed_success": obs,
        "predicted_success": pred,
        "gap": np.abs(gap),
    }[sort]
    key = np.where(np.isnan(key), -np.inf if desc else np.inf, key)
    order = np.lexsort((np.array(items.ext, dtype=object)[pos].astype(str), -key if desc else key))
    page = order[offset : offset + limit]
    out = []
    for k in page.tolist():
        ip = int(pos[k])
        cs = items.link_concept[items.link_start[ip] : items.link_start[ip + 1]]
        reason = None
        if flagged[k]:
            how = "easier" if gap[k] > 0 else "harder"
            reason = (
                f"{how} than the model predicts: observed success {obs[k]:.2f} vs predicted "
                f"{pred[k]:.2f} over {int(att[k])} attempts (z = {z[k]:.1f}, threshold {z_max:g})"
            )
        lo, hi = wilson(st.successes[ip], att[k])
        out.append(
            {
                "item_id": items.ext[ip],
                "concepts": [ctx.cat.concept_ext[c] for c in cs.tolist()],
                "concept_names": [ctx.cat.name(c) for c in cs.tolist()],
                "attempts": int(att[k]),
                "learners": int(st.learners[ip]),
                "observed_success": _rnd(obs[k]),
                "observed_low": _rnd(lo),
                "observed_high": _rnd(hi),
                "enough_data": bool(enough[k]),
                "predicted_success": _rnd(pred[k]),
                "difficulty": _rnd(difficulty[k]),
                "discrimination": _rnd(disc[k]) if disc is not None else None,
                "flagged": bool(flagged[k]),
                "flag_reason": reason,
            }
        )
    return {
        "group": {"id": group.external_id, "name": group.name, "learners": len(members.ids)},
        "model": ctx.model_ref(),
        "difficulty_source": d_source,
        "thresholds": {
            "item_flag_min_attempts": min_attempts,
            "item_flag_min_learners": min_learners,
            "item_flag_z": z_max,
        },
        "items": out,
        "total": int(len(pos)),
        "offset": offset,
        "limit": limit,
    }


# ---------------------------------------------------------------------- learners at risk
def at_risk(
    session: Session,
    *,
    org: Organisation,
    group: Group,
    settings: Any = None,
    now: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> dict[str, Any]:
    """Members who need attention, each reason weighed (:data:`RISK_WEIGHTS`) and the most
    pressing first: concepts they struggle with (the evidence statuses), low mean mastery on
    the concepts they practised (their own evidence, the reported mastery of the grid; with at
    least ``mastery_min_answers`` own answers), the model's estimate over the concepts the
    group practised falling over their last ``risk_window_answers`` answers (``mastery_change``
    is that change, on the estimate, not on the evidence of ``mean_mastery``), no answers, and
    inactivity.

    Inactivity counts only answers with real times (imported answers of learners without a
    clock have none) and is measured against the group's own clock: ``now`` while the group is
    active (its latest answer within ``risk_inactive_days``), else the group's latest answer,
    so an imported history separates the learners who stopped early instead of flagging
    everybody. Everything else is read at each learner's last answer."""
    from .teaching import MASTERED, STRUGGLING, group_status

    ctx = _context(session, org)
    model = ctx.model
    low = float(setting(org, "risk_low_mastery", settings))
    drop = float(setting(org, "risk_mastery_drop", settings))
    window = int(setting(org, "risk_window_answers", settings))
    inactive = float(setting(org, "risk_inactive_days", settings))
    members = _members(session, group)
    ref, live = activity_reference(members, now, inactive)
    st = _group_stats(session, org, ctx, group, members)
    # statuses and estimates at each learner's last answer (for models that forget too: the
    # reasons are about the learner's work, inactivity says the rest), shared with the
    # class overview's cache entry
    gs = group_status(session, org=org, ctx=ctx, group=group, members=members, settings=settings)
    practised = np.flatnonzero((gs.answers > 0).any(0))
    n = len(members.ids)
    mean_now = np.full(n, np.nan)
    change = np.full(n, np.nan)
    n_own = n_own_answers = np.zeros(n, dtype=np.int64)
    if n and len(practised):
        # low mastery is judged on what the learner practised (own evidence): the estimates of
        # concepts it never met say nothing about it (and a learner without answers has only
        # the model's prior: "no answers yet" says that)
        own = gs.answers > 0
        n_own = own.sum(1)
        n_own_answers = gs.answers.sum(1)
        with np.errstate(invalid="ignore"):
            mean_now = np.where(
                n_own > 0, np.where(own, gs.mastery, 0.0).sum(1) / np.maximum(n_own, 1), np.nan
            )
        key = (ctx.scope, "before", group.id, model.model_id, window)
        m_then = _current(key, members)
        if m_then is None:
            then = _states_before(session, org, ctx, members, st.replay, window)
            m_then = _keep(key, members, concept_mastery_many(model, then))
        if gs.scale == "reachable":
            m_then = model.scaled_mastery(m_then)
        # the change of the model's estimate, over the practised concepts the model knows
        cidx = ctx.view["concept_idx"][np.asarray(gs.cols)[practised]]
        known = practised[cidx > 0]
        if len(known):
            was = np.asarray(m_then, dtype=np.float64)[:, cidx[cidx > 0]].mean(1)
            now_est = gs.estimate[:, known].mean(1)
            change = np.where(members.n_answers > 0, now_est - was, np.nan)
    days = inactive_days(members, ref)
    rule = gs.rule
    when = "" if live or ref is None else f" before the group's latest answer ({ref.date()})"
    flagged = []
    for k in range(n):
        reasons: list[tuple[float, str]] = []
        for j in np.flatnonzero(gs.status[k] == STRUGGLING).tolist():
            name, run = ctx.cat.name(gs.cols[j]), -int(gs.run[k, j])
            if run >= rule.struggle_run:
                text = f"{run} wrong in a row on {name}"
            else:
                text = (
                    f"no progress on {name} after {gs.answers[k, j]} questions "
                    f"({gs.correct[k, j]} correct)"
                )
            reasons.append((RISK_WEIGHTS["struggling"], text))
        if np.isfinite(mean_now[k]) and mean_now[k] < low and n_own_answers[k] >= rule.min_answers:
            mastered = int((gs.status[k] == MASTERED).sum())
            reasons.append(
                (
                    RISK_WEIGHTS["low_mastery"],
                    f"low mastery: {mean_now[k]:.2f} on average over the {int(n_own[k])} "
                    f"concept{'s' if n_own[k] != 1 else ''} practised ({mastered} mastered; "
                    f"threshold {low:g})",
                )
            )
        if np.isfinite(change[k]) and change[k] < -drop:
            span = (
                f"the last {window} answers"
                if members.n_answers[k] > window
                else "since the first answer"
            )
            reasons.append(
                (
                    RISK_WEIGHTS["falling"],
                    f"falling estimate: the model's mastery estimate {change[k]:+.2f} over "
                    f"{span} (threshold -{drop:g})",
                )
            )
        if members.n_answers[k] == 0:
            reasons.append((RISK_WEIGHTS["no_answers"], "no answers yet"))
        elif np.isfinite(days[k]) and days[k] > inactive:
            reasons.append(
                (
                    RISK_WEIGHTS["inactive"],
                    f"no answer for {days[k]:.0f} days{when} (threshold {inactive:g})",
                )
            )
        if reasons:
            reasons.sort(key=lambda r: -r[0])
            flagged.append((k, reasons))
    flagged.sort(
        key=lambda kr: (
            -sum(w for w, _ in kr[1]),
            np.nan_to_num(mean_now[kr[0]], nan=2.0),
            members.label(kr[0]),
        )
    )
    return {
        "group": {"id": group.external_id, "name": group.name, "learners": n},
        "model": ctx.model_ref(),
        "thresholds": {
            "risk_low_mastery": low,
            "risk_mastery_drop": drop,
            "risk_window_answers": window,
            "risk_inactive_days": inactive,
        },
        "reference_time": _iso(ref),
        "reference": _reference_words(ref, live),
        "timed": ref is not None,
        "covered_concepts": [ctx.cat.concept_ext[gs.cols[j]] for j in practised.tolist()],
        "learners": [
            {
                "learner_id": members.ext[k],
                "name": members.names[k],
                "label": members.label(k),
                "severity": round(sum(w for w, _ in reasons), 2),
                "reasons": [text for _, text in reasons],
                "mean_mastery": _rnd(mean_now[k]),
                "mastery_change": _rnd(change[k]),
                "days_inactive": _rnd(days[k], 4),
                "last_activity": _iso(members.last_answer[k]),
            }
            for k, reasons in flagged[offset : offset + limit]
        ],
        "total": len(flagged),
        "offset": offset,
        "limit": limit,
    }


def activity_reference(
    members: _Members, now: datetime | None, inactive_days: float
) -> tuple[datetime | None, bool]:
    """The time inactivity is measured against, and whether it is now: ``now`` while the
    group is active (its latest timed answer within ``inactive_days``), else the group's own
    latest timed answer (an imported history); None where no answer carries a real time."""
    now = as_utc(now) or utcnow()
    latest = members.latest
    if latest is None:
        return None, False
    live = (now - latest).total_seconds() <= inactive_days * SECONDS_PER_DAY
    return (now if live else latest), live


def inactive_days(members: _Members, ref: datetime | None) -> np.ndarray:
    """Each member's days without a timed answer before ``ref`` (nan: none, or no clock)."""
    return np.array(
        [
            (ref - t).total_seconds() / SECONDS_PER_DAY if ref is not None and t else np.nan
            for t in members.last_answer
        ]
    )


def _reference_words(ref: datetime | None, live: bool) -> str:
    if ref is None:
        return "no answer carries a real time: inactivity is not assessed"
    return "now" if live else "the group's latest answer"


#: how much each at-risk reason weighs (a learner's severity is the sum; each struggling
#: concept counts): what a teacher can act on now first
RISK_WEIGHTS = {
    "struggling": 3.0,
    "falling": 2.0,
    "low_mastery": 2.0,
    "no_answers": 1.0,
    "inactive": 1.0,
}


def _rule(org: Organisation, settings: Any) -> Any:
    from .evidence import EvidenceRule
    from .settings import evidence_rule

    return EvidenceRule() if settings is None else evidence_rule(org.settings, settings)


def _states_before(
    session: Session,
    org: Organisation,
    ctx: _Context,
    members: _Members,
    rep: _Replay,
    window: int,
) -> Any:
    """The batched state of every member ``window`` answers before its last (the initial
    state with fewer answers), cached per learner and answer count. After new answers a
    learner's earlier snapshot (up to :data:`SNAP_CATCH_UP` answers back) is stepped forward
    over the answers it now lacks; a learner without one is replayed in a batch."""
    model = ctx.model
    keys = [
        (ctx.scope, model.model_id, int(lid), int(n), window)
        for lid, n in zip(members.ids, rep.lens, strict=True)
    ]
    blobs = [_SNAPS.get(k) for k in keys]
    starts = np.cumsum(rep.lens) - rep.lens
    missing = [k for k, b in enumerate(blobs) if b is None]
    items = _item_index(session, org, ctx) if missing else None
    for k in missing:
        blobs[k] = _catch_up(ctx, items, members, rep, window, keys[k], k, int(starts[k]))
    need = np.array([k for k, b in enumerate(blobs) if b is None], dtype=np.int64)
    if len(need):
        lens = rep.lens[need]
        rows = _ranges(starts[need], lens)
        times = _time_values(model, lens, rep.t[rows], members.first_seen[need])
        it, cc, tt = _pad(
            lens, items.model_idx[rep.ipos[rows]], rep.correct[rows].astype(np.float32), times
        )
        state = replay_many(model, it, cc, tt, [np.maximum(lens - window, 0)])[0]
        for j, k in enumerate(need.tolist()):
            blobs[k] = model.encode(model.model.state_select(state, torch.tensor([j])))
            _SNAPS.put(keys[k], blobs[k])
    return decode_many(model, blobs)


#: how many answers back a cached snapshot may be and still be stepped forward
SNAP_CATCH_UP = 20


@torch.no_grad()
def _catch_up(
    ctx: _Context,
    items: _ItemIndex,
    members: _Members,
    rep: _Replay,
    window: int,
    key: tuple,
    k: int,
    start: int,
) -> bytes | None:
    """Member ``k``'s snapshot ``window`` answers back, from a snapshot cached some answers
    earlier stepped over the answers between (None when there is none to start from)."""
    model = ctx.model
    n = int(rep.lens[k])
    target = max(n - window, 0)
    for d in range(1, min(n, SNAP_CATCH_UP) + 1):
        old = _SNAPS.get((*key[:3], n - d, window))
        if old is None:
            continue
        done = max(n - d - window, 0)
        if target == done:
            blob = old
        else:
            state = model.decode(old)
            rows = np.arange(start, start + n)
            times = _time_values(model, np.array([n]), rep.t[rows], members.first_seen[[k]])
            idx = items.model_idx[rep.ipos[rows]]
            for j in range(done, target):
                state = model.model.step(
                    state,
                    torch.tensor([int(idx[j])]),
                    torch.tensor([float(rep.correct[rows[j]])]),
                    torch.tensor([float(times[j])], dtype=torch.float32),
                )
            blob = model.encode(state)
        _SNAPS.put(key, blob)
        return blob
    return None


# ---------------------------------------------------------------------- model card
def model_card(session: Session, *, org: Organisation) -> dict[str, Any]:
    """The active model: what it was trained on, how it scored, its calibration, and for
    PSI-KT the learned prerequisite graph and a summary of the learners' traits."""
    ctx = _context(session, org)
    model = ctx.model
    mv = session.get(ModelVersion, model.model_id)
    if mv is None:
        raise NotFound(f"model {model.model_id} not found")
    static = _CARD.get((ctx.scope, mv.id))
    if static is None:
        static = _CARD.put((ctx.scope, mv.id), _static_card(session, ctx, mv))
    traits = None
    if model.model.has_traits:
        traits = _traits_summary(session, ctx)
    return {**static, "traits": traits}


def _no_paths(v: Any) -> Any:
    """The model card without the server's file paths (teachers read it): the run's ``data``
    and the dataset's ``source`` become their last component (the dataset's name)."""
    if isinstance(v, dict):
        return {k: _basename(x) if k == "data" else x for k, x in v.items()}
    return _basename(v)


def _basename(v: Any) -> Any:
    if isinstance(v, str) and ("/" in v or "\\" in v) and "://" not in v:
        return v.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return v


def _static_card(session: Session, ctx: _Context, mv: ModelVersion) -> dict[str, Any]:
    model = ctx.model
    info = mv.info or {}
    blob = session.scalar(select(ModelVersion.checkpoint).where(ModelVersion.id == mv.id))
    payload: dict[str, Any] = {}
    if blob:
        from kt_models.base import read_checkpoint

        payload = read_checkpoint(blob)
    manifest = payload.get("manifest") or {}
    extra = payload.get("extra") or {}
    vocab = model.model.vocab
    training = {
        "run": _no_paths(info.get("run")),
        "time_unit": model.time_unit,
        "dataset": {
            "format": manifest.get("format"),
            "source": _no_paths(manifest.get("source")),
            "created_at": manifest.get("created_at"),
            "counts": manifest.get("counts"),
        }
        if manifest
        else None,
        "vocabulary": {"items": vocab.n_items, "concepts": vocab.n_concepts},
        "checkpoint_epoch": extra.get("epoch"),
        "validation": extra.get("valid"),
    }
    results = info.get("results") or {}
    metrics = None
    if results:
        metrics = {
            "subset": results.get("subset"),
            "protocol": results.get("protocol"),
            "learners": results.get("learners"),
            "test": results.get("test"),
            "multi_step": results.get("multi_step"),
        }
    graph = None
    learned = model.model.prerequisite_graph()
    if learned is not None:
        p = learned.cpu().numpy()
        names = dict(zip(ctx.cat.concept_ext, ctx.cat.concept_name, strict=True))
        src, dst = np.nonzero(p > GRAPH_EDGE_THRESHOLD)
        order = np.argsort(-p[src, dst], kind="stable")
        graph = {
            "threshold": GRAPH_EDGE_THRESHOLD,
            "nodes": [{"concept_id": c, "name": names.get(c, "")} for c in model.concept_ids],
            "edges": [
                {
                    "source": model.concept_ids[int(src[k])],
                    "target": model.concept_ids[int(dst[k])],
                    "probability": _rnd(p[src[k], dst[k]]),
                }
                for k in order.tolist()
            ],
        }
    return _json_safe(
        {
            "model": {
                "id": mv.id,
                "name": mv.name,
                "label": mv.label,
                "created_at": _iso(mv.created_at),
                "sha256": mv.sha256,
                "forgets": model.forgets,
            },
            "training": training,
            "metrics": metrics,
            "calibration": results.get("calibration"),
            "prerequisite_graph": graph,
        }
    )


def _traits_summary(session: Session, ctx: _Context, max_learners: int = 10_000) -> dict:
    """Mean, spread and quantiles of the learners' posterior traits (PSI-KT), over the
    stored states of the organisation's learners for this model (up to ``max_learners``)."""
    model = ctx.model
    width = sum(nb for _, _, nb in model._layout)
    blobs = [
        b
        for b in session.scalars(
            select(LearnerState.state)
            .where(LearnerState.model_id == model.model_id, LearnerState.n_applied > 0)
            .order_by(LearnerState.learner_id)
            .limit(max_learners)
        )
        if len(b) == width
    ]
    prior = {
        k: _rnd(v)
        for k, v in zip(
            ("alpha", "mu", "sigma", "gamma"),
            (float(x) for x in model.model.traits(model.model.trait_prior.detach())),
            strict=True,
        )
    }
    out: dict[str, Any] = {"learners": len(blobs), "prior": prior}
    if blobs:
        traits = model.model.learner_traits(decode_many(model, blobs))
        for name, v in traits.items():
            a = v.detach().cpu().numpy().astype(np.float64)
            q = np.quantile(a, [0.1, 0.5, 0.9])
            out[name] = {
                "mean": _rnd(a.mean()),
                "sd": _rnd(a.std()),
                "p10": _rnd(q[0]),
                "median": _rnd(q[1]),
                "p90": _rnd(q[2]),
            }
    return out


# ---------------------------------------------------------------------- warm-up
def warm_up(
    make_session: sessionmaker[Session],
    *,
    max_groups: int,
    settings: Any = None,
    stop: threading.Event | None = None,
) -> dict[str, float]:
    """Fill the analytics caches ahead of the first dashboard request: for every organisation
    with an active model, its ``max_groups`` largest groups go through
    :func:`learning_curves` (every member's answers read and run through the model once:
    the per-learner prediction cache behind the curves, item statistics and timelines) and
    :func:`at_risk` (the states some answers back, the members' statuses), then the
    suggested groups (which import the clustering library once). Afterwards a request replays
    only the learners who answered since. Read-only: one short read transaction per group; stops
    between groups when ``stop`` is set. Returns ``{"groups", "learners", "seconds"}``."""
    t0 = time.perf_counter()
    done = learners = 0
    # room for every warmed group's results (statistics, statuses, snapshots back, groups)
    # and as many again for the requests
    _GROUP.size = max(_GROUP.size, GROUP_RESULTS_PER_GROUP * 2 * max_groups)
    with make_session() as session:
        orgs = session.execute(
            select(Organisation.id).where(Organisation.active_model_id.is_not(None))
        ).scalars()
        org_ids = list(orgs)
    for org_id in org_ids:
        with make_session() as session:
            size = func.count(GroupMembership.learner_id)
            groups = session.execute(
                select(Group.id)
                .join(GroupMembership, GroupMembership.group_id == Group.id)
                .where(Group.org_id == org_id)
                .group_by(Group.id)
                .order_by(size.desc(), Group.id)
                .limit(max_groups)
            ).scalars()
            group_ids = list(groups)
        for group_id in group_ids:
            if stop is not None and stop.is_set():
                return {"groups": done, "learners": learners, "seconds": time.perf_counter() - t0}
            with make_session() as session:
                org = session.get(Organisation, org_id)
                group = session.get(Group, group_id)
                if org is None or group is None or org.active_model_id is None:
                    continue
                try:
                    out = learning_curves(session, org=org, group=group)
                    at_risk(session, org=org, group=group, settings=settings, limit=1)
                    # the statuses (cached by at_risk) and the clustering library's import
                    from . import teaching

                    teaching.suggested_groups(session, org=org, group=group, settings=settings)
                except NotFound:
                    continue  # the model went away meanwhile
                done += 1
                learners += out["group"]["learners"]
    return {"groups": done, "learners": learners, "seconds": time.perf_counter() - t0}


class Warmer:
    """A daemon thread that runs :func:`warm_up` when kicked: at start-up and after a model
    is activated (``kick``). At most one pass runs at a time; a kick during a pass queues one
    more. ``stop`` ends the thread after the current group."""

    def __init__(
        self, make_session: sessionmaker[Session], *, max_groups: int, settings: Any = None
    ) -> None:
        self.make_session = make_session
        self.max_groups = max_groups
        self.settings = settings
        self.passes = 0
        self.last: dict[str, float] | None = None
        self.idle = threading.Event()
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="tutor-analytics-warm-up", daemon=True
            )
            self._thread.start()
        self.kick()

    def kick(self) -> None:
        self.idle.clear()
        self._kick.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        torch.set_num_threads(1)
        while True:
            self._kick.wait()
            if self._stop.is_set():
                break
            self._kick.clear()
            try:
                self.last = warm_up(
                    self.make_session,
                    max_groups=self.max_groups,
                    settings=self.settings,
                    stop=self._stop,
                )
                log.info(
                    "analytics caches warmed: %d groups, %d learners in %.1f s",
                    self.last["groups"],
                    self.last["learners"],
                    self.last["seconds"],
                )
            except Exception:  # a failed warm-up only costs the first request its speed
                log.exception("analytics warm-up failed")
            self.passes += 1
            if not self._kick.is_set():
                self.idle.set()
