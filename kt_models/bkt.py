"""Bayesian Knowledge Tracing (Corbett & Anderson, UMUAI 1995), one HMM per concept.

Model: each concept ``c`` is a two-state hidden Markov model (unlearned / learned) with
four parameters, ``p(L0)`` (known before the first opportunity), ``p(T)`` (learned at an
opportunity), ``p(G)`` (guess: correct while unlearned) and ``p(S)`` (slip: wrong while
learned). The prediction at position ``t`` is the exact filtering probability
``P(correct_t | answers 0 .. t-1)`` of the forward algorithm:

* predict: ``P(correct) = P(L) (1 - S) + (1 - P(L)) G``;
* observe: ``P(L | correct) = P(L) (1 - S) / P(correct)``,
  ``P(L | wrong) = P(L) S / (1 - P(correct))``;
* transition: ``P(L') = P(L | obs) (1 - F) + (1 - P(L | obs)) T`` (``F = 0`` unless
  ``forget``).

Choices where the paper is silent or where data differs from its setting:

* **Fitting by gradient**: the parameters are unconstrained logits, and the model is fitted
  like every other model, by Adam on the mean binary cross-entropy of the filter's
  predictions (``kt_models.train``), which is the exact per-answer negative
  log-likelihood of the HMM (forward algorithm), not by EM or a grid search. The filter is a
  loop over ``T`` with tensor operations over learners and the item's concepts (gather /
  scatter on the ``[B, C+1]`` mastery table, O(B K) per step, never ``[B, T, C]``).
  Parameters move slowly at DKT's ``lr`` of 1e-3; this model's default ``lr`` is 0.05.
* **Degeneracy**: ``G = 0.5 sigmoid(g)`` and ``S = 0.5 sigmoid(s)``, so guess and slip stay
  below 0.5 and "learned" always means "more likely correct" (the classic fix for the
  model's identifiability problem, Baker et al. 2008).
* **Item guess and slip** (``item_params=True``, the default): KT-IDEM (Pardos & Heffernan,
  UMAP 2011): each item adds a learned offset (initially 0) to its concepts' guess and slip
  logits, so ``G = 0.5 sigmoid(g_c + g_i)``; ``p(L0)``, ``p(T)`` and the mastery state stay
  per concept. Without it, a concept's items of very different difficulty all share one
  guess and slip, and the model cannot fit even a tiny dataset well (the generic overfit
  test: AUC 0.76 vs 0.92). ``item_params=False`` is the classic per-concept BKT (the same
  fit where every item is its own concept, e.g. pyKT's ASSISTments 2015).
* **Items with several concepts** ("repeat per skill"): the prediction is the *mean of the
  concepts' P(correct) in probability* (as pyKT's late fusion), and every concept of the
  item is updated with the answer. Items without any concept use a shared "no concept"
  slot (index 0) with its own parameters, as in DKT. A concept listed twice for one item
  counts once.
* **Forgetting per opportunity** (``forget=True``): a per-concept ``p(F)`` in the
  transition above.
* **Forgetting with time** (``forget_time=True``, independent of ``forget``): mastery decays
  between opportunities as ``P(L) <- P(L) exp(-lambda_c dt)`` with a learned
  ``lambda_c = softplus(.) >= 0`` per concept and ``dt`` the time since the concept was last
  practised (days, or answers on datasets without a clock). The decay is applied lazily
  (the state keeps each concept's mastery and the time of its last practice), which equals
  decaying every concept at every step since exponentials compose. A concept never
  practised keeps its prior ``p(L0)`` (no decay before the first opportunity). Then
  ``predict(..., at_time)`` decays mastery and the instance's ``forgets`` is True.
* Serving is O(1) per answer: the state is ``{"p": P(L) [n, C+1]}``, plus, with
  ``forget_time``, ``"last"`` (time of each concept's last practice ``[n, C+1]``, inf =
  never) and ``"now"`` (time of the last answer ``[n]``); ``predict`` without ``at_time``
  predicts at the time of the last answer. ``forgets`` is set per instance
  (``BKT.forgets``, the class attribute, stays False).
* ``concept_vectors()``: ``[p(L0), p(T), p(G), p(S)]`` per concept (the concept-level
  guess and slip, without item offsets); :meth:`BKT.probs` gives every parameter.
* Item index 0 (padding) is not an answer: ``step`` leaves the state unchanged for it.
* Initial values: ``p(L0)`` 0.4, ``p(T)`` 0.1, ``p(G)`` 0.2, ``p(S)`` 0.1, ``p(F)`` 0.05,
  ``lambda`` 0.01 per day (or per answer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import KTModel, ModelConfig, register
from .concepts import item_concept_table
from .data import Batch, Vocab

#: probabilities are kept in [EPS, 1 - EPS] so logits and divisions stay finite
EPS = 1e-6


@dataclass
class BKTConfig(ModelConfig):
    forget: bool = False  # per-concept p(F) at each opportunity
    forget_time: bool = False  # P(L) decays as exp(-lambda_c * elapsed time)
    init_l0: float = 0.4
    init_learn: float = 0.1
    init_guess: float = 0.2
    init_slip: float = 0.1
    init_forget: float = 0.05
    init_decay: float = 0.01  # lambda, per day (per answer without a clock)
    item_params: bool = True  # KT-IDEM: per-item offsets of the guess and slip logits


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _inv_softplus(x: float) -> float:
    return math.log(math.expm1(x))


@register
class BKT(KTModel):
    name = "bkt"
    default_lr = 0.05
    config_class = BKTConfig

    def __init__(self, config: BKTConfig, vocab: Vocab) -> None:
        super().__init__(config, vocab)
        self.config: BKTConfig = config
        # an instance attribute: only the time-decay variant changes with ``at_time``
        self.forgets = bool(config.forget_time)
        n = vocab.n_concepts + 1
        q, qv = item_concept_table(self.item_concepts)
        self.register_buffer("q", q, persistent=False)
        self.register_buffer("qv", qv, persistent=False)

        def full(v: float) -> nn.Parameter:
            return nn.Parameter(torch.full((n,), v))

        self.l0 = full(_logit(config.init_l0))
        self.learn = full(_logit(config.init_learn))
        self.guess = full(_logit(2 * config.init_guess))
        self.slip = full(_logit(2 * config.init_slip))
        if config.item_params:
            self.item_guess = nn.Parameter(torch.zeros(vocab.n_items + 1))
            self.item_slip = nn.Parameter(torch.zeros(vocab.n_items + 1))
        if config.forget:
            self.forget = full(_logit(config.init_forget))
        if config.forget_time:
            self.decay = full(_inv_softplus(config.init_decay))

    # ----------------------------------------------------------------- parameters
    def probs(self) -> dict[str, torch.Tensor]:
        """The constrained parameters, each ``[C+1]`` (slot 0: items without concepts)."""
        p = {
            "l0": torch.sigmoid(self.l0),
            "learn": torch.sigmoid(self.learn),
            "guess": 0.5 * torch.sigmoid(self.guess),
            "slip": 0.5 * torch.sigmoid(self.slip),
        }
        if self.config.forget:
            p["forget"] = torch.sigmoid(self.forget)
        if self.config.forget_time:
            p["decay"] = F.softplus(self.decay)
        return p

    def concept_vectors(self) -> torch.Tensor:
        """Rows 1..C: ``[p(L0), p(T), p(G), p(S)]`` of each concept."""
        p = self.probs()
        return torch.stack([p["l0"], p["learn"], p["guess"], p["slip"]], -1).detach()[1:]

    # ----------------------------------------------------------------- shared pieces
    def _params_at(self, item: torch.Tensor) -> dict[str, torch.Tensor]:
        """Concepts, validity and every parameter per concept slot ``[..., K]`` of items."""
        c, valid = self.q[item], self.qv[item]
        g, s = self.guess[c], self.slip[c]
        if self.config.item_params:
            g = g + self.item_guess[item].unsqueeze(-1)
            s = s + self.item_slip[item].unsqueeze(-1)
        out = {
            "c": c,
            "valid": valid,
            "guess": 0.5 * torch.sigmoid(g),
            "slip": 0.5 * torch.sigmoid(s),
            "learn": torch.sigmoid(self.learn)[c],
        }
        if self.config.forget:
            out["keep"] = 1 - torch.sigmoid(self.forget)[c]
        if self.config.forget_time:
            out["decay"] = F.softplus(self.decay)[c]
        return out

    def _read(
        self, pl: torch.Tensor, last: torch.Tensor | None, at: torch.Tensor, prm: dict
    ) -> torch.Tensor:
        """Mastery at time ``at`` (decayed since the concept's last practice)."""
        if last is not None:
            pl = pl * torch.exp(-prm["decay"] * (at - last).clamp_min(0.0))
        return pl

    @staticmethod
    def _p_correct(pl: torch.Tensor, prm: dict) -> torch.Tensor:
        return pl * (1 - prm["slip"]) + (1 - pl) * prm["guess"]

    @staticmethod
    def _combine(pc: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Mean P(correct) over an item's concepts ``[..., K]`` as a logit ``[...]``."""
        w = valid.to(pc.dtype)
        p = (pc * w).sum(-1) / w.sum(-1)
        p = p.clamp(EPS, 1 - EPS)
        return torch.log(p) - torch.log1p(-p)

    def _update(
        self, pl: torch.Tensor, pc: torch.Tensor, correct: torch.Tensor, prm: dict
    ) -> torch.Tensor:
        """Mastery after observing ``correct`` ``[n, 1]`` and one transition."""
        post_ok = pl * (1 - prm["slip"]) / pc.clamp_min(EPS)
        post_ko = pl * prm["slip"] / (1 - pc).clamp_min(EPS)
        post = torch.where(correct > 0.5, post_ok, post_ko)
        kept = post * prm["keep"] if self.config.forget else post
        return (kept + (1 - post) * prm["learn"]).clamp(EPS, 1 - EPS)

    def _initial(self, n: int) -> dict[str, torch.Tensor]:
        l0 = torch.sigmoid(self.l0).clamp(EPS, 1 - EPS)
        state = {"p": l0.unsqueeze(0).expand(n, -1)}
        if self.config.forget_time:
            state["last"] = torch.full((n, l0.shape[0]), math.inf, device=l0.device)
            state["now"] = torch.zeros(n, device=l0.device)
        return state

    def _advance(
        self,
        state: dict[str, torch.Tensor],
        prm: dict,
        correct: torch.Tensor,
        time: torch.Tensor,
        live: torch.Tensor,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(State after one answer ``[n]`` of the learners ``live``, P(correct) ``[n, K]``).

        ``prm`` holds the answered items' parameters ``[n, K]``.
        """
        c = prm["c"]
        p0 = state["p"].gather(1, c)
        lv = live.unsqueeze(-1)
        out = {}
        if self.config.forget_time:
            last0 = state["last"].gather(1, c)
            t = time.unsqueeze(-1).to(p0.dtype)
            pl = self._read(p0, last0, t, prm)
            last = torch.where(lv, t.expand_as(last0), last0)
            out["last"] = state["last"].scatter(1, c, last)
            out["now"] = torch.where(live, time.to(p0.dtype), state["now"])
        else:
            pl = p0
        pc = self._p_correct(pl, prm)
        new = torch.where(lv, self._update(pl, pc, correct.unsqueeze(-1), prm), p0)
        out["p"] = state["p"].scatter(1, c, new)
        return out, pc

    # ----------------------------------------------------------------- training form
    def forward(self, batch: Batch) -> torch.Tensor:
        prm = self._params_at(batch.item)  # [B, T, K], computed once outside the filter
        state = self._initial(batch.item.shape[0])
        pcs = []
        for t in range(batch.item.shape[1]):
            state, pc = self._advance(
                state,
                {k: v[:, t] for k, v in prm.items()},
                batch.correct[:, t],
                batch.time[:, t],
                batch.mask[:, t],
            )
            pcs.append(pc)
        return self._combine(torch.stack(pcs, 1), prm["valid"])

    # ----------------------------------------------------------------- serving form
    def init_state(self, n: int) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            s = self._initial(n)
        return {k: v.clone() for k, v in s.items()}

    @torch.no_grad()
    def step(self, state, item, correct, time=None):  # type: ignore[override]
        if self.config.forget_time and time is None:
            time = state["now"]
        state, _ = self._advance(state, self._params_at(item), correct.float(), time, item > 0)
        return state

    def predict_logits(self, state, items, at_time=None):  # type: ignore[override]
        prm = self._params_at(items)  # [n, m, K]
        c = prm["c"]
        n, m, k = c.shape
        flat = c.reshape(n, m * k)
        pl = state["p"].gather(1, flat).reshape(n, m, k)
        if self.config.forget_time:
            last = state["last"].gather(1, flat).reshape(n, m, k)
            at = state["now"].unsqueeze(-1).expand(n, m) if at_time is None else at_time
            pl = self._read(pl, last, at.unsqueeze(-1).to(pl.dtype), prm)
        return self._combine(self._p_correct(pl, prm), prm["valid"])
