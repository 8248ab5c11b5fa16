"""The active model inside the service: loading registered checkpoints, learner states as
bytes, incremental updates and batched predictions.

A learner's state is the model's serving state (``init_state``/``step``) for one learner,
flattened to the bytes of its tensors in a fixed order, so that storing it costs one memcpy
and any API worker can continue it. Models are loaded from the database (the checkpoint bytes
are stored there) and kept in a small per-process cache keyed by model version id, so a hot
swap needs no restart: the next request of the organisation uses the newly active version.
"""

from __future__ import annotations

import functools
import hashlib
import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import torch
from scipy import sparse, special

from kt_models.base import CheckpointError, KTModel, NumpyStep, load_checkpoint
from kt_models.kept import KeptByContent

from .blocking import checkpoint, may_block

SECONDS_PER_DAY = 86400.0
#: the reachable mastery scale's reference (:meth:`LoadedModel.scaled_mastery`): a learner who
#: has just answered this many in a row correctly (ASSISTments' skill-builder mastery
#: criterion) has mastery 1
REFERENCE_STREAK = 3
#: concept lists whose weights :meth:`ConceptSets.rows` keeps (then it starts again), and the
#: longest list it keeps (longer ones, a whole catalogue's, are computed each time)
ROWS_CACHE = 4096
ROWS_CACHE_CONCEPTS = 16
#: the largest affine readout (concept sets x features) a loaded model keeps (32 MB)
READOUT_MAX_CELLS = 8_000_000
#: single learners' whole-catalogue predictions a loaded model without an affine readout
#: keeps, by state content (:meth:`LoadedModel._predict_sets_kept`)
KEPT_PREDICTIONS = 32


