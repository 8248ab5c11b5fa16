"""The evaluation core: every run of a model over some learners' histories.

* :func:`scored_batches` is the one loop that computes the prediction before every answer
  (the model's training form, one batched forward over length-bucketed batches). Training's
  validation (:func:`predict_next_step`), ``tutor evaluate`` and ``tutor report``
  (:func:`next_step_answers`) all read it, so that they score the same thing the same way;
* :func:`predict_multi_step` predicts windows of answers ahead through the serving form;
* :func:`final_traits` reads PSI-KT's learner traits after each learner's last answer.

The numbers computed from these predictions live in :mod:`kt_models.evaluate`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .base import KTModel, prediction_mask
from .data import Batch, Sequences, make_batch, plan_batches

#: padded positions and learners per batch of an evaluation forward (see data.plan_batches)
EVAL_BATCH_TOKENS = 65536
EVAL_MAX_BATCH = 1024
#: the learner traits PSI-KT reports (``KTModel.learner_traits``)
TRAITS = ("alpha", "mu", "sigma", "gamma")

#: ``advance(n)``: ``n`` more learners done (a :class:`data_loaders.progress.Progress`'s)
Advance = Callable[[int], None]


@dataclass
class Answers:
    """Every answer of the reported learners, aligned with ``seqs.subset(users)``'s rows."""

    learner: np.ndarray  # [N] index into ``users`` (0..n-1), rows grouped by learner in order
    position: np.ndarray  # [N] 0-based index of the answer in the learner's history
    item: np.ndarray  # [N] item index (1-based)
    y: np.ndarray  # [N] 0/1 answers
    p: np.ndarray  # [N] predicted success probability; nan where not scored (position 0)

    @property
    def scored(self) -> np.ndarray:
        return ~np.isnan(self.p)


def learner_batches(
    seqs: Sequences,
    device: torch.device,
    *,
    users: np.ndarray | None = None,
    batch_tokens: int = EVAL_BATCH_TOKENS,
    max_batch: int = EVAL_MAX_BATCH,
    advance: Advance | None = None,
) -> Iterator[tuple[np.ndarray, Batch]]:
    """Every learner of ``seqs`` (or of ``users``, indices into it) once, in length-bucketed
    batches on ``device``: (the batch's learner indices into ``seqs``, the batch);
    ``advance(len(group))`` after each is used."""
    chosen = np.arange(seqs.n_users) if users is None else users
    for group in plan_batches(seqs, chosen, batch_tokens=batch_tokens, max_batch=max_batch):
        yield group, make_batch(seqs, group).to(device)
        if advance is not None:
            advance(len(group))


