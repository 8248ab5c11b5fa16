"""Curriculum designer: order concepts from a trained model's concept vectors.

After Singh et al., "Learning to Learn: How to Continuously Teach Humans and Machines"
(ICCV 2023), whose Curriculum Designer ranks orderings of classes by their inter-class feature
similarities. Here the classes are concepts (skills / knowledge components) and the features are
one vector per concept taken from a trained knowledge-tracing model (concept embeddings or
readout weights). The formula below is this module's own; where the paper leaves a choice open,
the choice is marked *(ours)*.

Quantities, for the ``K`` concepts being ordered (mastered concepts are excluded first):

* ``D`` -- cosine distance, ``D_ij = 1 - cos(v_i, v_j)`` in ``[0, 2]``, zero diagonal. A zero
  vector has cosine similarity 0 with everything, so distance 1 *(ours; no NaN)*.
* ``m_i`` and ``s_i`` -- mean and standard deviation of row ``i`` of ``D`` over ``j != i``
  (the paper uses the variance; we use its square root so both terms are distances *(ours)*);
  ``m_bar`` is the mean of ``m_i``.
* ``N`` -- row-normalised distances, ``N_ij = (K - 1) * D_ij / sum_k D_ik`` (row of zeros when the
  row sum is 0). The factor ``K - 1`` *(ours)* makes the mean off-diagonal entry 1, so ``N_ij > 1``
  means "``j`` is farther from ``i`` than ``i``'s typical concept". ``N`` is not symmetric.
* ``w_t = GAMMA ** (t - 1)`` for positions ``t >= 1``, ``GAMMA = 0.5`` *(ours)*: the weight of
  early contrast, decaying along the sequence; ``1 - w_t`` weighs transfer.

Score of an ordering ``pi = (pi_0, ..., pi_{L-1})`` (a full ordering or a prefix), higher is
better::

    S(pi) = A(pi_0) + sum_{t=1}^{L-1} g_t
    A(i)  = -(m_i + s_i) / m_bar                                      (1) central anchor
    g_t   = w_t * N[pi_{t-1}, pi_t]                                   (2) contrast early
          + (1 - w_t) * (1 - min_{s < t-1} N[pi_t, pi_s])   (t >= 2)  (3) revisit similar

(1) rewards starting with a concept close to, and evenly related to, all others. (2) rewards
neighbours that differ, most strongly at the start. (3) rewards a concept whose nearest
*non-adjacent* predecessor is similar, so that earlier learning transfers, increasingly towards
the end. Excluding the immediate predecessor from (3) *(ours)* keeps (2) and (3) from cancelling.
``A`` is 0 for ``K = 1`` and when all distances are 0.

Because ``g_t`` depends only on the set already placed, the last concept and ``t``, the score is
a sum of per-step gains that can be updated incrementally in ``O(K)`` per candidate step
(``O(K^2)`` for a greedy ordering). The greedy constructor starts from the best anchor that is
eligible and then appends the eligible concept with the largest gain. ``beam > 1`` keeps the
``beam`` best prefixes, merging prefixes with the same (placed set, last concept) state, which is
exact dynamic programming once ``beam`` is at least the number of such states; the beam result
is never worse than greedy (greedy is run as well and the better one kept) *(ours)*.

Constraints: a concept is eligible only once all its prerequisites are placed or mastered.
Mastered concepts are left out of the ordering (and out of ``D``'s statistics) but satisfy
prerequisites. Without vectors (``vectors is None``) the result is a topological order that
is stable with respect to the given concept order (Kahn's algorithm, always taking the earliest
eligible concept), with ``score`` and every ``score_gain`` set to ``None``.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "GAMMA",
    "Curriculum",
    "CurriculumStep",
    "design_curriculum",
    "distance_matrix",
    "ordering_score",
]

GAMMA = 0.5
"""Decay of the contrast weight ``w_t = GAMMA ** (t - 1)`` along the sequence."""
PRECEDENCE_WEIGHT = 2.0
"""Weight of the data's precedence (see :func:`design_curriculum`) against the per-step gains,
which lie around 0-2; 2 makes a concept usually met last cost as much as the best contrast."""


@dataclass
class CurriculumStep:
    """One concept in a curriculum.

    ``score_gain`` is the step's contribution to :attr:`Curriculum.score` (the anchor term for
    position 0), or ``None`` for a topological curriculum. ``prerequisites`` lists the concept's
    direct prerequisites, in the given concept order.
    """

    concept_id: str
    position: int
    score_gain: float | None
    prerequisites: list[str]
    reason: str


@dataclass
class Curriculum:
    """An ordered list of steps, its total score and the method that built it.

    ``method`` is ``'greedy'``, ``'beam'`` or ``'topological'`` (no vectors; ``score`` is None).
    """

    steps: list[CurriculumStep]
    score: float | None
    method: str

    def order(self) -> list[str]:
        """Concept ids in teaching order."""
        return [step.concept_id for step in self.steps]


def distance_matrix(vectors: np.ndarray) -> np.ndarray:
    """Cosine distance matrix ``1 - cos(v_i, v_j)`` of the rows of ``vectors`` ([C, d]).

    Symmetric, zero diagonal, values in ``[0, 2]``. Zero rows are at distance 1 from every other
    row (cosine similarity taken as 0). Raises ValueError for non-2-D or non-finite input.
    """
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"vectors must be 2-D [C, d], got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("vectors contain NaN or infinite values")
    norms = np.linalg.norm(v, axis=1)
    unit = np.divide(v, norms[:, None], out=np.zeros_like(v), where=norms[:, None] > 0)
    dist = 1.0 - unit @ unit.T
    dist = np.clip((dist + dist.T) / 2.0, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    return dist


def _statistics(dist: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Row-normalised ``N``, anchor scores ``A`` and the row means / stds of ``dist``."""
    k = dist.shape[0]
    if k <= 1:
        zeros = np.zeros(k)
        return np.zeros((k, k)), zeros, zeros, zeros
    sums = dist.sum(axis=1)
    norm = np.divide(
        (k - 1) * dist, sums[:, None], out=np.zeros_like(dist), where=sums[:, None] > 0
    )
    off = ~np.eye(k, dtype=bool)
    rows = dist[off].reshape(k, k - 1)
    mean, std = rows.mean(axis=1), rows.std(axis=1)
    m_bar = mean.mean()
    anchor = -(mean + std) / m_bar if m_bar > 0 else np.zeros(k)
    return norm, anchor, mean, std


