"""Rasch-model item embeddings, the item-aware option of the concept-level models.

AKT (Ghosh, Heffernan & Lan, "Context-Aware Attentive Knowledge Tracing", KDD 2020, sec. 3.3)
gives every question ``q`` of concept ``c`` a scalar difficulty ``mu_q`` and embeds it as the
concept's embedding plus ``mu_q`` times a per-concept *variation* vector: ``x_q = c_c +
mu_q d_c``, and the answer ``(q, r)`` as ``y = e_(c,r) + mu_q f_(c,r)``. ``mu_q`` is the only
per-item parameter, so items cost one number each; an L2 penalty ``l2 * sum mu_q^2`` over the
answers of a batch (AKT's ``l2 = 1e-5``) keeps ``mu`` at 0 for items with little evidence,
which then behave as their concept.

:class:`RaschItems` adds the same to a model whose input is a (concept, correct) embedding
and whose readout is a linear layer with one logit per concept (DKT, CAKT), with
``items='rasch'`` in the model's config:

* **input side**: the answer's embedding ``e_(c,r)`` becomes ``e_(c,r) + mu_q f_(c,r)``
  (averaged over the item's concepts like the embedding itself);
* **output side**: the readout row of concept ``c``, ``w_c``, becomes ``w_c + mu_q v_c``: the
  item's logit is ``w_c . h + b_c + mu_q (v_c . h + a_c)``. The variation readout lets an
  item's difficulty matter more or less depending on the learner's state; with ``mu_q = 0`` it
  is the concept's logit. (AKT's own output is an MLP over the knowledge state and ``x_q``;
  here the readout stays linear so that a concept-level model's structure is kept.)

Multi-skill items use one ``mu_q`` and average the variation terms over their concepts as the
base terms are averaged (``kt_models.concepts``), in training, evaluation and serving alike.
Item 0 (an item the model was not trained on, and padding) has ``mu = 0`` always.
"""

from __future__ import annotations

import torch
from torch import nn

from .concepts import concept_logits, embed_answers
from .data import Batch

#: the values of a model's ``items`` option
ITEM_OPTIONS = ("none", "rasch")


def check_items_option(value: str) -> bool:
    """Whether ``items`` asks for Rasch items; a clear error for an unknown value."""
    if value not in ITEM_OPTIONS:
        raise ValueError(f"items must be one of {', '.join(ITEM_OPTIONS)}, got {value!r}")
    return value == "rasch"


def item_difficulty(n_items: int, l2: float) -> nn.Embedding:
    """The per-item difficulty ``mu`` ``[n_items + 1, 1]``: 0 at first, and 0 for item 0 (an
    unknown item, padding) always; ``l2`` (its penalty weight) must be >= 0."""
    if l2 < 0:
        raise ValueError(f"item_l2 must be >= 0, got {l2}")
    mu = nn.Embedding(n_items + 1, 1, padding_idx=0)
    nn.init.zeros_(mu.weight)
    return mu


def difficulty_penalty(mu: nn.Embedding, l2: float, batch: Batch) -> torch.Tensor:
    """AKT's regulariser: ``l2`` times the sum of ``mu_q^2`` over the batch's answers."""
    return l2 * mu(batch.item[batch.mask]).pow(2).sum()


def per_item(values: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Per-concept values of states, ``[..., C+1]``, aligned with ``items``: one state per
    item position (``values`` ``[B, T, C+1]``, ``items`` ``[B, T]``) as they are, or one state
    for several items (``[n, C+1]`` with ``[n, M]``) broadcast to ``[n, M, C+1]``."""
    if values.dim() == items.dim():
        return values.unsqueeze(-2).expand(*items.shape, values.shape[-1])
    return values


class RaschItems(nn.Module):
    """Per-item difficulty ``mu`` ``[n_items + 1]`` (0 at first, 0 for item 0 always) with the
    input variation embedding ``f`` ``[2 * slots, emb_dim]`` and, where ``hidden`` is given,
    the variation readout ``v`` ``[slots, hidden]``."""

    def __init__(
        self, n_items: int, slots: int, emb_dim: int, hidden: int | None, l2: float
    ) -> None:
        super().__init__()
        self.slots, self.l2 = slots, float(l2)
        self.mu = item_difficulty(n_items, l2)
        self.vary_in = nn.Embedding(2 * slots, emb_dim)
        nn.init.normal_(self.vary_in.weight, std=0.1)
        self.vary_out = nn.Linear(hidden, slots) if hidden is not None else None

    def difficulty(self, items: torch.Tensor) -> torch.Tensor:
        """``mu`` of ``items`` ``[...]`` -> ``[...]``."""
        return self.mu(items).squeeze(-1)

    def inputs(
        self,
        base: torch.Tensor,
        item_concepts: torch.Tensor,
        item: torch.Tensor,
        correct: torch.Tensor,
    ) -> torch.Tensor:
        """The answer embeddings ``base`` ``[..., E]`` plus ``mu_q`` times the mean variation
        vector of the item's (concept, correct) pairs."""
        vary = embed_answers(self.vary_in, item_concepts, item, correct, self.slots)
        return base + self.mu(item) * vary

    def logits(
        self,
        base: torch.Tensor,
        item_concepts: torch.Tensor,
        h: torch.Tensor,
        items: torch.Tensor,
    ) -> torch.Tensor:
        """Item logits ``base`` ``[..., M]`` (the concept readout of state ``h`` ``[..., H]``,
        gathered for ``items`` ``[..., M]``) plus ``mu_q`` times the variation readout."""
        return base + self.difficulty(items) * self.variation(item_concepts, h, items)

    def variation(
        self, item_concepts: torch.Tensor, h: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        """The variation readout ``[..., M]`` of state ``h`` for ``items``: what ``mu_q``
        multiplies in :meth:`logits` (it depends on an item only through its concepts)."""
        assert self.vary_out is not None
        vary_all = self.vary_out(h)  # [..., C+1]
        vary = concept_logits(item_concepts, per_item(vary_all, items), items.unsqueeze(-1))
        return vary.squeeze(-1)

    def penalty(self, batch: Batch) -> torch.Tensor:
        """AKT's regulariser: ``l2`` times the sum of ``mu_q^2`` over the batch's answers."""
        return difficulty_penalty(self.mu, self.l2, batch)