def scored_batches(
    model: KTModel,
    seqs: Sequences,
    device: torch.device,
    advance: Advance | None = None,
    *,
    first_answers: bool = False,
    users: np.ndarray | None = None,
    batch_tokens: int = EVAL_BATCH_TOKENS,
    max_batch: int = EVAL_MAX_BATCH,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The prediction before every answer of every learner of ``seqs`` (or of ``users``)
    after their first (``first_answers``: each learner's first answer too, predicted from
    the model's prior, as the analytics' learning curves need): per batch, (the scored
    answers' rows in ``seqs``, their success probabilities, float32), in the order the
    batches are computed. Call it under ``torch.no_grad()``."""
    model.eval()
    for group, b in learner_batches(
        seqs, device, users=users, batch_tokens=batch_tokens, max_batch=max_batch, advance=advance
    ):
        logits = model(b)
        m = b.mask if first_answers else prediction_mask(b)
        rows = seqs.offsets[:-1][group][:, None] + np.arange(b.item.shape[1])[None, :]
        yield rows[m.cpu().numpy()], torch.sigmoid(logits[m]).float().cpu().numpy()


@torch.no_grad()
def next_step_answers(
    model: KTModel,
    seqs: Sequences,
    users: np.ndarray,
    device: torch.device,
    *,
    advance: Advance | None = None,
) -> Answers:
    """Every answer of ``users`` with the prediction made before it (:func:`scored_batches`)."""
    sub = seqs.subset(np.asarray(users, dtype=np.int64))
    learner = np.repeat(np.arange(sub.n_users), sub.lengths())
    p = np.full(sub.n_interactions, np.nan)
    for rows, probs in scored_batches(model, sub, device, advance):
        p[rows] = probs
    return Answers(
        learner=learner,
        position=np.arange(sub.n_interactions) - sub.offsets[:-1][learner],
        item=sub.item.copy(),
        y=sub.correct.astype(np.float64),
        p=p,
    )


@torch.no_grad()
def predict_next_step(
    model: KTModel, seqs: Sequences, users: np.ndarray, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Answers and predicted probabilities (float32) at every scored position of ``users``,
    in the order :func:`scored_batches` computes them (training's validation, ``evaluate``)."""
    sub = seqs.subset(np.asarray(users, dtype=np.int64))
    ys, ps = [], []
    for rows, probs in scored_batches(model, sub, device):
        ys.append(sub.correct[rows].astype(np.float32))
        ps.append(probs)
    if not ys:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(ys), np.concatenate(ps)


@torch.no_grad()
def predict_multi_step(
    model: KTModel,
    seqs: Sequences,
    users: np.ndarray,
    n: int,
    device: torch.device,
    batch_tokens: int = 262144,
    max_batch: int = 2048,
    serving: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(answers, probabilities, steps ahead 1..n) for windows of ``n`` after each cut (see
    :mod:`kt_models.evaluate`), through the serving form, batched over learners; a model's
    :meth:`~kt_models.base.KTModel.multi_step_logits` replaces the loop where it has one
    (``serving``: the loop all the same, to check that form against it)."""
    if n < 1:
        raise ValueError(f"the multi-step horizon must be at least 1 answer, got {n}")
    model.eval()
    sub = seqs.subset(np.asarray(users, dtype=np.int64))
    ys, ps, ks = [], [], []
    for _, b in learner_batches(sub, device, batch_tokens=batch_tokens, max_batch=max_batch):
        bsz, t_max = b.item.shape
        # the model's one-pass form of the loop below, where it has one
        ahead = None if serving else model.multi_step_logits(b, n)
        state = model.init_state(bsz) if ahead is None else None
        for cut in range(n, t_max, n):
            hi = min(cut + n, t_max)
            if ahead is None:
                # feed the answers of the previous window
                for t in range(cut - n, cut):
                    state = model.step(state, b.item[:, t], b.correct[:, t], b.time[:, t])
                probs = model.predict(state, b.item[:, cut:hi], at_time=b.time[:, cut:hi])
            else:
                probs = torch.sigmoid(ahead[:, cut:hi])
            m = b.mask[:, cut:hi]
            ys.append(b.correct[:, cut:hi][m].cpu().numpy())
            ps.append(probs[m].float().cpu().numpy())
            k = torch.arange(1, hi - cut + 1, device=device).expand(bsz, -1)
            ks.append(k[m].cpu().numpy())
    if not ys:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    return np.concatenate(ys), np.concatenate(ps), np.concatenate(ks)


@torch.no_grad()
def final_traits(
    model: KTModel, seqs: Sequences, device: torch.device, *, advance: Advance | None = None
) -> dict[str, np.ndarray]:
    """``learner_traits`` of every learner of ``seqs`` after their last answer (serving form,
    batched over learners; a learner's traits are taken at their own last step). ValueError
    when the model has no learner traits (``has_traits`` false)."""
    if not model.has_traits:
        raise ValueError(f"{type(model).__name__} has no learner traits (has_traits is False)")
    model.eval()
    out = {k: np.full(seqs.n_users, np.nan) for k in TRAITS}
    for group, b in learner_batches(seqs, device, advance=advance):
        last = (b.mask.sum(1) - 1).cpu().numpy()
        state = model.init_state(len(group))
        for t in range(b.item.shape[1]):
            state = model.step(state, b.item[:, t], b.correct[:, t], b.time[:, t])
            done = last == t
            if done.any():
                traits = model.learner_traits(state)
                for k in TRAITS:
                    out[k][group[done]] = traits[k].float().cpu().numpy()[done]
    return out


__all__ = [
    "TRAITS",
    "Answers",
    "final_traits",
    "learner_batches",
    "next_step_answers",
    "predict_multi_step",
    "predict_next_step",
    "scored_batches",
]
