"""The item -> concepts (Q) matrix as the models use it: one place for the two ways of
reading it (a per-item table with a validity mask, and averaging weights over an item's
concepts), so that every model treats multi-skill items and untagged items alike."""

from __future__ import annotations

import torch


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
    over them (an item without a concept: all weight on the "no concept" slot 0)."""
    c = item_concepts[items]
    w = (c > 0).float()
    none = w.sum(-1, keepdim=True) == 0
    w = torch.where(none & (torch.arange(c.shape[-1], device=c.device) == 0), 1.0, w)
    return c, w / w.sum(-1, keepdim=True)
