"""The item -> concepts (Q) matrix as the models use it: one place for the ways of reading it
(a per-item table with a validity mask, averaging weights over an item's concepts, and the
two averages built on them: of (concept, correct) embeddings and of per-concept logits), so
that every model treats multi-skill items and untagged items alike."""

from __future__ import annotations

import torch
from torch import nn


def item_concept_table(item_concepts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per item: concept indices ``[n_items+1, K]`` and a validity mask.

    Items without a concept get the "no concept" slot 0 in column 0. Invalid entries and a
    concept repeated within an item are masked and point to the item's first valid concept,
    so scattering per-entry values (identical to that concept's) never writes a wrong slot.
    """
    q = item_concepts.clone()
    valid = q > 0
    none = ~valid.any(-1)
    valid[none, 0] = True
    for j in range(1, q.shape[-1]):
        dup = (q[:, j : j + 1] == q[:, :j]).any(-1)
        valid[:, j] &= ~dup
    first = q.gather(1, valid.float().argmax(-1, keepdim=True))
    q = torch.where(valid, q, first.expand_as(q))
    return q, valid


def concept_weights(
    item_concepts: torch.Tensor, items: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The concepts of ``items`` (indices ``[..., K]``, 0 = none) and the weights that average
    over them (an item without a concept: all weight on the "no concept" slot 0). The weights
    of every item are computed once per ``item_concepts`` tensor (a model's buffer) and kept
    on it: two lookups per call instead of eight tensor operations (serving calls this with
    one item at a time)."""
    table = getattr(item_concepts, "_kt_concept_weights", None)
    if table is None:
        c = item_concepts
        w = (c > 0).float()
        none = w.sum(-1, keepdim=True) == 0
        w = torch.where(none & (torch.arange(c.shape[-1], device=c.device) == 0), 1.0, w)
        table = w / w.sum(-1, keepdim=True)
        item_concepts._kt_concept_weights = table  # type: ignore[attr-defined]
    return item_concepts[items], table[items]


def embed_answers(
    embed: nn.Embedding,
    item_concepts: torch.Tensor,
    item: torch.Tensor,
    correct: torch.Tensor,
    slots: int,
) -> torch.Tensor:
    """Answers ``[...]`` embedded as the mean over each item's concepts of the (concept,
    correct) embedding, row ``concept + slots * correct`` of ``embed``: ``[..., E]``."""
    c, w = concept_weights(item_concepts, item)
    e = embed(c + slots * correct.long().unsqueeze(-1))  # [..., K, E]
    return (e * w.unsqueeze(-1)).sum(-2)


def concept_logits(
    item_concepts: torch.Tensor, logits_all: torch.Tensor, items: torch.Tensor
) -> torch.Tensor:
    """Mean logit of each item's concepts: ``logits_all`` [..., C+1], ``items`` [..., M] ->
    ``[..., M]``."""
    c, w = concept_weights(item_concepts, items)
    shape = c.shape
    flat = c.reshape(*shape[:-2], shape[-2] * shape[-1])
    g = torch.gather(logits_all, -1, flat).reshape(shape)
    return (g * w).sum(-1)