def _check_dist(dist: np.ndarray) -> np.ndarray:
    d = np.asarray(dist, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"dist must be a square matrix, got shape {d.shape}")
    return d


def _step_terms(order: np.ndarray, norm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-position contrast term, transfer term and nearest non-adjacent predecessor (or -1)."""
    n = len(order)
    contrast = np.zeros(n)
    transfer = np.zeros(n)
    nearest = np.full(n, -1)
    if n < 2:
        return contrast, transfer, nearest
    t = np.arange(n)
    w = np.zeros(n)
    w[1:] = GAMMA ** (t[1:] - 1)
    contrast[1:] = w[1:] * norm[order[:-1], order[1:]]
    if n >= 3:
        sub = norm[np.ix_(order, order)]  # sub[t, s] = N[pi_t, pi_s]
        allowed = t[None, :] < (t[:, None] - 1)
        masked = np.where(allowed, sub, np.inf)
        best = masked.argmin(axis=1)
        nearest[2:] = best[2:]
        transfer[2:] = (1.0 - w[2:]) * (1.0 - masked[t[2:], best[2:]])
    return contrast, transfer, nearest


def ordering_score(order: Sequence[int], dist: np.ndarray) -> float:
    """Score ``S(order)`` of an ordering (or a prefix of one) of the concepts of ``dist``.

    ``order`` holds distinct row indices of the [K, K] distance matrix ``dist``; the concept
    statistics use all K rows. See the module docstring for the formula; higher is better.
    """
    d = _check_dist(dist)
    idx = np.asarray(order, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= d.shape[0]):
        raise ValueError(f"order indices must lie in [0, {d.shape[0]})")
    if len(np.unique(idx)) != len(idx):
        raise ValueError("order contains repeated indices")
    if idx.size == 0:
        return 0.0
    norm, anchor, _, _ = _statistics(d)
    contrast, transfer, _ = _step_terms(idx, norm)
    return float(anchor[idx[0]] + contrast.sum() + transfer.sum())


# --------------------------------------------------------------------------- prerequisite graph


def _build_graph(
    ids: list[str], prerequisites: Iterable[tuple[str, str]]
) -> tuple[list[list[int]], list[list[int]]]:
    """Parents and children lists (by index) of the prerequisite graph; validates it."""
    index = {cid: i for i, cid in enumerate(ids)}
    parents: list[set[int]] = [set() for _ in ids]
    for edge in prerequisites:
        try:
            pre, post = edge
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"prerequisite edge must be a (prerequisite, concept) pair: {edge!r}"
            ) from err
        for cid in (pre, post):
            if cid not in index:
                raise ValueError(f"prerequisite edge {edge!r} names unknown concept {cid!r}")
        parents[index[post]].add(index[pre])
    parent_lists = [sorted(p) for p in parents]
    children: list[list[int]] = [[] for _ in ids]
    for post, ps in enumerate(parent_lists):
        for pre in ps:
            children[pre].append(post)
    _raise_on_cycle(ids, parent_lists, children)
    return parent_lists, children


def _raise_on_cycle(ids: list[str], parents: list[list[int]], children: list[list[int]]) -> None:
    indeg = [len(p) for p in parents]
    queue = [i for i, d in enumerate(indeg) if d == 0]
    seen = 0
    while queue:
        i = queue.pop()
        seen += 1
        for c in children[i]:
            indeg[c] -= 1
            if indeg[c] == 0:
                queue.append(c)
    if seen == len(ids):
        return
    # Every leftover node has a leftover parent: walk parents until a node repeats.
    leftover = {i for i, d in enumerate(indeg) if d > 0}
    node = min(leftover)
    path: list[int] = []
    pos: dict[int, int] = {}
    while node not in pos:
        pos[node] = len(path)
        path.append(node)
        node = next(p for p in parents[node] if p in leftover)
    cycle = path[pos[node] :][::-1]  # prerequisite -> concept direction
    names = " -> ".join(repr(ids[i]) for i in [*cycle, cycle[0]])
    raise ValueError(f"prerequisite graph has a cycle: {names}")


# --------------------------------------------------------------------------------- search


@dataclass
class _State:
    order: list[int]
    score: float
    placed: np.ndarray  # bool [K]
    unmet: np.ndarray  # int [K], unplaced non-mastered prerequisites
    minpred: np.ndarray  # float [K], min_s N[j, pi_s] over non-adjacent predecessors


def _search(
    norm: np.ndarray,
    anchor: np.ndarray,
    unmet0: np.ndarray,
    children: list[list[int]],
    width: int,
    penalty: np.ndarray | None = None,
) -> tuple[list[int], float]:
    """Beam search (greedy for ``width == 1``) over eligible orderings; returns best order."""
    k = len(anchor)
    start = _State([], 0.0, np.zeros(k, dtype=bool), unmet0.copy(), np.full(k, np.inf))
    beam = [start]
    for t in range(k):
        if t == 0:
            gains = anchor[None, :]
        else:
            w = GAMMA ** (t - 1)
            lasts = np.array([s.order[-1] for s in beam])
            gains = w * norm[lasts]
            if t >= 2:
                gains = gains + (1.0 - w) * (1.0 - np.stack([s.minpred for s in beam]))
        if penalty is not None:
            gains = gains - penalty[None, :]
        totals = np.array([s.score for s in beam])[:, None] + gains
        eligible = np.stack([(~s.placed) & (s.unmet == 0) for s in beam])
        totals = np.where(eligible, totals, -np.inf)
        if width == 1:
            best = int(np.argmax(totals))
            ranked = [best] if np.isfinite(totals.flat[best]) else []
        else:
            flat = totals.ravel()
            ranked = np.argsort(-flat, kind="stable")[: int(eligible.sum())].tolist()
        new_beam: list[_State] = []
        keys: set[tuple[bytes, int]] = set()
        for f in ranked:
            b, c = divmod(f, k)
            parent = beam[b]
            key = (parent.placed.tobytes(), c)  # placed-before set + last fully fixes the future
            if key in keys:
                continue
            keys.add(key)
            placed = parent.placed.copy()
            placed[c] = True
            unmet = parent.unmet
            if children[c]:
                unmet = unmet.copy()
                unmet[children[c]] -= 1
            minpred = parent.minpred
            if parent.order:
                minpred = np.minimum(minpred, norm[:, parent.order[-1]])
            new_beam.append(_State([*parent.order, c], float(totals[b, c]), placed, unmet, minpred))
            if len(new_beam) == width:
                break
        if not new_beam:  # unreachable once the graph is acyclic; kept as a guard
            raise RuntimeError("no eligible concept; prerequisite graph is inconsistent")
        beam = new_beam
    best = beam[0]
    return best.order, best.score


def _topological(
    k: int, unmet0: np.ndarray, children: list[list[int]], key: np.ndarray | None = None
) -> list[int]:
    unmet = unmet0.copy()
    rank = np.zeros(k) if key is None else key
    heap = [(float(rank[i]), i) for i in range(k) if unmet[i] == 0]
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        _, i = heapq.heappop(heap)
        order.append(i)
        for c in children[i]:
            unmet[c] -= 1
            if unmet[c] == 0:
                heapq.heappush(heap, (float(rank[c]), c))
    return order


def _prereq_phrase(names: list[str]) -> str:
    return "after its prerequisites " + ", ".join(names)


def design_curriculum(
    vectors: np.ndarray | None,
    concept_ids: Sequence[str],
    *,
    prerequisites: Iterable[tuple[str, str]] = (),
    mastered: Collection[str] | Mapping[str, float] = (),
    mastery_threshold: float = 0.95,
    beam: int = 1,
    precedence: Sequence[float] | None = None,
    names: Mapping[str, str] | None = None,
) -> Curriculum:
    """Design a teaching order for the concepts not yet mastered.

    Args:
        vectors: [C, d] concept vectors (row ``i`` belongs to ``concept_ids[i]``), or None for a
            model without concept vectors: then the result is a stable topological order with
            ``score=None`` and ``method='topological'``.
        concept_ids: the C distinct concept ids.
        prerequisites: ``(prerequisite_id, concept_id)`` edges; the prerequisite must come first.
            Unknown ids and cycles raise ValueError naming the concepts involved.
        mastered: concept ids already mastered, or a mapping of concept id to mastery
            probability (mastered when ``>= mastery_threshold``). Mastered concepts are left out
            of the ordering but count as satisfied prerequisites; ids not in ``concept_ids`` are
            ignored.
        mastery_threshold: threshold used when ``mastered`` is a mapping.
        beam: beam width; 1 is greedy (``method='greedy'``), larger is ``method='beam'``.
        precedence: per concept, where it usually comes (0 = first, 1 = last), e.g. from the
            order in which learners met the concepts in the logs. *(ours)* Each step's gain is
            lowered by :data:`PRECEDENCE_WEIGHT` times it, so that among the eligible concepts
            the usual early ones come first unless contrast and transfer outweigh it; without
            vectors it orders the topological sort.
        names: concept id -> name, for the reasons (a teacher reads names, not ids).

    Returns:
        A :class:`Curriculum` whose ``score`` is :func:`ordering_score` of the order over the
        distance matrix of the unmastered concepts.
    """
    ids = [str(c) for c in concept_ids]
    if len(set(ids)) != len(ids):
        dupes = sorted({c for c in ids if ids.count(c) > 1})
        raise ValueError(f"concept_ids contain duplicates: {dupes}")
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    if vectors is not None:
        vectors = np.asarray(vectors, dtype=np.float64)
        if vectors.ndim != 2 or vectors.shape[0] != len(ids):
            raise ValueError(
                f"vectors must have shape [{len(ids)}, d] to match concept_ids, got {vectors.shape}"
            )
    parents, children = _build_graph(ids, prerequisites)

    if isinstance(mastered, Mapping):
        done_ids = {c for c, p in mastered.items() if p >= mastery_threshold}
    else:
        done_ids = set(mastered)
    done = np.array([c in done_ids for c in ids], dtype=bool)
    todo = np.flatnonzero(~done)  # global indices of concepts to order
    local = {int(g): i for i, g in enumerate(todo)}
    k = len(todo)
    unmet0 = np.array([sum(not done[p] for p in parents[g]) for g in todo], dtype=np.int64)
    local_children = [[local[c] for c in children[g] if c in local] for g in todo]
    prereq_names = [[ids[p] for p in parents[g]] for g in todo]
    label = dict(names or {})

    def shown(cid: str) -> str:
        return label.get(cid) or cid

    penalty = None
    if precedence is not None:
        prec = np.asarray(precedence, dtype=np.float64)
        if prec.shape != (len(ids),) or not np.all(np.isfinite(prec)):
            raise ValueError(f"precedence must be {len(ids)} finite numbers")
        penalty = PRECEDENCE_WEIGHT * prec[todo]

    if vectors is None:
        key = None if penalty is None else penalty
        order = _topological(k, unmet0, local_children, key)
        steps = []
        for pos, i in enumerate(order):
            pre = prereq_names[i]
            if pre:
                reason = _prereq_phrase([shown(p) for p in pre])
            elif penalty is not None:
                reason = "no prerequisites; usual position in the data"
            else:
                reason = "no prerequisites; given order"
            steps.append(CurriculumStep(ids[todo[i]], pos, None, pre, reason))
        return Curriculum(steps, None, "topological")

    dist = distance_matrix(vectors[todo])
    norm, anchor, mean, std = _statistics(dist)
    order, score = _search(norm, anchor, unmet0, local_children, 1, penalty)
    method = "greedy"
    if beam > 1:
        method = "beam"
        beam_order, beam_score = _search(norm, anchor, unmet0, local_children, beam, penalty)
        if beam_score > score:
            order, score = beam_order, beam_score

    idx = np.asarray(order, dtype=np.int64)
    contrast, transfer, nearest = _step_terms(idx, norm)
    if order:  # the ordering's score (the precedence penalty only steered the search)
        score = float(anchor[order[0]] + contrast.sum() + transfer.sum())
    steps = []
    for pos, i in enumerate(order):
        parts: list[str] = []
        if pos == 0:
            gain = float(anchor[i])
            parts.append(
                f"a central start: close to the other concepts in the model (mean distance "
                f"{mean[i]:.2f}, spread {std[i]:.2f})"
            )
        else:
            gain = float(contrast[pos] + transfer[pos])
            prev = shown(ids[todo[order[pos - 1]]])
            contrast_part = f"contrasts with the previous concept, {prev}"
            if nearest[pos] >= 0:
                similar = shown(ids[todo[order[nearest[pos]]]])
                revisit_part = f"builds on the similar concept {similar}"
                if transfer[pos] > contrast[pos]:
                    parts += [revisit_part, contrast_part]
                else:
                    parts += [contrast_part, revisit_part]
            else:
                parts.append(contrast_part)
        if prereq_names[i]:
            parts.append(_prereq_phrase([shown(p) for p in prereq_names[i]]))
        steps.append(CurriculumStep(ids[todo[i]], pos, gain, prereq_names[i], "; ".join(parts)))
    return Curriculum(steps, float(score), method)
