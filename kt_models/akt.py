"""AKT: Context-Aware Attentive Knowledge Tracing (Ghosh, Heffernan & Lan, KDD 2020).

Model (the paper's, as in its authors' and pyKT's code):

* **Rasch-model embeddings** (sec. 3.3): question ``q`` of concept ``c`` is
  ``x = c_c + mu_q d_c`` and the answer ``(q, r)`` is ``y = c_c + g_r + mu_q (d_c + f_r)``:
  concept embeddings ``c``, their variation vectors ``d``, response embeddings ``g`` and
  their variations ``f``, and one scalar difficulty ``mu_q`` per item, penalised by
  ``l2 * sum mu_q^2`` over a batch's answers (``item_l2``; 1e-5 as in the paper). This is the
  form of the authors' default (``separate_qa=False``: ``g``, ``f`` depend on the response
  only); the paper writes ``e_(c,r)`` and ``f_(c,r)``.
* **Encoders** (sec. 3.1): ``n_blocks`` self-attention layers over the answers (the knowledge
  encoder, each position seeing itself and the past), and ``n_blocks`` pairs of a question
  encoder layer (self-attention over the questions, seeing itself and the past, no
  feed-forward) and a **knowledge retriever** layer (query: the encoded question; keys: the
  encoded past questions; values: the encoded past answers; strictly the past, so the answer
  being predicted is never seen). A layer is attention, residual, layer norm, and (all but
  the question encoder) a ReLU feed-forward with residual and layer norm.
* **Monotonic attention** (sec. 3.2): the scaled dot-product score of key ``tau`` for query
  ``t`` is multiplied by ``exp(-theta * d(t, tau))`` with ``theta = softplus(gamma_head)``
  learned per head and the context-aware distance
  ``d(t, tau) = |t - tau| * sum_{t' > tau} softmax(score)_{t'}`` (the attention mass of the
  keys more recent than ``tau``, computed without gradient and square-rooted as in the
  authors' code), clamped to ``[1e-5, 1e5]``. Queries and keys share their projection.
* **Prediction** (sec. 3.4): an MLP (``2 d -> final_fc -> 256 -> 1``, ReLU, dropout) of the
  retrieved knowledge and the question embedding ``x``.

Choices where the paper is silent or where the interface needs them:

* **A window of ``window`` answers** (default 200, pyKT's sequence length): every attention
  sees at most the ``window`` most recent positions (the question encoder and the knowledge
  encoder: the position and the ``window - 1`` before it; the retriever: the ``window``
  before it). pyKT cuts histories into separate pieces of 200 instead; a band keeps every
  prediction of a long history in context and makes the model's cost per answer bounded.
  It is the same model in training (windows of ``TrainConfig.max_len``), evaluation (whole
  histories) and serving.
* **Items with several concepts**: ``c`` and ``d`` are averaged over the item's concepts;
  items without a concept use the "no concept" slot 0.
* ``items='none'`` drops ``mu`` (the paper's "AKT-NR"-like concept-level form).
* **Serving**: the state keeps the last answers (items and responses) that the layers'
  bands reach from the next position: ``window + (2 window - 1)(n_blocks - 1) +
  n_blocks (window - 1)``, 399 with the defaults; so ``step`` is a shift of that buffer
  (O(window)) and ``predict`` recomputes the encoders over the buffer, then attends once per
  candidate item: ``O(n_blocks * window * d + final_fc * (2 d + 256))`` per candidate plus
  ``O(n_blocks * window^2 * d)`` per call (only the positions a prediction reads are
  encoded, :meth:`AKT._next_plan`; the buffer's positions before the learner's first answer
  are left out, and attention over keys that are all allowed skips its masking). Measured on
  one CPU thread with the defaults: a step 0.02 ms, a prediction with a full buffer about
  25 ms for the history plus 40-55 ms per 1,000 candidate items, with 30 answers 3 + 25 ms
  (DKT: 0.2 ms and 0.4 ms per 10,000). The state is about 5 KB a learner. The encoded
  histories of the last :data:`KEPT_HISTORIES` states asked are kept, by their content
  (:meth:`AKT._history_keys`): a service asks about one state several times (an answer's
  estimates after it, then that learner's next-items, which decodes the same state anew).
  A service reads concept mastery (the mean over a concept's items) through 9 items per
  concept set (:attr:`mastery_nodes`, interpolated in ``mu``: ``tutor.runtime.ConceptSets``).

Defaults are pyKT's for AKT: ``d = 256``, 8 heads, ``n_blocks = 1``, feed-forward 256,
final layer 512, dropout 0.05, Adam with lr 1e-4. Linear layers keep PyTorch's default
initialisation (the authors' code uses Xavier for the attention projections and zero
biases); ``mu`` starts at 0 as in theirs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import KTModel, ModelConfig, register
from .concepts import concept_weights
from .data import Batch, Vocab
from .items import check_items_option, difficulty_penalty, item_difficulty
from .kept import KeptByContent


@dataclass
class AKTConfig(ModelConfig):
    d_model: int = 256
    heads: int = 8
    n_blocks: int = 1
    d_ff: int = 256
    final_fc: int = 512
    dropout: float = 0.05
    window: int = 200  # answers an attention sees (see the module docstring)
    items: str = "rasch"  # 'rasch' (the paper) or 'none' (concept level)
    item_l2: float = 1e-5


_NEG = -1e32
#: learners' encoded histories AKT keeps for serving (:class:`~kt_models.kept.KeptByContent`),
#: about 0.8 MB each with the defaults
KEPT_HISTORIES = 16
#: candidate items per attention call in ``predict`` (bounds its memory)
_CANDIDATES = 1024
#: query positions per attention call over a history (at least the window)
_CHUNK = 256
#: attention scores per call (batch x heads x queries x keys): bounds the memory of a call
_BUDGET = 1 << 24


class _Attention(nn.Module):
    """Multi-head monotonic attention; queries and keys share one projection."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"d_model ({d}) must be a multiple of heads ({heads})")
        self.heads, self.dk = heads, d // heads
        self.kq = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.proj = nn.Linear(d, d)
        self.gamma = nn.Parameter(torch.zeros(heads, 1, 1))
        nn.init.xavier_uniform_(self.gamma)
        self.drop = nn.Dropout(dropout)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., L, d]`` -> ``[..., heads, L, dk]``."""
        return x.unflatten(-1, (self.heads, self.dk)).transpose(-3, -2)

    def weights(
        self, scores: torch.Tensor, dist: torch.Tensor, allowed: torch.Tensor | None
    ) -> torch.Tensor:
        """Attention weights from raw scores ``[..., heads, Lq, Lk]``, the key distances
        ``|t - tau|`` and the allowed keys (both broadcast to the scores; keys in ascending
        position). A query without an allowed key gets all-zero weights. ``allowed`` None:
        every key is allowed (the same weights, without the masking passes)."""
        with torch.no_grad():
            if allowed is None:
                w = torch.softmax(scores, -1)
            else:
                w = torch.softmax(scores.masked_fill(~allowed, _NEG), -1) * allowed
            later = w.sum(-1, keepdim=True) - w.cumsum(-1)  # mass of the more recent keys
            effect = (later * dist).clamp(min=0.0).sqrt()
        theta = F.softplus(self.gamma)  # [heads, 1, 1]
        decay = torch.exp(-theta * effect).clamp(1e-5, 1e5)
        if allowed is None:
            return self.drop(torch.softmax(scores * decay, -1))
        out = torch.softmax((scores * decay).masked_fill(~allowed, _NEG), -1) * allowed
        return self.drop(out)

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return q @ k.transpose(-1, -2) / math.sqrt(self.dk)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        allowed: torch.Tensor,
        dist: torch.Tensor,
    ) -> torch.Tensor:
        """Full attention: ``query`` ``[B, Lq, d]``, ``key``/``value`` ``[B, Lk, d]``,
        ``allowed`` ``[B or 1, Lq, Lk]``, ``dist`` ``[Lq, Lk]``."""
        q, k, v = self.split(self.kq(query)), self.split(self.kq(key)), self.split(self.v(value))
        w = self.weights(self.scores(q, k), dist, allowed.unsqueeze(-3))
        return self.proj((w @ v).transpose(-3, -2).flatten(-2))


class _Layer(nn.Module):
    """Attention, residual and layer norm, then (``ffn``) a feed-forward block likewise."""

    def __init__(self, cfg: AKTConfig, ffn: bool) -> None:
        super().__init__()
        self.attn = _Attention(cfg.d_model, cfg.heads, cfg.dropout)
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.drop1 = nn.Dropout(cfg.dropout)
        self.ffn = (
            nn.Sequential(
                nn.Linear(cfg.d_model, cfg.d_ff),
                nn.ReLU(),
                nn.Dropout(cfg.dropout),
                nn.Linear(cfg.d_ff, cfg.d_model),
            )
            if ffn
            else None
        )
        self.norm2 = nn.LayerNorm(cfg.d_model) if ffn else None
        self.drop2 = nn.Dropout(cfg.dropout)

    def finish(self, query: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        x = self.norm1(query + self.drop1(attended))
        if self.ffn is not None:
            assert self.norm2 is not None
            x = self.norm2(x + self.drop2(self.ffn(x)))
        return x

    def forward(self, query, key, value, allowed, dist):  # noqa: ANN001, ANN201
        return self.finish(query, self.attn(query, key, value, allowed, dist))


@register
class AKT(KTModel):
    """AKT: monotonic attention over past answers with Rasch item embeddings."""

    name = "akt"
    config_class = AKTConfig
    default_lr = 1e-4
    item_aware = True
    #: concept mastery from 9 items per concept set (see :meth:`item_difficulties`)
    mastery_nodes = 9

    def __init__(self, config: AKTConfig, vocab: Vocab) -> None:
        super().__init__(config, vocab)
        self.config: AKTConfig = config
        cfg = config
        if min(cfg.window, cfg.n_blocks, cfg.heads, cfg.d_model, cfg.d_ff, cfg.final_fc) < 1:
            raise ValueError("window, n_blocks, heads, d_model, d_ff and final_fc must be >= 1")
        d, slots = cfg.d_model, vocab.n_concepts + 1
        self.concept = nn.Embedding(slots, d)  # c
        self.response = nn.Embedding(2, d)  # g
        self.mu: nn.Embedding | None = None
        if check_items_option(cfg.items):
            self.mu = item_difficulty(vocab.n_items, cfg.item_l2)
            self.concept_vary = nn.Embedding(slots, d)  # d
            self.response_vary = nn.Embedding(2, d)  # f
        else:
            self.item_aware, self.concept_level = False, True
        self.knowledge = nn.ModuleList(_Layer(cfg, ffn=True) for _ in range(cfg.n_blocks))
        self.questions = nn.ModuleList(_Layer(cfg, ffn=False) for _ in range(cfg.n_blocks))
        self.retriever = nn.ModuleList(_Layer(cfg, ffn=True) for _ in range(cfg.n_blocks))
        self.out = nn.Sequential(
            nn.Linear(2 * d, cfg.final_fc),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.final_fc, 256),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(256, 1),
        )
        #: answers the serving state keeps: the reach of the layers' bands back from the next
        #: position (the retriever's window, each further block's question encoder and
        #: retriever, and the knowledge encoder's layers), so serving is exact
        w, n = cfg.window, cfg.n_blocks
        self.buffer = w + (2 * w - 1) * (n - 1) + n * (w - 1)
        #: learners' encoded histories (:meth:`_history_keys`), made when first needed
        self._kept: KeptByContent | None = None

    def __getstate__(self) -> dict:
        # the kept histories (and their lock) are neither pickled nor copied
        state = self.__dict__.copy()
        state["_kept"] = None
        return state

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202
        # .to(), .double(), .half() may keep the parameters' objects and versions
        if self._kept is not None:
            self._kept.clear()
        return super()._apply(fn, recurse)

    # ----------------------------------------------------------------- embeddings
    def _embed(
        self, item: torch.Tensor, correct: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Question embeddings ``x`` ``[..., d]`` and (with ``correct``) answer embeddings."""
        c, w = concept_weights(self.item_concepts, item)
        w = w.unsqueeze(-1)
        x = (self.concept(c) * w).sum(-2)
        y = None if correct is None else x + self.response(correct.long())
        if self.mu is not None:
            mu = self.mu(item)
            dvar = (self.concept_vary(c) * w).sum(-2)
            x = x + mu * dvar
            if y is not None:
                assert correct is not None
                y = y + mu * (dvar + self.response_vary(correct.long()))
        return x, y

    def item_difficulties(self) -> np.ndarray | None:
        """``mu`` per item: the items of one concept set differ in nothing else (their
        ``c`` and ``d`` are the set's), so a prediction is a function of the set and ``mu``."""
        if self.mu is None:
            return None
        return self.mu.weight.detach()[:, 0].cpu().numpy().astype(np.float64)

    def item_penalty(self, batch: Batch) -> torch.Tensor | float:
        if self.mu is None:
            return 0.0
        return difficulty_penalty(self.mu, self.config.item_l2, batch)

    # ----------------------------------------------------------------- encoders
    def _band(
        self, q_pos: torch.Tensor, k_pos: torch.Tensor, peek: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Allowed keys ``[Lq, Lk]`` (the past within the window; ``peek``: the position
        itself too) and the distances ``|t - tau|`` as floats."""
        gap = q_pos.unsqueeze(-1) - k_pos.unsqueeze(-2)
        w = self.config.window
        allowed = (gap >= 0) & (gap < w) if peek else (gap > 0) & (gap <= w)
        return allowed, gap.abs().float()

    def _banded(
        self,
        layer: _Layer,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        valid: torch.Tensor,
        peek: bool,
        start: int = 0,
    ) -> torch.Tensor:
        """``layer`` over positions ``start..L-1`` (``[B, L, d]`` each; ``valid`` ``[B, L]``:
        real positions), in chunks of queries that each see only the keys their band can
        reach, so that memory grows with ``L * window``, not ``L^2`` (a long history in
        evaluation). Positions before ``start`` keep ``query`` (nothing reads them)."""
        n_b, n_pos, w = query.shape[0], query.shape[1], self.config.window
        # queries per call: at least the window where memory allows, fewer for a large batch
        per_query = n_b * self.config.heads * 2 * w
        chunk = max(1, min(max(w, _CHUNK), _BUDGET // max(per_query, 1)))
        out = [query[:, :start]] if start > 0 else []
        for begin in range(start, n_pos, chunk):
            end, first = min(begin + chunk, n_pos), max(0, begin - w)
            allowed, dist = self._band(
                torch.arange(begin, end, device=query.device),
                torch.arange(first, end, device=query.device),
                peek,
            )
            allowed = allowed & valid[:, first:end].unsqueeze(1)
            out.append(
                layer(query[:, begin:end], key[:, first:end], value[:, first:end], allowed, dist)
            )
        return out[0] if len(out) == 1 else torch.cat(out, 1)

    def _next_plan(self, n_pos: int) -> dict[str, list[int | None]]:
        """For a prediction at position ``n_pos`` (after a history of ``n_pos``): from which
        position each layer's outputs over the history are read, walking back from the
        candidate's retriever (it reads the last ``window`` question-encoder outputs and
        encoded answers); earlier positions are not computed. The last retriever's outputs
        over the history are not needed at all (None)."""
        w, n = self.config.window, self.config.n_blocks
        q_start: list[int | None] = [0] * n
        r_start: list[int | None] = [None] * n
        need, y_need = n_pos - w, n_pos - w
        for b in reversed(range(n)):
            q_start[b] = need
            x_start = need - w + 1  # this question layer's inputs (the last block's too)
            if b > 0:
                r_start[b - 1] = x_start
                need = x_start - w
                y_need = min(y_need, need)
        k_start: list[int | None] = [0] * n
        for layer in reversed(range(n)):
            k_start[layer] = y_need
            y_need = y_need - w + 1

        def clamp(v: list[int | None]) -> list[int | None]:
            return [None if x is None else max(0, x) for x in v]

        return {
            "knowledge": clamp(k_start),
            "questions": clamp(q_start),
            "retriever": clamp(r_start),
        }

    def _encode(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        valid: torch.Tensor,
        plan: dict[str, list[int | None]] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Every position's retrieved knowledge ``[B, L, d]`` over positions ``0..L-1`` of
        ``x``/``y`` ``[B, L, d]`` (``valid`` ``[B, L]``: real positions), with each question
        layer's input and output (for :meth:`_candidate_keys`) and the encoded answers.
        ``plan`` (:meth:`_next_plan`) computes only what a prediction after them reads."""
        n = self.config.n_blocks
        plan = plan or {"knowledge": [0] * n, "questions": [0] * n, "retriever": [0] * n}
        for layer, start in zip(self.knowledge, plan["knowledge"], strict=True):
            y = self._banded(layer, y, y, y, valid, peek=True, start=start or 0)
        inputs = []
        for b, (qenc, retr) in enumerate(zip(self.questions, self.retriever, strict=True)):
            inputs.append(x)
            x = self._banded(qenc, x, x, x, valid, peek=True, start=plan["questions"][b] or 0)
            inputs.append(x)
            start = plan["retriever"][b]
            if start is not None:
                x = self._banded(retr, x, x, y, valid, peek=False, start=start)
        return x, inputs, [y]

    def _readout(self, knowledge: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([knowledge, x], -1)).squeeze(-1)

    # ----------------------------------------------------------------- training form
    def forward(self, batch: Batch) -> torch.Tensor:
        x, y = self._embed(batch.item, batch.correct)
        assert y is not None
        knowledge, _, _ = self._encode(x, y, batch.mask)
        return self._readout(knowledge, x)

    # ----------------------------------------------------------------- serving form
    def init_state(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self.concept.weight.device
        items = torch.zeros(n, self.buffer, dtype=torch.long, device=dev)
        # responses: 0/1, -1 for an empty slot (the buffer fills from the right)
        correct = torch.full((n, self.buffer), -1.0, device=dev)
        return (items, correct)

    @torch.no_grad()
    def step(self, state, item, correct, time=None):  # type: ignore[override]
        items, resp = state
        items = torch.cat([items[:, 1:], item.long().unsqueeze(1)], 1)
        resp = torch.cat([resp[:, 1:], correct.float().unsqueeze(1)], 1)
        return (items, resp)

    @torch.no_grad()
    def predict_logits(self, state, items, at_time=None):  # type: ignore[override]
        hist_items, resp = state
        if len(resp) > 1:
            # one learner at a time: each leaves out its own empty positions and, with a
            # history shorter than the window, attends without masks (a class of 30 learners
            # with 1,071 candidates each: 5.1 s batched, with one learner's empty positions)
            # (each learner's kept encoding is looked up; a batch larger than what is kept
            # would only push out the encodings of the learners a service is serving)
            one = torch.arange(len(resp), device=resp.device).unsqueeze(1)
            store = len(resp) <= KEPT_HISTORIES
            return torch.cat(
                [self._predict_one(self.state_select(state, i), items[i], True, store) for i in one]
            )
        return self._predict_one(state, items, keep=True)

    def _predict_one(
        self,
        state,  # noqa: ANN001
        items: torch.Tensor,
        keep: bool = False,
        store: bool = True,
    ) -> torch.Tensor:
        """One learner's logits of ``items`` ``[1, m]``; ``keep``: look up and (``store``)
        keep its encoded history (:meth:`_history_keys`)."""
        keys, w = self._history_keys(*state, keep=keep, store=store)
        x_new, _ = self._embed(items, None)  # [n, m, d]
        per_item = x_new.shape[0] * self.config.heads * (w + 1)
        size = max(1, min(_CANDIDATES, _BUDGET // per_item))
        out = [
            self._readout(self._retrieve_next(part, keys), part)
            for part in x_new.split(size, dim=1)
        ]
        return torch.cat(out, 1)

    def _history_keys(
        self, hist_items: torch.Tensor, resp: torch.Tensor, keep: bool = False, store: bool = True
    ) -> tuple[dict, int]:
        """The encoded history that candidates attend over (:meth:`_candidate_keys`) and its
        length. With ``keep`` (one learner's state, on the CPU), kept by the state's content
        (:class:`~kt_models.kept.KeptByContent`, the last :data:`KEPT_HISTORIES` states
        asked) while the weights and buffers are the same objects, unchanged (their version
        counters; a change through ``.data`` is not seen), in eval mode and outside autograd.
        A service asks about one state several times: its concepts' nodes, then the items a
        policy looks at, and across requests (an answer's estimates after it, then that learner's
        next-items, which decodes the same state anew); the encoding is most of a short
        request's cost. ``store=False`` looks up without keeping."""
        keep = keep and not (self.training or torch.is_grad_enabled())
        keep = keep and hist_items.device.type == "cpu" and resp.device.type == "cpu"
        tag = key = kept = None
        if keep:
            tensors = [*self.parameters(), *self.buffers()]
            # (tensors made under inference_mode have no version counter: nothing kept)
            keep = not any(t.is_inference() for t in (*tensors, hist_items, resp))
        if keep:
            tag = tuple((id(t), t._version) for t in tensors)
            kept = self._kept
            if kept is None:
                kept = self._kept = KeptByContent(KEPT_HISTORIES)
            key = kept.key((hist_items, resp))
            hit = kept.get(key, (hist_items, resp), tag)
            if hit is not None:
                return hit
        state_items, state_resp = hist_items, resp
        valid = resp >= 0
        # the buffer fills from the right, and a position before a learner's first answer is
        # never attended (it is masked as a key): the positions empty for every learner are
        # left out (exact), so a short history costs a fraction of a full buffer
        empty = min(int((~valid).all(0).long().cumprod(0).sum()), valid.shape[1] - 1)
        if empty:
            hist_items, resp, valid = hist_items[:, empty:], resp[:, empty:], valid[:, empty:]
        x, y = self._embed(hist_items, resp.clamp(min=0))
        assert y is not None
        _, inputs, (y_enc,) = self._encode(x, y, valid, self._next_plan(valid.shape[1]))
        # a candidate at the next position sees at most the last `window` positions
        w = min(self.config.window, valid.shape[1])
        keys = self._candidate_keys(
            self._key_inputs([t[:, -w:] for t in inputs], y_enc[:, -w:]), valid[:, -w:]
        )
        if kept is not None and store:
            kept.put(key, (state_items, state_resp), (keys, w), tag)  # type: ignore[arg-type]
        return keys, w

    @torch.no_grad()
    def multi_step_logits(self, batch: Batch, n: int) -> torch.Tensor:
        """The ``n``-step protocol (:meth:`KTModel.multi_step_logits`) in one pass: the
        encoders run once over the whole histories (a position's encodings there are the
        serving form's, whose buffer holds everything the bands reach), then every cut's
        candidates attend over the ``window`` positions before the cut, through the serving
        form's own :meth:`_candidate_keys` and :meth:`_retrieve_next`. The serving loop
        encodes the window's reach again at every cut (measured 13x slower with 10 steps and
        the defaults); this costs one forward plus a candidate's attention per position."""
        x, y = self._embed(batch.item, batch.correct)
        assert y is not None
        valid = batch.mask
        _, inputs, (y_enc,) = self._encode(x, y, valid)
        n_b, n_pos = batch.item.shape
        dev = batch.item.device
        out = torch.zeros(n_b, n_pos, device=dev)
        if n >= n_pos:
            return out
        cuts = torch.arange(n, n_pos, n, device=dev)
        # (learner, cut) pairs with a real answer to predict at the cut
        learner, cut = torch.nonzero(valid[:, cuts], as_tuple=True)
        cut = cuts[cut]
        w = min(self.config.window, self.buffer)
        hist_pos = torch.arange(-w, 0, device=dev)
        ahead = torch.arange(n, device=dev)
        projected = self._key_inputs(inputs, y_enc)  # once per position, not per window
        # per pair: the gathered keys and values, the candidates' attention and activations
        d, heads = x.shape[-1], self.config.heads
        per_pair = 4 * self.config.n_blocks * w * d + n * (heads * (w + 1) + 8 * d)
        size = max(1, 4 * _BUDGET // per_pair)
        for lo in range(0, len(cut), size):
            b, c = learner[lo : lo + size], cut[lo : lo + size]
            pos = c.unsqueeze(1) + hist_pos  # [P, w]: the window before the cut
            known = pos >= 0
            pos = pos.clamp(min=0)
            rows = b.unsqueeze(1)
            keys = self._candidate_keys([t[rows, pos] for t in projected], valid[rows, pos] & known)
            at = c.unsqueeze(1) + ahead  # [P, n]: the positions predicted from this cut
            inside = at < n_pos
            at = at.clamp(max=n_pos - 1)
            x_new = x[rows, at]
            logits = self._readout(self._retrieve_next(x_new, keys), x_new)
            rows = rows.expand_as(at)
            out[rows[inside], at[inside]] = logits[inside]
        return out

    def _key_inputs(self, inputs: list[torch.Tensor], y_enc: torch.Tensor) -> list[torch.Tensor]:
        """Per block, the projected keys and values ``[n, L, d]`` that candidates attend over:
        of the history's question-layer inputs (question encoder) and of its outputs with the
        encoded answers (retriever)."""
        out = []
        for b, (qenc, retr) in enumerate(zip(self.questions, self.retriever, strict=True)):
            a, r = qenc.attn, retr.attn
            hist_in, hist_out = inputs[2 * b], inputs[2 * b + 1]
            out += [a.kq(hist_in), a.v(hist_in), r.kq(hist_out), r.v(y_enc)]
        return out

    def _candidate_keys(
        self, projected: list[torch.Tensor], valid: torch.Tensor
    ) -> dict[str, object]:
        """What every candidate of :meth:`_retrieve_next` attends over: the keys and values
        of :meth:`_key_inputs` per head, and the allowed keys."""
        n, L = valid.shape
        dev = valid.device
        k_pos = torch.arange(L + 1, device=dev)
        q_pos = torch.full((1,), L, device=dev)
        peek, p_dist = self._band(q_pos, k_pos, True)  # [1, L+1]: the last `window` and itself
        past, r_dist = self._band(q_pos, k_pos[:L], False)  # [1, L]
        keys_ok = torch.cat([valid, valid.new_ones(n, 1)], 1)
        split = self.questions[0].attn.split  # [n, L, d] -> [n, heads, L, dk]
        blocks = [
            tuple(split(t) for t in projected[4 * b : 4 * b + 4])
            for b in range(self.config.n_blocks)
        ]
        peek = (peek & keys_ok.unsqueeze(1)).unsqueeze(1)  # [n, 1, 1, L+1]
        past = (past & valid.unsqueeze(1)).unsqueeze(1)  # [n, 1, 1, L]
        # the question encoder's leading keys no candidate may see (with a full window: the
        # oldest, one step past its band) are left out of its keys
        drop = min(int((~peek[:, 0, 0]).all(0).long().cumprod(0).sum()), L)
        if drop:
            peek, p_dist = peek[..., drop:], p_dist[:, drop:]
            blocks = [
                (k_q[..., drop:, :], v_q[..., drop:, :], k_r, v_r) for k_q, v_q, k_r, v_r in blocks
            ]
        return {
            "blocks": blocks,
            # None where every key is allowed (a history shorter than the window)
            "peek": None if bool(peek.all()) else peek,
            "past": None if bool(past.all()) else past,
            "p_dist": p_dist,
            "r_dist": r_dist,
        }

    def _retrieve_next(self, x: torch.Tensor, keys: dict) -> torch.Tensor:
        """The retrieved knowledge ``[n, m, d]`` of candidate questions ``x`` ``[n, m, d]`` at
        the position after the history: each question layer attends over the history's layer
        inputs and the candidate itself, the retriever over the history only (the same
        computation as :meth:`_encode` at that position)."""
        for (qenc, retr), (k_q, v_q, k_r, v_r) in zip(
            zip(self.questions, self.retriever, strict=True), keys["blocks"], strict=True
        ):
            a = qenc.attn
            q = a.split(a.kq(x))  # [n, heads, m, dk]
            s_self = (q * q).sum(-1, keepdim=True) / math.sqrt(a.dk)  # its own key is q
            w = a.weights(torch.cat([a.scores(q, k_q), s_self], -1), keys["p_dist"], keys["peek"])
            L = k_q.shape[-2]
            att = w[..., :L] @ v_q + w[..., L:] * a.split(a.v(x))
            x = qenc.finish(x, a.proj(att.transpose(1, 2).flatten(-2)))
            r = retr.attn
            w = r.weights(r.scores(r.split(r.kq(x)), k_r), keys["r_dist"], keys["past"])
            x = retr.finish(x, r.proj((w @ v_r).transpose(1, 2).flatten(-2)))
        return x

    def state_select(self, state, index):  # type: ignore[override]
        return (state[0][index], state[1][index])
