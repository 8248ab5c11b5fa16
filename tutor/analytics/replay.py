"""A group's answers with the model's prediction before each, and the aggregates the
learning curves and item statistics read from them.

The answers are read in one ordered query (timestamps as epoch seconds computed by the
database) and run through the model's batch ``forward`` (its training form, equal to the
serving form to 1e-5) in length-bucketed batches. The result is cached per learner and model
(keyed by the learner's answer count, so a new answer replays that learner only).
Opportunities (the k-th answer of a learner on a concept's items, in event order) come from a
stable sort and a segmented count; attempts, successes and predictions per item by
``np.bincount``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sqlalchemy.orm import Session

from kt_models.data import Sequences
from kt_models.predictions import scored_batches

from ..blocking import checkpoint
from ..db import Group, Organisation
from ..runtime import LoadedModel
from .cache import _SEQS, _Seq
from .context import (
    _Context,
    _current,
    _dialect,
    _fetch_answers,
    _item_index,
    _ItemIndex,
    _keep,
    _Members,
)
from .values import _ranges

#: tokens per batch of the forward pass (memory: DKT needs ~ tokens x concepts floats)
FORWARD_TOKENS = 32_768


@torch.no_grad()
def _predict_before(
    model: LoadedModel, lens: np.ndarray, item_idx: np.ndarray, correct: np.ndarray, t: np.ndarray
) -> np.ndarray:
    """The model's success probability for every answer from the answers before it, each
    learner's first included (the evaluation core's one loop,
    :func:`kt_models.predictions.scored_batches`); nan for items the model does not know."""
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
    for rows, prob in scored_batches(
        model.model,
        seqs,
        torch.device("cpu"),
        first_answers=True,
        users=np.flatnonzero(lens > 0),
        batch_tokens=FORWARD_TOKENS,
        max_batch=1024,
    ):
        p[rows] = prob
        checkpoint()  # a warm-up asked to stop ends here, not after the whole group
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
