"""PSI-KT (Zhou, Bamler, Wu & Tejero-Cantero, ICLR 2024): "Predictive, scalable and
interpretable knowledge tracing on structured domains".

The authors' public code (github.com/mlcolab/psi-kt) does not run, so this module is written
from the paper's equations; every place where it simplifies or has to choose is listed below.

Generative model (per learner; times ``t`` in days, only differences matter):

* **Traits** ``s = (alpha, mu, sigma, gamma)``: forgetting rate ``alpha > 0``, mean level
  ``mu``, volatility ``sigma > 0``, transfer ``gamma in (0, 1)``. They live in an
  unconstrained space ``r`` (``alpha = softplus(r0) + min_alpha``, ``mu = r1``,
  ``sigma = softplus(r2) + min_sigma``, ``gamma = sigmoid(r3)`` squeezed into
  ``[1e-4, 1 - 1e-4]`` so it stays strictly inside (0, 1) in float32) with a linear-Gaussian
  random walk ``r_n ~ N(r_{n-1}, trait_drift^2 I)`` between interactions and a learned
  population prior ``r_0 ~ N(r_prior, trait_prior_std^2 I)`` (empirical Bayes).
* **Knowledge** ``z_c`` per concept ``c`` (slot 0 = "no concept", for items without one),
  an Ornstein-Uhlenbeck process between answers: over an elapsed ``dt`` it reverts towards
  the target ``m_c = mu + gamma * infl_c`` at rate ``alpha``::

      E[z_t]   = m + (z_{t-dt} - m) exp(-alpha dt)
      Var[z_t] = exp(-2 alpha dt) Var[z_{t-dt}] + sigma^2 (1 - exp(-2 alpha dt)) / (2 alpha)

  ``infl_c = sum_i a_ic (z_i - mu) / sum_i a_ic`` is the prerequisite influence: the mean of
  the learner's current knowledge of ``c``'s prerequisites weighted by the graph's edge
  probabilities, measured relative to ``mu`` (so a learner with no evidence sits at ``mu``;
  with absolute levels, ``mu + gamma * mean z`` would send such a learner to
  ``(1 + gamma) mu``).
* **Prerequisite graph** over concepts ``1..C``: ``a_ij = sigmoid(u_i . u_j) *
  sigmoid(u_i^T (T - T^T) u_j)`` from learned embeddings ``u`` (``graph_dim``) and a learned
  matrix ``T``. ``a_ij`` is the probability of the edge ``i -> j``: *concept i is a
  prerequisite of concept j* (row = prerequisite, column = dependent). The antisymmetric
  factor makes ``a_ij != a_ji``; self-edges are excluded (diagonal 0).
  :meth:`PSIKT.prerequisite_graph` returns the ``[C, C]`` matrix.
* **Answers** ``y ~ Bernoulli(sigmoid(mean_k z_{c_k} - b_item))``: the mean over the item's
  concepts (as DKT does for multi-concept items) minus a learned per-item difficulty ``b``
  (an addition the paper does not have: its datasets are indexed by concept; with items it
  is needed, and it plays the role of IRT's difficulty). ``items='rasch'``
  (``kt_models.items``) adds AKT's input side: the answer embedding becomes
  ``e_(c,r) + b f_(c,r)`` with a per-(concept, correct) variation vector ``f``, and ``b``
  gets AKT's L2 penalty (``item_l2`` times the sum of ``b^2`` over a batch's answers) so
  that rare items keep ``b`` near 0, their concept's level. The output side needs nothing
  more: ``b`` is already the Rasch difficulty there.

Inference (amortised, variational; approximations stated):

* **State** kept as deviations ``d_c = z_c - mu`` (posterior mean and variance per concept,
  ``[n, C + 1]``), so concepts never seen sit at the learner's current ``mu`` and move with
  it when the encoder re-estimates the traits; between answers all concepts are propagated
  with the OU formulas above, the prerequisite target being frozen at its value at the start
  of the interval (the exact coupled solution would need a matrix exponential per learner).
* **Encoder**: a GRU over the answers, input = the embedding of (concept, correct) (mean over
  the item's concepts), plus a projection of ``log1p(dt)``, ``log1p(1440 dt)`` (minutes) and
  the surprise ``y - p``. After answer ``n`` it outputs ``q(r_n) = N(m_n, diag v_n)``: the
  traits are re-estimated at every interaction (the random walk only enters the KL); the
  traits drawn from ``q(r_n)`` govern the interval after answer ``n`` and the answer ``n+1``.
  Before a learner's first answer the traits are the prior mean.
* **Observation update of z** (Kalman-like): the answered concepts' OU prior
  ``N(d, v)`` is fused with a Gaussian site from one Newton (Laplace) step of the Bernoulli
  likelihood at the prior mean, its precision scaled by an amortised gain
  ``kappa = softplus(head(h_n) + bias_c)`` (``kappa = 1``: the plain Laplace update)::

      p = sigmoid(mu + mean_k d_k - b),  1/v' = 1/v + kappa w^2 p (1 - p),
      d' = d + v' kappa w (y - p)

  so a correct answer always raises the concept and a surprising one moves it more.
  ``q(z_n)`` = this Gaussian for the answered concepts and the OU prior for the others.
* **ELBO** per answer: ``E_q[log p(y_n | z_n)]`` (one reparameterised sample of ``z`` in
  training, the mean in eval; traits in force are sampled in training too) minus
  ``KL(q(z_n) || OU prior)`` (closed form, answered concepts; the prior is the OU-propagated
  previous posterior, a filtering/assumed-density approximation) minus the traits' KL: vs the
  population prior for the first answer, and afterwards vs the random walk applied to the
  previous posterior, ``N(m_{n-1}, v_{n-1} + tau^2)`` (the same filtering approximation; the
  exact mean-field term ``E_{q(r_{n-1})} KL(q(r_n) || N(r_{n-1}, tau^2))`` was tried first:
  it puts a floor of ~0.35 nats per trait and answer on the loss and pins the posterior
  variance at ``tau^2 / 2`` instead of letting it shrink with evidence). ``loss`` is the
  negative ELBO per real answer (``kl_weight`` scales the KL terms); position 0 counts in the
  ELBO (its reconstruction is a real term) but, as for every model, not in the metrics. The
  ELBO is not a next-answer cross-entropy: compare models on the metrics, not on the loss.

Prediction of answer ``n`` uses answers ``0..n-1`` only: the state after ``n-1`` is OU-
propagated over ``dt = time_n - time_{n-1}``, the logit is ``mu + mean_k d_k - b`` with
posterior means (deterministic in eval, so serving equals the batch forward). ``predict``
propagates to ``at_time`` (``[n, m]`` days on the clock given to ``step``; ``None`` = the
last answer's time), so mastery decays towards ``mu (+ gamma * infl)`` with time: what the
tutor uses for review scheduling (:meth:`PSIKT.propagate` gives every concept's mean and
variance at a time). Negative gaps are clamped to 0; a learner's first answer has ``dt = 0``
(only time differences are used, never the clock itself; the state keeps the last time in
float64, so serving may pass e.g. days since 1970 as float64 -- in float32 such a clock has
a resolution of minutes, which the caller loses before the model sees it).

Predictions use the posterior *mean* of ``z`` (no probit correction for its variance).
Multi-step prediction (``evaluate.predict_multi_step``) predicts the next answers from the
state at a cut, each at its own time, without updating the state: the OU decay over the
growing gaps is the only change, as the paper's multi-step protocol intends.

Serving state (O(1) in the history): GRU hidden ``h``, ``d``/``v`` ``[n, C + 1]``, the last
time (float64), whether the clock started, the traits in force and ``q(r)``'s mean and
log-variance. ``step(..., time=None)`` updates without moving the clock. The batch forward
is a loop over positions with tensor ops vectorised over learners (cost per answer:
``O(C^2)`` for the prerequisite influence plus the GRU), so it is several times slower than
DKT's fused LSTM on a CPU. Training windows (``TrainConfig.max_len``) each start from the
prior state, as for every model.

Defaults: embedding 32, GRU 64, graph embedding 16, ``tau = 0.1``, initial traits
``alpha = 0.05`` per day, ``sigma = 0.3``, ``gamma = 0.25``, ``mu = 0``; the encoder's
network shapes are our choice (the paper's inference network is not reproduced).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import KTModel, ModelConfig, register
from .concepts import concept_weights
from .data import Batch, Vocab
from .items import RaschItems, check_items_option

_N_TRAITS = 4  # alpha, mu, sigma, gamma


@dataclass
class PSIKTConfig(ModelConfig):
    emb_dim: int = 32
    hidden: int = 64
    graph_dim: int = 16
    trait_drift: float = 0.1  # tau: std of the traits' random walk per interaction (raw space)
    trait_prior_std: float = 1.0
    kl_weight: float = 1.0
    init_alpha: float = 0.05  # per day
    init_sigma: float = 0.3
    init_gamma: float = 0.25
    min_alpha: float = 1e-3
    min_sigma: float = 1e-3
    items: str = "none"  # 'none' or 'rasch' (AKT's input side and penalty: kt_models.items)
    item_l2: float = 1e-5  # AKT's L2 weight on the item difficulties (items='rasch')
    #: positions per compiled call when training with ``compile`` (PSIKT.compile_training):
    #: one graph of 8 per-answer updates ran an ASSIST2015 epoch at 2.0-2.3x DKT's seconds
    #: where one update a call ran at 3.1-3.6x (paired, 2026-12-08), but its first compile
    #: takes minutes (2.5-4 on a 2-core CPU, per dataset; then torch's on-disk cache) where
    #: one update's takes under a minute: 1 for short runs on small data. No effect on the
    #: model (the same operations), nor without ``compile``.
    compile_chunk: int = 8


def _inv_softplus(x: float) -> float:
    return math.log(math.expm1(x))


def ou_variance_factor(alpha: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    """``(1 - exp(-2 alpha dt)) / (2 alpha)``: the OU variance added over ``dt`` per sigma^2."""
    return -torch.expm1(-2.0 * alpha * dt) / (2.0 * alpha)


@register
class PSIKT(KTModel):
    name = "psikt"
    config_class = PSIKTConfig
    forgets = True

    def __init__(self, config: PSIKTConfig, vocab: Vocab) -> None:
        super().__init__(config, vocab)
        self.config: PSIKTConfig = config
        cfg = config
        if int(cfg.compile_chunk) < 1:
            raise ValueError(f"compile_chunk must be at least 1, got {cfg.compile_chunk!r}")
        self.n_slots = vocab.n_concepts + 1
        g = torch.Generator().manual_seed(cfg.seed)
        # encoder
        self.embed = nn.Embedding(2 * self.n_slots, cfg.emb_dim)
        self.feat = nn.Linear(3, cfg.emb_dim)
        self.gru = nn.GRUCell(cfg.emb_dim, cfg.hidden)
        self.trait_head = nn.Linear(cfg.hidden, 2 * _N_TRAITS)
        self.gain_head = nn.Linear(cfg.hidden, 1)
        with torch.no_grad():
            self.trait_head.weight.mul_(0.1)
            self.trait_head.bias.zero_()
            self.trait_head.bias[_N_TRAITS:] = -4.0
            self.gain_head.weight.mul_(0.1)
            self.gain_head.bias.zero_()
        self.gain_bias = nn.Parameter(torch.full((self.n_slots,), _inv_softplus(1.0)))
        # generative model
        self.trait_prior = nn.Parameter(
            torch.tensor(
                [
                    _inv_softplus(max(cfg.init_alpha - cfg.min_alpha, 1e-6)),
                    0.0,
                    _inv_softplus(max(cfg.init_sigma - cfg.min_sigma, 1e-6)),
                    math.log(cfg.init_gamma / (1.0 - cfg.init_gamma)),
                ]
            )
        )
        self.rasch: RaschItems | None = None
        if check_items_option(cfg.items):
            self.rasch = RaschItems(vocab.n_items, self.n_slots, cfg.emb_dim, None, cfg.item_l2)
            self.difficulty = self.rasch.mu  # the one per-item scalar, on both sides
            self.item_aware = True
        else:
            self.difficulty = nn.Embedding(vocab.n_items + 1, 1)
            nn.init.zeros_(self.difficulty.weight)
        c = max(vocab.n_concepts, 1)
        self.u = nn.Parameter(0.3 * torch.randn(c, cfg.graph_dim, generator=g))
        self.T = nn.Parameter(0.3 * torch.randn(cfg.graph_dim, cfg.graph_dim, generator=g))
        self._elbo: tuple[torch.Tensor, torch.Tensor] | None = None
        self._train_update = None  # compile_training's compiled _update
        self._train_chunk = None  # and its compiled _update_positions

    # ----------------------------------------------------------------- generative pieces
    def traits(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(alpha, mu, sigma, gamma) from unconstrained traits ``[..., 4]``."""
        cfg = self.config
        alpha = F.softplus(raw[..., 0]) + cfg.min_alpha
        sigma = F.softplus(raw[..., 2]) + cfg.min_sigma
        gamma = 1e-4 + (1.0 - 2e-4) * torch.sigmoid(raw[..., 3])  # strictly inside (0, 1)
        return alpha, raw[..., 1], sigma, gamma

    def _edge_probs(self) -> torch.Tensor:
        """``a_ij`` ``[C, C]``: probability that concept i+1 is a prerequisite of j+1."""
        u = self.u
        sym = torch.sigmoid(u @ u.T)
        direction = torch.sigmoid(u @ (self.T - self.T.T) @ u.T)
        eye = torch.eye(u.shape[0], dtype=torch.bool, device=u.device)
        return (sym * direction).masked_fill(eye, 0.0)

    def _influence_weights(self) -> torch.Tensor:
        """Column-normalised edge probabilities: ``infl_j = sum_i W_ij d_i``."""
        a = self._edge_probs()
        return a / a.sum(0, keepdim=True).clamp_min(1e-6)

    def _influence(self, d: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Prerequisite influence ``[n, C + 1]`` (slot 0 gets none) from deviations ``d``."""
        if self.n_slots == 1:
            return torch.zeros_like(d)
        return F.pad(d[:, 1:] @ w, (1, 0))

    def _dt(self, state: dict, time: torch.Tensor | None) -> torch.Tensor:
        """Elapsed days since the last answer, in float64 then cast (large serving clocks)."""
        last, dtype = state["time"], state["d"].dtype
        if time is None:
            return torch.zeros(last.shape, dtype=dtype, device=last.device)
        time = time.to(torch.float64)
        started = state["started"]
        if time.dim() == 2:
            last, started = last.unsqueeze(1), started.unsqueeze(1)
        dt = (time - last).clamp_min(0.0).to(dtype)
        return torch.where(started, dt, torch.zeros_like(dt))

    def _propagate(
        self, state: dict[str, torch.Tensor], dt: torch.Tensor, w_graph: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """OU moments of the deviations ``d = z - mu`` ``[n, C + 1]`` after ``dt`` ``[n]``."""
        alpha, _, sigma, gamma = self.traits(state["trait"])
        decay = torch.exp(-alpha * dt).unsqueeze(1)
        target = gamma.unsqueeze(1) * self._influence(state["d"], w_graph)
        d = target + (state["d"] - target) * decay
        v = decay**2 * state["v"] + (sigma**2 * ou_variance_factor(alpha, dt)).unsqueeze(1)
        return d, v

    @torch.no_grad()
    def propagate(
        self, state: dict[str, torch.Tensor], at_time: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of every concept's knowledge ``z`` ``[n, C + 1]`` at ``at_time``
        ``[n]`` (days on the clock given to :meth:`step`; ``None``: the last answer's time).

        Column ``c`` is concept ``c`` (column 0: the no-concept slot). Use it for mastery
        and its uncertainty; an item's success logit is ``mean z of its concepts - b``.
        """
        _, mu, _, _ = self.traits(state["trait"])
        d, v = self._propagate(state, self._dt(state, at_time), self._influence_weights())
        return mu.unsqueeze(1) + d, v

    # ----------------------------------------------------------------- state
    def _init_state(self, n: int) -> dict[str, torch.Tensor]:
        cfg = self.config
        dev = self.trait_prior.device
        prior = self.trait_prior.unsqueeze(0).expand(n, -1)
        alpha, _, sigma, _ = self.traits(self.trait_prior)
        v0 = (sigma**2 / (2.0 * alpha)).expand(n, self.n_slots)
        return {
            "h": torch.zeros(n, cfg.hidden, device=dev),
            "d": torch.zeros(n, self.n_slots, device=dev),
            "v": v0,
            "time": torch.zeros(n, dtype=torch.float64, device=dev),
            "started": torch.zeros(n, dtype=torch.bool, device=dev),
            "trait": prior,
            "trait_mean": prior,
            "trait_logvar": torch.full(
                (n, _N_TRAITS), 2.0 * math.log(cfg.trait_prior_std), device=dev
            ),
        }

    def init_state(self, n: int) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {k: v.detach().clone() for k, v in self._init_state(n).items()}

    def _update(
        self,
        state: dict[str, torch.Tensor],
        item: torch.Tensor,
        correct: torch.Tensor,
        time: torch.Tensor | None,
        w_graph: torch.Tensor,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """One answer: OU-propagate, predict, Kalman-like update, re-estimate the traits.

        Returns the new state, the prediction logit of this answer (from the state before
        it) and the answer's ELBO ``[n]``.
        """
        cfg = self.config
        sample = self.training
        _, mu, _, _ = self.traits(state["trait"])
        dt = self._dt(state, time)
        d, v = self._propagate(state, dt, w_graph)
        # prediction of this answer from the prior
        c, w = concept_weights(self.item_concepts, item)  # [n, K]
        dk, vk = d.gather(1, c), v.gather(1, c)
        b = self.difficulty(item).squeeze(-1)
        logit = mu + (w * dk).sum(-1) - b
        p = torch.sigmoid(logit)
        # encoder
        feats = torch.stack(
            [torch.log1p(dt), torch.log1p(1440.0 * dt), correct - p.detach()], dim=-1
        )
        ce = self.embed(c + self.n_slots * correct.long().unsqueeze(-1))
        x = (ce * w.unsqueeze(-1)).sum(-2) + self.feat(feats)
        if self.rasch is not None:
            x = self.rasch.inputs(x, self.item_concepts, item, correct)
        h = self.gru(x, state["h"])
        # Kalman-like (amortised Laplace) update of the answered concepts
        kappa = F.softplus(self.gain_head(h) + self.gain_bias[c])  # [n, K]
        valid = w > 0
        v_post = 1.0 / (1.0 / vk + kappa * w**2 * (p * (1 - p)).unsqueeze(1))
        d_post = dk + v_post * kappa * w * (correct - p).unsqueeze(1)
        kl_z = 0.5 * (torch.log(vk / v_post) + (v_post + (d_post - dk) ** 2) / vk - 1.0)
        kl_z = (kl_z * valid).sum(-1)
        dz = d_post + v_post.sqrt() * torch.randn_like(d_post) if sample else d_post
        recon = -F.binary_cross_entropy_with_logits(
            mu + (w * dz).sum(-1) - b, correct, reduction="none"
        )
        slots = torch.arange(self.n_slots, device=d.device)
        for k in range(c.shape[1]):
            hit = (slots == c[:, k : k + 1]) & valid[:, k : k + 1]
            d = torch.where(hit, d_post[:, k : k + 1], d)
            v = torch.where(hit, v_post[:, k : k + 1], v)
        # traits: q(r_n | answers 0..n)
        out = self.trait_head(h)
        t_mean = self.trait_prior + out[:, :_N_TRAITS]
        t_logvar = out[:, _N_TRAITS:].clamp(-10.0, 4.0)
        t_var = t_logvar.exp()
        # prior: the random walk from q(r_{n-1}) (or the population prior before the first)
        started = state["started"]
        prior_var = state["trait_logvar"].exp() + torch.where(
            started, cfg.trait_drift**2, 0.0
        ).unsqueeze(1)
        kl_s = 0.5 * (
            (t_var + (t_mean - state["trait_mean"]) ** 2) / prior_var
            - 1.0
            - t_logvar
            + prior_var.log()
        ).sum(-1)
        trait = t_mean + (0.5 * t_logvar).exp() * torch.randn_like(t_mean) if sample else t_mean
        new_time = state["time"] if time is None else time.to(torch.float64)
        new_state = {
            "h": h,
            "d": d,
            "v": v,
            "time": torch.where(started, torch.maximum(new_time, state["time"]), new_time),
            # the clock starts with the first timed answer (``time=None`` keeps it)
            "started": started if time is None else torch.ones_like(started),
            "trait": trait,
            "trait_mean": t_mean,
            "trait_logvar": t_logvar,
        }
        elbo = recon - cfg.kl_weight * (kl_z + kl_s)
        return new_state, logit, elbo

    # ----------------------------------------------------------------- training form
    def forward(self, batch: Batch) -> torch.Tensor:
        bsz, t_max = batch.item.shape
        state = self._init_state(bsz)
        w_graph = self._influence_weights()
        logits, elbos = [], []
        compiled = self.training and self._train_update is not None
        update = self._train_update if compiled else self._update
        k = self.config.compile_chunk if compiled else 1
        chunk = self._train_chunk if k > 1 else None
        t = 0
        while t < t_max:
            if t and chunk is not None and t + k <= t_max:
                # k positions in one compiled call (see compile_training)
                cut = slice(t, t + k)
                state, lg, el = chunk(
                    state, batch.item[:, cut], batch.correct[:, cut], batch.time[:, cut], w_graph
                )
                logits.extend(lg.unbind(1))
                elbos.extend(el.unbind(1))
                t += k
                continue
            # the first position plain: the initial state's h and d need no gradient (and its
            # prior is expanded), later states' do, so a compiled update would be guarded
            # and compiled twice (about 15 s each on a CPU)
            state, logit, elbo = (update if t else self._update)(
                state, batch.item[:, t], batch.correct[:, t], batch.time[:, t], w_graph
            )
            logits.append(logit)
            elbos.append(elbo)
            t += 1
        out = torch.stack(logits, 1)
        self._elbo = (batch.item, torch.stack(elbos, 1))
        return out

    def _update_positions(
        self,
        state: dict[str, torch.Tensor],
        items: torch.Tensor,
        corrects: torch.Tensor,
        times: torch.Tensor,
        w_graph: torch.Tensor,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """:meth:`_update` over consecutive positions (``items`` etc. ``[n, k]``): the state
        after them, and their logits and ELBOs ``[n, k]``. What ``compile_training`` compiles
        as one graph: the same operations as ``k`` calls of :meth:`_update`."""
        logits, elbos = [], []
        for j in range(items.shape[1]):
            state, logit, elbo = self._update(
                state, items[:, j], corrects[:, j], times[:, j], w_graph
            )
            logits.append(logit)
            elbos.append(elbo)
        return state, torch.stack(logits, 1), torch.stack(elbos, 1)

    def loss(self, batch: Batch, logits: torch.Tensor) -> torch.Tensor:
        """Negative ELBO per real answer (see the module docstring)."""
        if self._elbo is None or self._elbo[0] is not batch.item:
            self.forward(batch)
        assert self._elbo is not None
        elbo = self._elbo[1]
        self._elbo = None
        m = batch.mask
        return -(elbo[m].sum() / m.sum().clamp_min(1)) + self.item_penalty(batch)

    def compile_training(self) -> bool:
        """The per-answer update (:meth:`_update`, run once per position: about 1,000 operator
        calls per position forward and backward, 209,233 in a batch of 10 x 200 answers) fused
        by ``torch.compile`` (23,313 calls), and ``compile_chunk`` consecutive updates as
        one compiled graph (:meth:`_update_positions`, which the training forward runs on
        each full run of that many positions; the rest take the single compiled update:
        fewer calls, each with its guards and its autograd node, from Python); ``step``
        keeps the plain update."""
        self._train_update = torch.compile(self._update)
        if self.config.compile_chunk > 1:
            self._train_chunk = torch.compile(self._update_positions)
        return True

    # ----------------------------------------------------------------- serving form
    @torch.no_grad()
    def step(self, state, item, correct, time=None):  # type: ignore[override]
        new, _, _ = self._update(state, item, correct.float(), time, self._influence_weights())
        return new

    def predict_logits(self, state, items, at_time=None):  # type: ignore[override]
        alpha, mu, sigma, gamma = self.traits(state["trait"])
        dt = self._dt(state, at_time)  # [n, m] or [n]
        if dt.dim() == 1:
            dt = dt.unsqueeze(1).expand(items.shape)
        target = gamma.unsqueeze(1) * self._influence(state["d"], self._influence_weights())
        c, w = concept_weights(self.item_concepts, items)  # [n, m, K]
        n, m, k = c.shape
        flat = c.reshape(n, m * k)
        dk = state["d"].gather(1, flat).reshape(n, m, k)
        tk = target.gather(1, flat).reshape(n, m, k)
        decay = torch.exp(-alpha.unsqueeze(1) * dt).unsqueeze(-1)
        dk = tk + (dk - tk) * decay
        b = self.difficulty(items).squeeze(-1)
        return mu.unsqueeze(1) + (w * dk).sum(-1) - b

    # ----------------------------------------------------------------- interpretation
    has_traits = True

    def item_parameters(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return self.difficulty.weight[:, 0].detach(), None

    @torch.no_grad()
    def prerequisite_graph(self) -> torch.Tensor:
        """``[C, C]`` edge probabilities: entry ``[i, j]`` = P(concept ``i + 1`` is a
        prerequisite of concept ``j + 1``) (rows: prerequisites; diagonal 0)."""
        return self._edge_probs().detach()[: self.vocab.n_concepts, : self.vocab.n_concepts]

    @torch.no_grad()
    def learner_traits(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Posterior-mean traits per learner: ``alpha`` (per day), ``mu``, ``sigma``,
        ``gamma``, each ``[n]``."""
        alpha, mu, sigma, gamma = self.traits(state["trait_mean"])
        return {"alpha": alpha, "mu": mu, "sigma": sigma, "gamma": gamma}

    def concept_vectors(self) -> torch.Tensor:
        """The graph embeddings ``u`` of concepts 1..C."""
        return self.u.detach()[: self.vocab.n_concepts]