@dataclass(frozen=True)
class ConceptSets:
    """How a model's items read as concepts, built once per model version, sparse so that no
    read grows with the catalogue's items x concepts.

    A concept-level model (``KTModel.concept_level``) predicts the same for every item with
    the same set of concepts, so predictions are made once per distinct concept set (its
    *signature*; the catalogue's 50,000 items over 500 single concepts are 500 signatures) and
    read per item through ``item_sig``. For any other model every item is its own
    signature. A concept's mastery is the mean predicted success over its items:
    ``weights @ p_sig``, ``weights`` ``[C + 1, S]`` sparse (the share of the concept's items
    that carry each signature).

    A model whose prediction of an item depends on the item only through its concept set
    and one scalar difficulty, and is costly per item (``KTModel.mastery_nodes``: AKT), gets
    *nodes* instead: per concept set, ``nodes`` of its items at evenly spaced ranks of
    difficulty (the easiest and the hardest among them) are the signatures, and every other
    item's prediction counts in its concepts' mastery as the linear interpolation, in the
    difficulty, between the two nodes around it (``weights`` folds that in). Its items have
    no signature of their own then (``item_sig`` None): they are predicted one by one.
    """

    #: [S] a model item index of each signature (its first item, or a node)
    sig_item: np.ndarray
    #: [n_items + 1] the signature of each model item (item 0: the model's unknown item);
    #: None with nodes (each item is predicted itself)
    item_sig: np.ndarray | None
    #: [C + 1, S] sparse (scipy CSR), float32: concept mastery = weights @ p_sig
    weights: sparse.csr_matrix
    #: concept c's model items: ``concept_item[concept_start[c]:concept_start[c + 1]]``
    concept_start: np.ndarray
    concept_item: np.ndarray
    _rows: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def build(
        cls,
        item_concepts: np.ndarray,
        n_concepts: int,
        per_set: bool,
        difficulty: np.ndarray | None = None,
        nodes: int = 0,
    ) -> ConceptSets:
        """From the vocabulary's ``[n_items + 1, K]`` concept table (0: none) over
        ``n_concepts`` concepts (some may have no item); ``per_set``: one signature per
        distinct concept set (a concept-level model), else one per item, or, with
        ``difficulty`` ``[n_items + 1]`` and ``nodes`` > 0, ``nodes`` per concept set (see
        the class)."""
        plain = cls._build(item_concepts, n_concepts, per_set)
        if per_set or difficulty is None or nodes == 0:
            return plain
        if nodes < 2:
            raise ValueError(f"nodes must be 0 (every item) or at least 2, got {nodes}")
        return plain._with_nodes(np.asarray(item_concepts), difficulty, nodes)

    def _with_nodes(
        self, item_concepts: np.ndarray, difficulty: np.ndarray, nodes: int
    ) -> ConceptSets:
        """These per-item sets, read through ``nodes`` items per concept set."""
        n_items1 = len(self.item_sig)  # type: ignore[arg-type]
        mu = np.asarray(difficulty, dtype=np.float64).reshape(-1)
        if len(mu) != n_items1:
            raise ValueError(f"{len(mu)} item difficulties for {n_items1} items (with item 0)")
        qs = np.sort(np.where(item_concepts > 0, item_concepts, 0), axis=1)
        _, group = np.unique(qs[1:], axis=0, return_inverse=True)
        group = group.reshape(-1)
        items = np.arange(1, n_items1, dtype=np.int64)
        # items by concept set, then difficulty (then id: ties stay in a fixed order)
        order = np.lexsort((items, mu[1:], group))
        g_sorted = group[order]
        starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
        ends = np.r_[starts[1:], len(order)]
        node_items: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]  # item 0: itself
        rows, cols, vals = [np.zeros(1, np.int64)], [np.zeros(1, np.int64)], [np.ones(1)]
        n_sig = 1
        for a, b in zip(starts, ends, strict=True):
            members = items[order[a:b]]  # this set's items, easiest... (ascending mu)
            if not qs[members[0]].any():
                continue  # items without a concept: no concept's mastery reads them
            size = b - a
            ranks = np.unique(np.round(np.linspace(0, size - 1, min(nodes, size))).astype(int))
            picked = members[ranks]
            node_items.append(picked)
            x = mu[picked]
            # each member between the nodes ranked around it: weights on the two nodes
            right = np.clip(np.searchsorted(ranks, np.arange(size), side="left"), 0, len(ranks) - 1)
            left = np.clip(right - 1, 0, len(ranks) - 1)
            exact = ranks[right] == np.arange(size)
            left = np.where(exact, right, left)
            span = x[right] - x[left]
            share = np.where(span > 0, (mu[members] - x[left]) / np.where(span > 0, span, 1.0), 1.0)
            share = np.clip(share, 0.0, 1.0)
            rows += [members, members]
            cols += [n_sig + left, n_sig + right]
            vals += [1.0 - share, share]
            n_sig += len(picked)
        interp = sparse.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(n_items1, n_sig),
        )  # [n_items + 1, S]: each item's prediction from the nodes (duplicates summed)
        weights = sparse.csr_matrix(self.weights @ interp, dtype=np.float32)
        weights.eliminate_zeros()
        return ConceptSets(
            np.concatenate(node_items), None, weights, self.concept_start, self.concept_item
        )

    @classmethod
    def _build(cls, item_concepts: np.ndarray, n_concepts: int, per_set: bool) -> ConceptSets:
        q = np.asarray(item_concepts, dtype=np.int64)
        n_items1, n_c1 = q.shape[0], max(int(n_concepts), int(q.max(initial=0))) + 1
        # the signature: the item's concept entries, sorted (a model reads them in any order)
        qs = np.sort(np.where(q > 0, q, 0), axis=1)
        if per_set:
            _, sig_item, item_sig = np.unique(qs, axis=0, return_index=True, return_inverse=True)
            item_sig = item_sig.reshape(-1).astype(np.int64)
        else:
            item_sig = np.arange(n_items1, dtype=np.int64)
            sig_item = item_sig.copy()
        # the item -> concept links, a concept listed twice for one item once
        dup = np.zeros_like(qs, dtype=bool)
        dup[:, 1:] = qs[:, 1:] == qs[:, :-1]
        qs = np.where(dup, 0, qs)
        rows, cols = np.nonzero(qs[1:] > 0)
        link_item = rows + 1  # model items 1..n (item 0 is no concept's)
        link_concept = qs[1:][rows, cols]
        order = np.lexsort((link_item, link_concept))
        link_item, link_concept = link_item[order], link_concept[order]
        size = np.bincount(link_concept, minlength=n_c1)
        start = np.zeros(n_c1 + 1, dtype=np.int64)
        np.cumsum(size, out=start[1:])
        # weights[c, s] = (items of concept c with signature s) / (items of concept c)
        key = link_concept * len(sig_item) + item_sig[link_item]
        uniq, count = np.unique(key, return_counts=True)
        wc, ws = uniq // len(sig_item), uniq % len(sig_item)
        values = count / np.maximum(size[wc], 1)
        weights = sparse.csr_matrix(
            (values.astype(np.float32), (wc, ws)), shape=(n_c1, len(sig_item))
        )
        return cls(sig_item.astype(np.int64), item_sig, weights, start, link_item)

    def items_of(self, concept: int) -> np.ndarray:
        """The model items (1..n) of model concept ``concept``."""
        return self.concept_item[self.concept_start[concept] : self.concept_start[concept + 1]]

    def rows(self, concepts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The signatures that hold an item of ``concepts`` and the ``[len(concepts),
        len(signatures)]`` weights (dense: a few concepts' own signatures) that turn their
        predictions into those concepts' mastery: what a read of a few concepts needs,
        instead of every concept set. Read straight off the sparse rows (scipy's row
        selection costs half a millisecond). Short concept lists (an answered item's
        concepts come back again and again) are kept, at most :data:`ROWS_CACHE` of them.
        (:meth:`LoadedModel.estimates` reads longer lists through :meth:`mastery`.)"""
        key = tuple(int(c) for c in concepts)
        hit = self._rows.get(key)
        if hit is None:
            indptr, indices, data = self.weights.indptr, self.weights.indices, self.weights.data
            spans = [(indptr[c], indptr[c + 1]) for c in key]
            cols = np.unique(np.concatenate([indices[a:b] for a, b in spans] or [[]]))
            cols = cols.astype(np.int64)
            dense = np.zeros((len(key), len(cols)), dtype=np.float32)
            for r, (a, b) in enumerate(spans):
                dense[r, np.searchsorted(cols, indices[a:b])] = data[a:b]
            hit = (cols, dense)
            if len(key) <= ROWS_CACHE_CONCEPTS:
                if len(self._rows) >= ROWS_CACHE:
                    self._rows.clear()
                self._rows[key] = hit
        return hit

    def mastery(self, p_sig: np.ndarray | torch.Tensor) -> np.ndarray:
        """Concept mastery ``[..., C + 1]`` from predictions per signature ``[..., S]``."""
        p = np.asarray(p_sig, dtype=np.float32)
        flat = p.reshape(-1, p.shape[-1])
        m = np.asarray(self.weights @ flat.T).T  # [n, C + 1]
        return m.reshape(*p.shape[:-1], m.shape[-1]).astype(np.float32)


def _leaves(state: Any) -> list[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, (tuple, list)):
        return [t for s in state for t in _leaves(s)]
    if isinstance(state, dict):
        return [t for k in sorted(state) for t in _leaves(state[k])]
    return []


def _rebuild(template: Any, leaves: list[torch.Tensor], pos: list[int]) -> Any:
    if isinstance(template, torch.Tensor):
        t = leaves[pos[0]]
        pos[0] += 1
        return t
    if isinstance(template, (tuple, list)):
        return type(template)(_rebuild(s, leaves, pos) for s in template)
    if isinstance(template, dict):
        out = {}
        for k in sorted(template):
            out[k] = _rebuild(template[k], leaves, pos)
        return {k: out[k] for k in template}
    return template


@dataclass
class LoadedModel:
    """A registered model version, ready to serve."""

    model_id: int
    model: KTModel
    time_unit: str  # 'days' or 'answers'
    item_index: dict[str, int]
    concept_ids: list[str]  # model concept index c + 1 <-> concept_ids[c]
    #: the items as concept sets (sparse; predictions once per distinct set)
    sets: ConceptSets
    _template: Any
    _layout: list[tuple[tuple[int, ...], torch.dtype, int]]
    #: streak length -> (floor, ceiling) of concept mastery (see :meth:`mastery_reference`)
    _references: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    #: concept external id -> model concept index (c + 1), built with the model
    _concept_pos: dict[str, int] = field(default_factory=dict)
    #: per state leaf, the axis indexing learners (see :func:`batch_axes`; found on first use)
    _batch_axes: list[int | None] | None = None
    #: the affine readout per concept set, ``(A [S, F], b [S])`` float32 (see
    #: :meth:`set_readout`); ``False`` until first asked, ``None`` where there is none
    _readout: tuple[np.ndarray, np.ndarray] | None | bool = False
    #: the model's numpy step (see :meth:`_numpy_kernel`); ``False`` until first asked
    _numpy_step: NumpyStep | None | bool = False
    #: recent single learners' whole-catalogue predictions (models without an affine readout),
    #: by state content (:meth:`_predict_sets_kept`)
    _kept: KeptByContent = field(default_factory=lambda: KeptByContent(KEPT_PREDICTIONS))

    def __post_init__(self) -> None:
        self._concept_pos = {c: i + 1 for i, c in enumerate(self.concept_ids)}

    @classmethod
    def from_bytes(
        cls, model_id: int, blob: bytes, mapping: dict[str, dict[str, str]] | None = None
    ) -> LoadedModel:
        """A stored checkpoint, ready to serve. ``mapping`` (``{"items": {model id:
        catalogue id}, "concepts": {...}}``, from registration) renames the model's item and
        concept ids to the organisation's, for a model trained under other ids."""
        tmp = io.BytesIO(blob)
        model, payload = _load_from_buffer(tmp)
        model.eval()
        run = payload.get("extra", {}).get("run", {})
        time_unit = run.get("time_unit", "days")
        vocab = model.vocab
        items_map = (mapping or {}).get("items") or {}
        concepts_map = (mapping or {}).get("concepts") or {}
        for kind, ids, table in (
            ("items", vocab.items, items_map),
            ("concepts", vocab.concepts, concepts_map),
        ):
            renamed = [table.get(x, x) for x in ids]
            if len(set(renamed)) != len(renamed):
                raise CheckpointError(
                    f"the id mapping gives two of the model's {kind} the same id (a mapped id "
                    f"equals another {kind[:-1]} the mapping leaves as it is)"
                )
        template = model.init_state(1)
        layout = [
            (tuple(t.shape), t.dtype, t.numel() * t.element_size()) for t in _leaves(template)
        ]
        return cls(
            model_id=model_id,
            model=model,
            time_unit=time_unit,
            item_index={items_map.get(it, it): i + 1 for i, it in enumerate(vocab.items)},
            concept_ids=[concepts_map.get(c, c) for c in vocab.concepts],
            sets=ConceptSets.build(
                np.asarray(vocab.item_concepts),
                vocab.n_concepts,
                bool(model.concept_level),
                model.item_difficulties() if model.item_aware else None,
                model.mastery_nodes,
            ),
            _template=template,
            _layout=layout,
        )

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def item_ids(self) -> list[str]:
        """The model's items in index order (item index i + 1 <-> item_ids[i]), renamed by
        the registration's mapping like ``item_index``."""
        return sorted(self.item_index, key=self.item_index.__getitem__)

    @property
    def forgets(self) -> bool:
        return bool(self.model.forgets) and self.time_unit == "days"

    # --------------------------------------------------------------- state bytes
    def encode(self, state: Any) -> bytes:
        """The state's leaves' bytes, in C order (a plain CPU tensor straight through numpy:
        each torch call a request saves counts, see :meth:`step_many`)."""
        return b"".join(
            (t.numpy() if t.is_cpu and not t.requires_grad else t.detach().cpu().numpy()).tobytes()
            for t in _leaves(state)
        )

    def decode(self, blob: bytes) -> Any:
        leaves, off = [], 0
        for shape, dtype, nbytes in self._layout:
            arr = np.frombuffer(
                blob, dtype=_np_dtype(dtype), count=nbytes // _itemsize(dtype), offset=off
            )
            leaves.append(torch.from_numpy(arr.reshape(shape).copy()))
            off += nbytes
        if off != len(blob):
            raise ValueError(
                f"stored state has {len(blob)} bytes, model {self.model_id} expects {off}"
            )
        return _rebuild(self._template, leaves, [0])

    def initial_state(self) -> bytes:
        return self.encode(self.model.init_state(1))

    # --------------------------------------------------------------- inference
    @property
    def concept_positions(self) -> Mapping[str, int]:
        """Concept external id -> the model's index (1..C), for reads of many concepts."""
        return self._concept_pos

    def concept_index(self, concept_ext: str) -> int | None:
        """The model's index (1..C) of the organisation's concept ``concept_ext``; None for a
        concept the model was not trained on."""
        return self._concept_pos.get(concept_ext)

    def item_idx(self, external_ids: list[str]) -> np.ndarray:
        """Model indices of items (0 for items the model was not trained on)."""
        get = self.item_index.get
        return np.fromiter(
            (get(i, 0) for i in external_ids), dtype=np.int64, count=len(external_ids)
        )

    def time_value(self, ts: datetime | None, first_seen: datetime | None, n_before: int) -> float:
        if self.time_unit == "answers" or ts is None or first_seen is None:
            return float(n_before)
        return max((ts - first_seen).total_seconds(), 0.0) / SECONDS_PER_DAY

    @torch.no_grad()
    def step_many(
        self, state: Any, items: list[int], correct: list[int], times: list[float]
    ) -> Any:
        """Fold answers into one learner's state, in order (O(1) each): with the model's
        numpy step where it has one (:meth:`kt_models.base.KTModel.numpy_step`: the answer
        path's step, without torch's per-call cost), else :func:`step_through`."""
        kernel = self._numpy_kernel()
        leaves = _leaves(state)
        if (
            kernel is not None
            and state_batch_size(self, state) == 1
            and not any(t.requires_grad or t.device.type != "cpu" for t in leaves)
        ):
            arrays = [t.numpy() for t in leaves]
            for item, right, time in zip(items, correct, times, strict=True):
                arrays = kernel(arrays, int(item), int(right), float(time))
            return _rebuild(self._template, [torch.from_numpy(a) for a in arrays], [0])
        return step_through(
            self,
            np.array([items], dtype=np.int64),
            np.array([correct], dtype=np.float32),
            np.array([times], dtype=np.float32),
            state=state,
        )

    def _numpy_kernel(self) -> NumpyStep | None:
        """The model's :meth:`~kt_models.base.KTModel.numpy_step`, asked once (a loaded model
        never changes its weights); None in training mode."""
        if self.model.training:
            return None
        if self._numpy_step is False:
            self._numpy_step = self.model.numpy_step()
        return self._numpy_step  # type: ignore[return-value]

    @torch.no_grad()
    def predict(self, state: Any, items: np.ndarray, at_time: float | None = None) -> np.ndarray:
        """Success probabilities of ``items`` (model indices) for one learner."""
        it = torch.as_tensor(np.asarray(items, dtype=np.int64)).unsqueeze(0)
        tt = None
        if at_time is not None and self.forgets:
            tt = torch.full(it.shape, float(at_time), dtype=torch.float32)
        return self.model.predict(state, it, at_time=tt)[0].numpy()

    @torch.no_grad()
    def predict_sets(self, state: Any, at_time: float | None = None) -> np.ndarray:
        """Success probabilities per concept set ``[S]`` (:class:`ConceptSets`): one
        prediction per distinct set, the same as every item of the set gets."""
        at = None if at_time is None else np.array([at_time])
        return self.predict_set_columns(state, None, at)[0]

    @torch.no_grad()
    def set_readout(self) -> tuple[np.ndarray, np.ndarray] | None:
        """For a model with an affine readout (:attr:`kt_models.base.KTModel.affine_readout`),
        each concept set's logit as ``A @ features + b``: ``A`` ``[S, F]`` and ``b`` ``[S]``
        (float32), read off the model once (its logits for the zero features and for each
        unit vector) and kept; ``None`` for other models and where ``A`` would hold more
        than :data:`READOUT_MAX_CELLS` numbers."""
        if self._readout is not False:
            return self._readout  # type: ignore[return-value]
        may_block("the model's readout")
        readout = None
        if self.model.affine_readout:
            feats = self.model.readout_features(self.model.init_state(1))
            f_n, s_n = feats.shape[-1], len(self.sets.sig_item)
            if f_n * s_n <= READOUT_MAX_CELLS:
                probe = torch.cat([feats.new_zeros(1, f_n), torch.eye(f_n, dtype=feats.dtype)])
                items = torch.as_tensor(self.sets.sig_item).unsqueeze(0).expand(f_n + 1, -1)
                z = self.model.feature_logits(probe, items.contiguous()).double()  # [F + 1, S]
                a = (z[1:] - z[0]).T  # [S, F]
                readout = (
                    np.ascontiguousarray(a.numpy(), dtype=np.float32),
                    z[0].numpy().astype(np.float32),
                )
        self._readout = readout  # set once, whole (other threads may read it meanwhile)
        return self._readout  # type: ignore[return-value]

    @torch.no_grad()
    def predict_set_columns(
        self, state: Any, cols: np.ndarray | None = None, at_times: np.ndarray | None = None
    ) -> np.ndarray:
        """Success probabilities ``[n, len(cols)]`` of concept sets ``cols`` (every set
        where None) for the ``n`` learners of ``state``, optionally each at its own time
        (:func:`predict_many`). With an affine readout (:meth:`set_readout`) one matrix
        product (the same numbers to float32 rounding), else the model's ``predict``."""
        readout = self.set_readout()
        if readout is None:
            return self._predict_sets_kept(state, cols, at_times)
        a, b = readout
        if cols is not None:
            a, b = a[cols], b[cols]
        feats = self.model.readout_features(state).numpy()  # [n, F]
        return special.expit(feats @ a.T + b).astype(np.float32, copy=False)

    def _predict_sets_kept(
        self, state: Any, cols: np.ndarray | None, at_times: np.ndarray | None
    ) -> np.ndarray:
        """:meth:`predict_set_columns` through the model's ``predict``, with a single
        learner's whole-catalogue predictions kept for its last :data:`KEPT_PREDICTIONS`
        states, by the state's content and, for a model that forgets, the time asked. A
        learner's answer is usually followed by next-items and mastery reads of the state it
        stored, and each predicted every set anew (AKT on the demo: about 80 ms each). The
        kept arrays are read-only; a few columns of a kept state are read off them (they may
        differ from the same columns predicted alone in the last float bits: AKT chunks its
        candidates differently); a few columns of another state are predicted alone (an
        answer's estimates), not kept. A loaded model never changes its weights, and a model
        in training mode is never kept for, so nothing else invalidates them."""
        leaves = _leaves(state)
        if (
            self.model.training
            or state_batch_size(self, state) != 1
            or any(t.device.type != "cpu" for t in leaves)
        ):
            items = self.sets.sig_item if cols is None else self.sets.sig_item[cols]
            return predict_many(self, state, items, at_times)
        at = None
        if at_times is not None and self.forgets:
            at = float(np.nan_to_num(np.asarray(at_times, dtype=np.float64), nan=0.0)[0])
        key = self._kept.key(leaves, at)
        full = self._kept.get(key, leaves)
        if full is None:
            if cols is not None:
                return predict_many(self, state, self.sets.sig_item[cols], at_times)
            full = np.array(predict_many(self, state, self.sets.sig_item, at_times))
            full.flags.writeable = False
            self._kept.put(key, leaves, full)
        return full if cols is None else full[:, cols]

    def predict_all(self, state: Any, at_time: float | None = None) -> np.ndarray:
        """Success probabilities of every model item ``[n_items + 1]``, index 0 included (the
        prediction for an item the model was not trained on), from :meth:`predict_sets`
        (or item by item, where the sets are nodes)."""
        if self.sets.item_sig is None:
            return self.predict(state, np.arange(len(self.item_index) + 1), at_time)
        return self.predict_sets(state, at_time)[self.sets.item_sig]

    def mastery_from(self, p_sets: np.ndarray) -> np.ndarray:
        """Concept mastery ``[C + 1]`` (the mean predicted success over each concept's items;
        entry 0 unused) from :meth:`predict_sets`' probabilities."""
        return self.sets.mastery(p_sets)

    @torch.no_grad()
    def mastery_reference(self, streak: int = REFERENCE_STREAK) -> tuple[np.ndarray, np.ndarray]:
        """What concept mastery (:meth:`mastery_from`) can be, per concept ``[C + 1]``:
        the *floor* is a new learner's (no answer yet), the *ceiling* that of a new learner
        right after ``streak`` correct answers in a row on the concept's items (taken in turn,
        45 seconds apart, read at the last answer).

        Predicted success never reaches 1: guessing and slipping, item difficulty and the
        model's caution keep it lower, by an amount that differs per concept and per model,
        so a fixed threshold on it (say 0.8) can be out of reach for every learner of one
        concept and trivial for another. :meth:`scaled_mastery` measures mastery on this
        reachable range instead. Computed once per model version (one batched replay of
        ``streak`` steps over all concepts) and cached.
        """
        if streak < 1:
            raise ValueError(f"streak must be at least 1, got {streak}")
        ref = self._references.get(streak)
        if ref is not None:
            return ref
        may_block("the model's mastery reference")
        n_c = len(self.concept_ids)
        dt = 45.0 / SECONDS_PER_DAY if self.time_unit == "days" else 1.0
        t0 = 0.0 if self.forgets else None
        floor = self.concept_mastery(self.model.init_state(1), t0).astype(np.float64)
        ceiling = floor.copy()
        concepts = [c for c in range(1, n_c + 1) if len(self.sets.items_of(c))]
        if concepts:
            own = [torch.as_tensor(self.sets.items_of(c)) for c in concepts]
            state = self.model.init_state(len(concepts))
            ones = torch.ones(len(concepts))
            for k in range(streak):
                item = torch.stack([o[k % len(o)] for o in own]).long()
                state = self.model.step(state, item, ones, torch.full((len(concepts),), k * dt))
            at = np.full(len(concepts), (streak - 1) * dt) if self.forgets else None
            m = concept_mastery_many(self, state, at)
            idx = np.array(concepts)
            ceiling[idx] = m[np.arange(len(concepts)), idx]
        self._references[streak] = (floor, ceiling)
        return floor, ceiling

    def scaled_mastery(self, mastery: np.ndarray, streak: int = REFERENCE_STREAK) -> np.ndarray:
        """Concept mastery ``[C + 1]`` (from :meth:`mastery_from`) placed on the reachable
        range of :meth:`mastery_reference`: 0 = a new learner (or below), 1 = a learner who
        has just answered ``streak`` in a row correctly (or above), clipped to [0, 1].
        Concepts whose range is narrower than 0.02 (the model barely moves on them) keep the
        predicted success as it is."""
        lo, hi = self.mastery_reference(streak)
        span = hi - lo
        ok = span >= 0.02
        m = np.asarray(mastery, dtype=np.float64)
        scaled = np.clip((m - lo) / np.where(ok, span, 1.0), 0.0, 1.0)
        return np.where(ok, scaled, m)

    @torch.no_grad()
    def estimates(
        self,
        state: Any,
        concepts: np.ndarray,
        at_times: np.ndarray | None = None,
        scale: str = "reachable",
    ) -> np.ndarray:
        """Concept mastery ``[n, len(concepts)]`` of the ``n`` learners of ``state`` for a few
        model concepts (index 0: unknown, nan), predicting only their items; on the reachable
        range (:meth:`scaled_mastery`) unless ``scale='success'``."""
        concepts = np.asarray(concepts, dtype=np.int64)
        n = state_batch_size(self, state)
        out = np.full((n, len(concepts)), np.nan)
        known = np.flatnonzero(concepts > 0)
        if not len(known):
            return out
        if len(known) > ROWS_CACHE_CONCEPTS:
            # many concepts (a whole catalogue's mastery): every signature, then the concepts'
            # rows of the full weights (cheaper than slicing the weights per request)
            p = self.predict_set_columns(state, None, at_times)  # [n, S]
            m = self.sets.mastery(p)[:, concepts[known]].astype(np.float64)
        else:
            cols, w = self.sets.rows(concepts[known])
            if not len(cols):
                return out
            p = self.predict_set_columns(state, cols, at_times)  # [n, s]
            m = (w @ p.T).T.astype(np.float64)  # [n, k]
        if scale == "reachable":
            m = self.scaled_at(m, concepts[known])
        out[:, known] = m
        return out

    def scaled_known(self, success: np.ndarray, concepts: np.ndarray) -> np.ndarray:
        """:meth:`scaled_at` of success estimates ``[..., len(concepts)]`` (from
        :meth:`estimates` with ``scale='success'``), a concept the model does not know
        (index 0, estimate nan) staying nan."""
        known = np.where(np.isnan(success), 0.0, success)
        return np.where(concepts > 0, self.scaled_at(known, concepts), np.nan)

    def scaled_at(self, mastery: np.ndarray, concepts: np.ndarray) -> np.ndarray:
        """:meth:`scaled_mastery` of ``mastery`` ``[..., len(concepts)]``, the mastery of the
        model concepts ``concepts`` only (the same numbers, without a full-width array)."""
        lo, hi = self.mastery_reference()
        lo, span = lo[concepts], hi[concepts] - lo[concepts]
        ok = span >= 0.02
        m = np.asarray(mastery, dtype=np.float64)
        scaled = np.clip((m - lo) / np.where(ok, span, 1.0), 0.0, 1.0)
        return np.where(ok, scaled, m)

    @torch.no_grad()
    def concept_mastery(self, state: Any, at_time: float | None = None) -> np.ndarray:
        """Mastery of every model concept (index 1..C): the mean predicted success over its
        items. Returns ``[C + 1]`` (entry 0 unused)."""
        return self.mastery_from(self.predict_sets(state, at_time))


@functools.cache
def _np_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty(0, dtype=dtype).numpy().dtype


@functools.cache
def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


def _load_from_buffer(buf: io.BytesIO) -> tuple[KTModel, dict[str, Any]]:
    return load_checkpoint(buf.getvalue(), map_location="cpu")


def sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


class ModelCache:
    """Loaded model versions of this process, least recently used evicted."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model_id: int, loader: Any, scope: str = "") -> LoadedModel:
        """The loaded version ``model_id`` of the database ``scope`` (its URL: ids of two
        databases served by one process must not meet)."""
        key = (scope, model_id)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        may_block("loading a model")
        got = loader()  # the checkpoint's bytes, or (bytes, id mapping)
        blob, mapping = got if isinstance(got, tuple) else (got, None)
        loaded = LoadedModel.from_bytes(model_id, blob, mapping)
        with self._lock:
            self._items[key] = loaded
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return loaded

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


# ---------------------------------------------------------------------- several learners
# Batched forms of the one-learner helpers above (analytics over a group in one model call).
# A state of ``n`` learners has, in each tensor leaf, one axis indexing the learners: found by
# comparing ``init_state(1)`` and ``init_state(2)`` (DKT's LSTM state is ``[layers, n, H]``).


def batch_axes(model: LoadedModel) -> list[int | None]:
    """Per state leaf (in :func:`_leaves` order), the axis indexing learners (None: shared)."""
    axes = model._batch_axes
    if axes is None:
        one, two = _leaves(model.model.init_state(1)), _leaves(model.model.init_state(2))
        axes = []
        for a, b in zip(one, two, strict=True):
            diff = [k for k, (x, y) in enumerate(zip(a.shape, b.shape, strict=True)) if x != y]
            axes.append(diff[0] if diff else None)
        model._batch_axes = axes
    return axes


def state_batch_size(model: LoadedModel, state: Any) -> int:
    for leaf, ax in zip(_leaves(state), batch_axes(model), strict=True):
        if ax is not None:
            return int(leaf.shape[ax])
    return 1


def stack_states(model: LoadedModel, states: list[Any]) -> Any:
    """One batched state from states of one or more learners each (concatenated in order)."""
    if not states:
        raise ValueError("no states to stack")
    per = [_leaves(s) for s in states]
    leaves = [
        torch.cat([p[k] for p in per], dim=ax) if ax is not None else per[0][k]
        for k, ax in enumerate(batch_axes(model))
    ]
    return _rebuild(model._template, leaves, [0])


def decode_many(model: LoadedModel, blobs: list[bytes]) -> Any:
    """The batched state of ``len(blobs)`` learners from their stored state bytes (one numpy
    reshape per leaf instead of one decode per learner)."""
    n = len(blobs)
    if n == 0:
        raise ValueError("no states to decode")
    width = sum(nbytes for _, _, nbytes in model._layout)
    buf = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    if buf.size != n * width or any(len(b) != width for b in blobs):
        bad = next(len(b) for b in blobs if len(b) != width)
        raise ValueError(f"a stored state has {bad} bytes, model {model.model_id} expects {width}")
    buf = buf.reshape(n, width)
    leaves, off = [], 0
    for (shape, dtype, nbytes), ax in zip(model._layout, batch_axes(model), strict=True):
        raw = buf[:, off : off + nbytes].copy().view(_np_dtype(dtype))
        t = torch.from_numpy(raw.reshape(n, *shape))
        t = t[0] if ax is None else t.squeeze(ax + 1).movedim(0, ax).contiguous()
        leaves.append(t)
        off += nbytes
    return _rebuild(model._template, leaves, [0])


@torch.no_grad()
def predict_many(
    model: LoadedModel, state: Any, items: np.ndarray, at_times: np.ndarray | None = None
) -> np.ndarray:
    """Success probabilities ``[n, m]`` of the same ``items`` (model indices) for the ``n``
    learners of a batched state, optionally each at its own time ``at_times`` ``[n]`` (models
    that forget; as :meth:`LoadedModel.predict`, else ignored; nan counts as time 0, for
    learners without answers)."""
    n = state_batch_size(model, state)
    it = torch.as_tensor(np.asarray(items, dtype=np.int64)).unsqueeze(0).expand(n, -1)
    it = it.contiguous()
    tt = None
    if at_times is not None and model.forgets:
        at = np.nan_to_num(np.asarray(at_times, dtype=np.float64), nan=0.0)
        tt = torch.as_tensor(at, dtype=torch.float32).unsqueeze(1).expand(it.shape)
    return model.model.predict(state, it, at_time=tt).numpy()


@torch.no_grad()
def concept_mastery_many(
    model: LoadedModel,
    state: Any,
    at_times: np.ndarray | None = None,
    chunk_cells: int = 4_000_000,
) -> np.ndarray:
    """:meth:`LoadedModel.concept_mastery` of ``n`` learners at once: ``[n, C + 1]``."""
    n = state_batch_size(model, state)
    sig_item = model.sets.sig_item
    step = max(1, chunk_cells // max(len(sig_item), 1))
    out = []
    for s in range(0, n, step):
        checkpoint()  # background work asked to stop ends here (tutor.blocking)
        idx = torch.arange(s, min(s + step, n))
        part = state if (s == 0 and step >= n) else model.model.state_select(state, idx)
        at = None if at_times is None else np.asarray(at_times)[s : s + step]
        out.append(model.sets.mastery(model.predict_set_columns(part, None, at)))
    n_c1 = model.sets.weights.shape[0]
    return np.concatenate(out) if out else np.zeros((0, n_c1), dtype=np.float32)


@torch.no_grad()
def step_through(
    model: LoadedModel,
    items: np.ndarray,
    correct: np.ndarray,
    times: np.ndarray,
    *,
    stop: int | None = None,
    visit: Callable[[int, Any], None] | None = None,
    state: Any = None,
) -> Any:
    """The one loop that steps a model over answer histories: ``n`` learners' padded
    histories (``[n, T]`` model item indices, 0/1, time values) stepped together, one
    ``step`` per position, through the first ``stop`` positions (default all), from
    ``state`` (default the initial state). ``visit(t, state)`` sees the batched state after
    ``t`` answers, for ``t = 0 .. stop`` (before each step, and once at the end). Returns the
    final state. Positions past a learner's history are padding: its state there is not its
    own (read it at its length). Background work asked to stop ends at a step
    (:func:`tutor.blocking.checkpoint`; nothing for a request)."""
    n, t_max = np.shape(items)
    stop = t_max if stop is None else min(stop, t_max)
    it = torch.from_numpy(np.ascontiguousarray(items, dtype=np.int64))
    cc = torch.from_numpy(np.ascontiguousarray(correct, dtype=np.float32))
    tt = torch.from_numpy(np.ascontiguousarray(times, dtype=np.float32))
    if state is None:
        state = model.model.init_state(n)
    for t in range(stop):
        checkpoint()
        if visit is not None:
            visit(t, state)
        state = model.model.step(state, it[:, t], cc[:, t], tt[:, t])
    if visit is not None:
        visit(stop, state)
    return state


@torch.no_grad()
def replay_many(
    model: LoadedModel,
    items: np.ndarray,
    correct: np.ndarray,
    times: np.ndarray,
    positions: list[np.ndarray],
) -> list[Any]:
    """Step ``n`` learners' padded histories (``[n, T]`` model item indices, 0/1, time
    values) together (:func:`step_through`) and return, for each array of ``positions``
    (``[n]``, answers folded, ``0 .. T``), the batched state of every learner after that many
    of its answers."""
    n, t_max = items.shape
    positions = [np.clip(np.asarray(p, dtype=np.int64), 0, t_max) for p in positions]
    stop = max((int(p.max()) for p in positions if len(p)), default=0)
    got: list[list[tuple[np.ndarray, Any]]] = [[] for _ in positions]

    def capture(t: int, state: Any) -> None:
        for k, pos in enumerate(positions):
            idx = np.flatnonzero(pos == t)
            if len(idx):
                got[k].append((idx, model.model.state_select(state, torch.from_numpy(idx))))

    step_through(model, items, correct, times, stop=stop, visit=capture)
    out = []
    for parts in got:
        order = np.concatenate([idx for idx, _ in parts])
        stacked = stack_states(model, [s for _, s in parts])
        out.append(model.model.state_select(stacked, torch.from_numpy(np.argsort(order))))
    return out
