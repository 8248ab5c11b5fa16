"""A logistic baseline: IRT item difficulty plus Performance Factors Analysis counts.

Model (PFA, Pavlik, Cen & Koedinger 2009, with an online ability term in place of IRT's
per-learner parameter)::

    logit P(correct_t) = bias - difficulty[item_t]
        + sum over the item's concepts c of
              beta_c + gamma_c * log1p(successes_c) + rho_c * log1p(failures_c)
        + w_succ * log1p(total successes) + w_fail * log1p(total failures)

where every count is over the learner's answers ``0 .. t-1`` only (the answer at ``t`` never
enters its own prediction).

Choices:

* **Log counts** (``log1p``) instead of PFA's raw counts: the effect of practice has
  diminishing returns (as in DAS3H and the additive factors models fitted on long
  histories), and the logits stay bounded on learners with hundreds of attempts at one
  concept, where raw counts make the prediction saturate linearly.
* **Ability without a per-learner parameter**: test learners are unseen, so a learned
  ability per learner would be either leaky or unusable. The learner's overall successes and
  failures so far (``w_succ``, ``w_fail``) act as an online ability estimate: it is computed
  from the history only, leak-free and servable.
* **Items with several concepts** sum their concepts' terms (as in PFA); items without any
  concept use the shared "no concept" slot 0 (as DKT); a concept listed twice for one item
  counts once.
* **Fitting by gradient**: like every model, by Adam on the mean binary cross-entropy
  (``kt_models.train``), i.e. maximum likelihood of the logistic regression. Initial
  values: zero, except the practice weights, which start small with their expected signs
  (``gamma`` 0.1, ``rho`` -0.1, ``w_succ`` 0.1, ``w_fail`` -0.1) so the first epochs
  already rank answers by history. Being convex, the fit converges from any start;
  ``lr`` 0.01 -- 0.05 suits it better than DKT's 1e-3; its default is 0.02.
* **Batch forward** without a ``[B, T, C]`` tensor: counts per (learner, concept) come from
  one stable sort of the ``B T K`` (learner, concept) keys and a segmented exclusive
  cumulative sum, so memory is O(B T K) whatever the number of concepts.
* Serving is O(1) per answer: the state is ``{"succ", "fail": [n, C+1] counts per concept,
  "total": [n, 2] overall successes and failures}``. Item index 0 (padding) is not an
  answer: ``step`` leaves the state unchanged for it. The model does not forget
  (``at_time`` is ignored).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import KTModel, ModelConfig, register
from .concepts import item_concept_table
from .data import Batch, Vocab


@dataclass
class LogisticConfig(ModelConfig):
    init_gamma: float = 0.1
    init_rho: float = -0.1
    init_w_succ: float = 0.1
    init_w_fail: float = -0.1


@register
class Logistic(KTModel):
    name = "logistic"
    item_aware = True  # a difficulty per item
    default_lr = 0.02
    config_class = LogisticConfig

    def __init__(self, config: LogisticConfig, vocab: Vocab) -> None:
        super().__init__(config, vocab)
        self.config: LogisticConfig = config
        n = vocab.n_concepts + 1
        q, qv = item_concept_table(self.item_concepts)
        self.register_buffer("q", q, persistent=False)
        self.register_buffer("qv", qv, persistent=False)
        self.bias = nn.Parameter(torch.zeros(()))
        self.difficulty = nn.Parameter(torch.zeros(vocab.n_items + 1))
        self.beta = nn.Parameter(torch.zeros(n))
        self.gamma = nn.Parameter(torch.full((n,), config.init_gamma))
        self.rho = nn.Parameter(torch.full((n,), config.init_rho))
        self.w_succ = nn.Parameter(torch.tensor(config.init_w_succ))
        self.w_fail = nn.Parameter(torch.tensor(config.init_w_fail))

    # ----------------------------------------------------------------- features
    @torch.no_grad()
    def features(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Counts before each position: per concept entry ``[B, T, K]`` and overall ``[B, T]``.

        ``concepts``/``valid``: the item's concept slots; ``succ``/``fail``: the learner's
        earlier successes / failures on that concept; ``total_succ``/``total_fail``: on
        anything. All counts exclude the answer at the position itself.
        """
        item, mask = batch.item, batch.mask
        bsz, t_max = item.shape
        c, valid = self.q[item], self.qv[item] & mask.unsqueeze(-1)  # [B, T, K]
        k = c.shape[-1]
        y = batch.correct.round().long() * mask.long()  # [B, T]
        n_ans = mask.long()
        ys = (y.unsqueeze(-1) * valid.long()).reshape(-1)
        ns = ((n_ans - y).unsqueeze(-1) * valid.long()).reshape(-1)
        b = torch.arange(bsz, device=item.device).view(bsz, 1, 1)
        key = (b * (self.vocab.n_concepts + 1) + c).reshape(-1)
        sk, perm = torch.sort(key, stable=True)  # groups of (learner, concept), in time order
        idx = torch.arange(sk.numel(), device=item.device)
        start = torch.ones_like(sk, dtype=torch.bool)
        start[1:] = sk[1:] != sk[:-1]
        first = torch.cummax(torch.where(start, idx, 0), 0).values

        def prior(v: torch.Tensor) -> torch.Tensor:
            vs = v[perm]
            excl = torch.cumsum(vs, 0) - vs
            out = torch.empty_like(excl)
            out[perm] = excl - excl[first]
            return out.reshape(bsz, t_max, k)

        return {
            "concepts": c,
            "valid": valid,
            "succ": prior(ys).float(),
            "fail": prior(ns).float(),
            "total_succ": (torch.cumsum(y, 1) - y).float(),
            "total_fail": (torch.cumsum(n_ans - y, 1) - (n_ans - y)).float(),
        }

    def _logit(
        self,
        item: torch.Tensor,
        c: torch.Tensor,
        valid: torch.Tensor,
        succ: torch.Tensor,
        fail: torch.Tensor,
        total_succ: torch.Tensor,
        total_fail: torch.Tensor,
    ) -> torch.Tensor:
        per = self.beta[c] + self.gamma[c] * torch.log1p(succ) + self.rho[c] * torch.log1p(fail)
        per = (per * valid.to(per.dtype)).sum(-1)
        ability = self.w_succ * torch.log1p(total_succ) + self.w_fail * torch.log1p(total_fail)
        return self.bias - self.difficulty[item] + per + ability

    def item_parameters(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return self.difficulty.detach(), None

    # ----------------------------------------------------------------- training form
    def forward(self, batch: Batch) -> torch.Tensor:
        f = self.features(batch)
        valid = self.qv[batch.item]  # predict padded positions too (they are not scored)
        return self._logit(
            batch.item,
            f["concepts"],
            valid,
            f["succ"],
            f["fail"],
            f["total_succ"],
            f["total_fail"],
        )

    # ----------------------------------------------------------------- serving form
    def init_state(self, n: int) -> dict[str, torch.Tensor]:
        dev = self.beta.device
        z = torch.zeros(n, self.vocab.n_concepts + 1, device=dev)
        return {"succ": z, "fail": z.clone(), "total": torch.zeros(n, 2, device=dev)}

    @torch.no_grad()
    def step(self, state, item, correct, time=None):  # type: ignore[override]
        live = (item > 0).float()
        y = correct.float().round() * live
        c, valid = self.q[item], self.qv[item].float()
        return {
            "succ": state["succ"].scatter_add(1, c, y.unsqueeze(-1) * valid),
            "fail": state["fail"].scatter_add(1, c, (live - y).unsqueeze(-1) * valid),
            "total": state["total"] + torch.stack([y, live - y], -1),
        }

    def predict_logits(self, state, items, at_time=None):  # type: ignore[override]
        c, valid = self.q[items], self.qv[items]  # [n, m, K]
        n, m, k = c.shape
        flat = c.reshape(n, m * k)
        succ = state["succ"].gather(1, flat).reshape(n, m, k)
        fail = state["fail"].gather(1, flat).reshape(n, m, k)
        tot = state["total"].unsqueeze(1).expand(n, m, 2)
        return self._logit(items, c, valid, succ, fail, tot[..., 0], tot[..., 1])

    def concept_vectors(self) -> torch.Tensor:
        """Rows 1..C: ``[beta, gamma, rho]`` of each concept."""
        return torch.stack([self.beta, self.gamma, self.rho], -1).detach()[1:]
