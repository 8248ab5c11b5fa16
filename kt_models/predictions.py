"""The evaluation core: the model's prediction before every answer of some learners (its
training form, one batched forward over length-bucketed batches). Training's validation,
``tutor evaluate`` and ``tutor report`` all read predictions from here, so that they score the
same thing the same way (``evaluate`` and ``report`` no longer import each other)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .base import KTModel, prediction_mask
from .data import Sequences, iter_batches, make_batch, plan_batches


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


@torch.no_grad()
def next_step_answers(
    model: KTModel,
    seqs: Sequences,
    users: np.ndarray,
    device: torch.device,
    *,
    batch_tokens: int = 65536,
    max_batch: int = 1024,
    advance: Callable[[int], None] | None = None,
) -> Answers:
    """Next-step predictions of ``users`` (one batched forward, as ``predict_next_step``)."""
    model.eval()
    sub = seqs.subset(np.asarray(users, dtype=np.int64))
    lens = sub.lengths()
    learner = np.repeat(np.arange(sub.n_users), lens)
    position = np.arange(sub.n_interactions) - sub.offsets[:-1][learner]
    p = np.full(sub.n_interactions, np.nan)
    for group in plan_batches(
        sub, np.arange(sub.n_users), batch_tokens=batch_tokens, max_batch=max_batch
    ):
        b = make_batch(sub, group).to(device)
        m = prediction_mask(b)
        probs = torch.sigmoid(model(b))[m].float().cpu().numpy()
        rows = sub.offsets[:-1][group][:, None] + np.arange(b.item.shape[1])[None, :]
        p[rows[m.cpu().numpy()]] = probs
        if advance is not None:
            advance(len(group))
    return Answers(
        learner=learner,
        position=position,
        item=sub.item.copy(),
        y=sub.correct.astype(np.float64),
        p=p,
    )


@torch.no_grad()
def predict_next_step(
    model: KTModel,
    seqs: Sequences,
    users: np.ndarray,
    device: torch.device,
    batch_tokens: int = 65536,
    max_batch: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Answers and predicted probabilities at every scored position of ``users``."""
    model.eval()
    ys, ps = [], []
    for batch in iter_batches(seqs, users, batch_tokens=batch_tokens, max_batch=max_batch):
        b = batch.to(device)
        logits = model(b)
        m = prediction_mask(b)
        ys.append(b.correct[m].cpu().numpy())
        ps.append(torch.sigmoid(logits[m]).float().cpu().numpy())
    if not ys:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(ys), np.concatenate(ps)
