"""The item catalogue: an organisation's items, concepts and prerequisites as arrays
(:class:`Catalogue`), built from the database once per catalogue version and cached per
process (:func:`catalogue`, :func:`clear_cache`).

Built with it, from the organisation's answers: each item's difficulty against its concepts'
(a logit shift, shrunk towards the concept's success rate: :data:`ITEM_SHRINKAGE`), and the
data's precedence (which concepts learners met before which, and where each usually comes),
from which :func:`data_precedence_edges` reads the pairs that order the curriculum.

And the answer path's item lookup (:func:`item_refs`): what it needs of the items answered, from
the cached catalogue while it is current, so that an answer costs no catalogue query.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .blocking import may_block
from .db import (
    Concept,
    Interaction,
    Item,
    ItemConcept,
    Learner,
    Organisation,
    PrerequisiteEdge,
    db_scope,
)
from .errors import NotFound

#: item difficulty: pseudo-answers at the concept's success rate added to an item's own
#: (empirical-Bayes shrinkage: an item seen 10 times sits halfway to its concept's rate)
ITEM_SHRINKAGE = 10.0
#: data precedence: learners sampled (most recent first) and the support and agreement a pair
#: of concepts needs before "a is met before b" orders the curriculum
PRECEDENCE_LEARNERS = 5000
PRECEDENCE_MIN_LEARNERS = 20
PRECEDENCE_AGREEMENT = 0.7
#: a concept's mean first-meeting position is shrunk towards the middle (0.5) with this many
#: pseudo-learners, so that a concept a handful of learners met first does not lead the order
PRECEDENCE_SHRINKAGE = 20.0


@dataclass
class Catalogue:
    """An organisation's items, concepts and prerequisites as arrays (cached per version)."""

    version: int
    item_db: np.ndarray  # [I]
    item_ext: list[str]
    item_concepts: list[np.ndarray]  # concept positions (into concept arrays) per item
    concept_db: np.ndarray  # [C]
    concept_ext: list[str]
    concept_name: list[str]
    prerequisites: list[tuple[int, int]]  # (prerequisite pos, concept pos)
    #: the item -> concept links as two flat arrays (item position, concept position)
    link_item: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    link_concept: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: item external id -> position, and database id -> position
    item_pos: dict[str, int] = field(default_factory=dict)
    item_db_pos: dict[int, int] = field(default_factory=dict)
    #: [I] logit shift of each item against its concept's success rate (shrunk; 0: no data)
    item_offset: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: [C, C] learners who met concept a (row) before concept b (column) in their logs
    met_before: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    #: [C] mean position (0 first .. 1 last) at which learners met each concept, shrunk
    #: towards 0.5 (PRECEDENCE_SHRINKAGE); 0.5 for a concept nobody met
    met_position: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: [C] the organisation's teaching level of each concept (nan: not given)
    concept_level: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: [C] share of correct answers on each concept (Laplace-smoothed; 0.5 without answers)
    concept_rate: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: concept positions in the database's order of external ids (its collation: how
    #: ``/v1/concepts`` and ``/mastery`` list them)
    concept_order: list[int] = field(default_factory=list)
    per_model: dict[int, dict[str, Any]] = field(default_factory=dict)

    def name(self, pos: int) -> str:
        """The concept at ``pos`` as teachers read it (:func:`concept_label`)."""
        return concept_label(self.concept_ext[pos], self.concept_name[pos])

    @cached_property
    def _concept_links(self) -> tuple[np.ndarray, np.ndarray]:
        """Items grouped by concept (CSR): offsets ``[C + 1]`` and item positions."""
        order = np.argsort(self.link_concept, kind="stable")
        start = np.zeros(len(self.concept_ext) + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.link_concept, minlength=len(self.concept_ext)), out=start[1:])
        return start, self.link_item[order]

    def items_of(self, concept: int) -> np.ndarray:
        """The item positions of concept position ``concept`` (a slice: no scan)."""
        start, items = self._concept_links
        return items[start[concept] : start[concept + 1]]

    def items_of_many(self, concepts: np.ndarray) -> np.ndarray:
        """The item positions of several concepts, concatenated (an item of two of them
        twice): a cost that grows with their items, not with the catalogue."""
        start, items = self._concept_links
        concepts = np.asarray(concepts, dtype=np.int64)
        lo, size = start[concepts], start[concepts + 1] - start[concepts]
        if not size.sum():
            return np.zeros(0, dtype=np.int64)
        before = np.cumsum(size) - size  # where each concept's run starts in the output
        return items[np.repeat(lo - before, size) + np.arange(int(size.sum()))]

    @cached_property
    def items_are_concepts(self) -> bool:
        """Whether every item is the one item of its one concept and every concept has one
        (logs without question ids, as ASSISTments 2015's, whose "items" are the skills): an
        item then stands for its concept's questions, not for one question, and answering it
        again is practising the skill, not the same question."""
        if not len(self.link_item) or len(self.link_item) != len(self.item_ext):
            return False
        per_item = np.bincount(self.link_item, minlength=len(self.item_ext))
        per_concept = np.bincount(self.link_concept, minlength=len(self.concept_ext))
        return bool((per_item == 1).all() and (per_concept <= 1).all())

    @cached_property
    def concept_pos(self) -> dict[str, int]:
        """Concept external id -> position."""
        return {c: k for k, c in enumerate(self.concept_ext)}

    @cached_property
    def concepts_by_id(self) -> tuple[ConceptRef, ...]:
        """Every concept, ordered by external id (how ``/mastery`` lists them)."""
        return tuple(ConceptRef(self.concept_ext[k], self.name(k)) for k in self.concept_order)


#: the per-process cache: (database scope, organisation id) -> its catalogue (the latest
#: version built; a catalogue_version bump makes the next request rebuild it)
_CACHE: dict[tuple[str, int], Catalogue] = {}
_LOCK = threading.Lock()
#: per cache key, the lock its builder holds (see :func:`catalogue`)
_BUILDING: dict[tuple[str, int], threading.Lock] = {}


def clear_cache() -> None:
    """Forget every cached catalogue (tests and the policy evaluation start afresh)."""
    with _LOCK:
        _CACHE.clear()


def catalogue(session: Session, org: Organisation) -> Catalogue:
    """The organisation's catalogue: the cached one while its version is the organisation's
    ``catalogue_version``, else rebuilt from the database (and cached). One thread of the
    process builds it; the others that need it meanwhile wait for that build instead of
    each running the same seconds of queries (at 50,000 items and a million answers the
    build reads every answer once, for the item offsets and the concept precedence)."""
    key = (db_scope(session), org.id)
    version = org.catalogue_version
    cat = _CACHE.get(key)
    if cat is not None and cat.version == version:
        return cat
    may_block("building the catalogue")
    with _LOCK:
        building = _BUILDING.setdefault(key, threading.Lock())
    with building:
        cat = _CACHE.get(key)
        if cat is not None and cat.version == version:
            return cat  # built by another thread while this one waited
        cat = _build(session, org)
        with _LOCK:
            _CACHE[key] = cat
    return cat


def _build(session: Session, org: Organisation) -> Catalogue:
    """The organisation's catalogue, read from the database."""
    concepts = session.execute(
        select(Concept.id, Concept.external_id, Concept.name, Concept.level)
        .where(Concept.org_id == org.id)
        .order_by(Concept.id)
    ).all()
    cpos = {c[0]: k for k, c in enumerate(concepts)}
    by_ext = session.scalars(
        select(Concept.id).where(Concept.org_id == org.id).order_by(Concept.external_id)
    )
    items = session.execute(
        select(Item.id, Item.external_id)
        .where(Item.org_id == org.id, Item.active.is_(True))
        .order_by(Item.id)
    ).all()
    links: dict[int, list[int]] = {}
    for iid, cid in session.execute(
        select(ItemConcept.item_id, ItemConcept.concept_id)
        .join(Item, Item.id == ItemConcept.item_id)
        .where(Item.org_id == org.id)
    ):
        links.setdefault(iid, []).append(cpos[cid])
    edges = [
        (cpos[p], cpos[c])
        for p, c in session.execute(
            select(PrerequisiteEdge.prerequisite_id, PrerequisiteEdge.concept_id).where(
                PrerequisiteEdge.org_id == org.id
            )
        )
    ]
    cat = Catalogue(
        version=org.catalogue_version,
        item_db=np.array([i[0] for i in items], dtype=np.int64),
        item_ext=[i[1] for i in items],
        item_concepts=[np.array(sorted(links.get(i[0], [])), dtype=np.int64) for i in items],
        concept_db=np.array([c[0] for c in concepts], dtype=np.int64),
        concept_ext=[c[1] for c in concepts],
        concept_name=[c[2] for c in concepts],
        prerequisites=edges,
        concept_level=np.array(
            [np.nan if c[3] is None else float(c[3]) for c in concepts], dtype=np.float64
        ),
        concept_order=[cpos[i] for i in by_ext],
    )
    lens = np.array([len(cs) for cs in cat.item_concepts], dtype=np.int64)
    cat.link_item = np.repeat(np.arange(len(cat.item_concepts), dtype=np.int64), lens)
    cat.link_concept = (
        np.concatenate(cat.item_concepts) if len(cat.item_concepts) else np.zeros(0, np.int64)
    ).astype(np.int64)
    cat.item_pos = {ext: k for k, ext in enumerate(cat.item_ext)}
    cat.item_db_pos = {int(d): k for k, d in enumerate(cat.item_db.tolist())}
    cat.item_offset, cat.concept_rate = _item_offsets(session, org, cat)
    cat.met_before, cat.met_position = _precedence(session, org, cat)
    return cat


def logit(p: np.ndarray) -> np.ndarray:
    """The log-odds of probabilities (clipped to [1e-4, 1 - 1e-4])."""
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def _item_offsets(
    session: Session, org: Organisation, cat: Catalogue
) -> tuple[np.ndarray, np.ndarray]:
    """Each item's difficulty against its concepts' as a logit shift, from the organisation's
    answers: ``logit((k_i + a r_c) / (n_i + a)) - logit(r_c)`` with ``a = ITEM_SHRINKAGE`` and
    ``r_c`` the success rate of the item's concepts (pooled); and the concepts' rates."""
    n_i = np.zeros(len(cat.item_ext))
    k_i = np.zeros(len(cat.item_ext))
    pos = {int(d): k for k, d in enumerate(cat.item_db.tolist())}
    rows = session.execute(
        select(Interaction.item_id, func.count(), func.sum(Interaction.correct))
        .where(Interaction.org_id == org.id)
        .group_by(Interaction.item_id)
    )
    for iid, n, k in rows:
        p = pos.get(int(iid))
        if p is not None:
            n_i[p], k_i[p] = float(n), float(k or 0)
    if not len(cat.link_item):
        return np.zeros(len(cat.item_ext)), np.full(len(cat.concept_ext), 0.5)
    n_c = np.bincount(cat.link_concept, weights=n_i[cat.link_item], minlength=len(cat.concept_ext))
    k_c = np.bincount(cat.link_concept, weights=k_i[cat.link_item], minlength=len(cat.concept_ext))
    rate_c = (k_c + 1.0) / (n_c + 2.0)  # Laplace: a concept without answers sits at 0.5
    per_item = np.bincount(
        cat.link_item, weights=rate_c[cat.link_concept], minlength=len(cat.item_ext)
    )
    links = np.bincount(cat.link_item, minlength=len(cat.item_ext))
    base = np.where(links > 0, per_item / np.maximum(links, 1), 0.5)
    shrunk = (k_i + ITEM_SHRINKAGE * base) / (n_i + ITEM_SHRINKAGE)
    return logit(shrunk) - logit(base), rate_c


def _precedence(
    session: Session, org: Organisation, cat: Catalogue
) -> tuple[np.ndarray, np.ndarray]:
    """From the organisation's logs (up to PRECEDENCE_LEARNERS learners): how many learners
    met concept a before concept b, and each concept's mean relative first-meeting position."""
    c = len(cat.concept_ext)
    before = np.zeros((c, c))
    pos_sum, pos_n = np.zeros(c), np.zeros(c)
    if c == 0:
        return before, np.zeros(0)
    cpos = {int(d): k for k, d in enumerate(cat.concept_db.tolist())}
    sample = (
        select(Learner.id)
        .where(Learner.org_id == org.id, Learner.n_answers > 0)
        .order_by(Learner.id.desc())
        .limit(PRECEDENCE_LEARNERS)
        .scalar_subquery()
    )
    rows = session.execute(
        select(Interaction.learner_id, ItemConcept.concept_id, func.min(Interaction.timestamp))
        .join(ItemConcept, ItemConcept.item_id == Interaction.item_id)
        .where(Interaction.org_id == org.id, Interaction.learner_id.in_(sample))
        .group_by(Interaction.learner_id, ItemConcept.concept_id)
        .order_by(Interaction.learner_id, func.min(Interaction.timestamp))
    ).all()
    k = 0
    while k < len(rows):
        j = k
        while j < len(rows) and rows[j][0] == rows[k][0]:
            j += 1
        seq = [cpos[int(r[1])] for r in rows[k:j] if int(r[1]) in cpos]
        if len(seq) > 1:
            idx = np.array(seq)
            upper = np.triu(np.ones((len(idx), len(idx)), dtype=bool), 1)
            a, b = np.nonzero(upper)
            np.add.at(before, (idx[a], idx[b]), 1.0)
            np.add.at(pos_sum, idx, np.arange(len(idx)) / (len(idx) - 1))
            np.add.at(pos_n, idx, 1.0)
        k = j
    position = (pos_sum + PRECEDENCE_SHRINKAGE * 0.5) / (pos_n + PRECEDENCE_SHRINKAGE)
    return before, position


def data_precedence_edges(
    cat: Catalogue, fixed: list[tuple[int, int]]
) -> list[tuple[int, int, float, int]]:
    """Concept pairs that most learners met in one order (at least PRECEDENCE_AGREEMENT of
    at least PRECEDENCE_MIN_LEARNERS who met both), as ``(a, b, share, learners)``, strongest
    first, skipping any that would close a cycle with ``fixed`` or a stronger pair, and any
    that puts a concept before one the organisation teaches at a lower level."""
    m = cat.met_before
    both = m + m.T
    share = np.divide(m, both, out=np.zeros_like(m), where=both > 0)
    cand = np.argwhere((both >= PRECEDENCE_MIN_LEARNERS) & (share >= PRECEDENCE_AGREEMENT))
    cand = sorted(
        ((int(a), int(b)) for a, b in cand), key=lambda e: (-share[e], -both[e], e[0], e[1])
    )
    children: dict[int, set[int]] = {}
    for a, b in fixed:
        children.setdefault(a, set()).add(b)

    def reaches(src: int, dst: int) -> bool:
        stack, seen = [src], {src}
        while stack:
            x = stack.pop()
            if x == dst:
                return True
            for y in children.get(x, ()):
                if y not in seen:
                    seen.add(y)
                    stack.append(y)
        return False

    level = cat.concept_level if len(cat.concept_level) == len(m) else np.full(len(m), np.nan)
    out = []
    for a, b in cand:
        if reaches(b, a) or reaches(a, b):
            continue  # would close a cycle, or already implied
        if level[a] > level[b]:
            continue  # the organisation teaches b at a lower level
        children.setdefault(a, set()).add(b)
        out.append((a, b, float(share[a, b]), int(both[a, b])))
    return out


# ---------------------------------------------------------------------- item lookup
@dataclass(frozen=True)
class ConceptRef:
    """A concept as a response names it (``name``: :func:`concept_label`)."""

    external_id: str
    name: str


@dataclass(frozen=True)
class ItemRef:
    """What the answer path needs of an item (from the cached catalogue when it is current,
    so that an answer costs no catalogue query)."""

    id: int
    external_id: str
    concepts: tuple[ConceptRef, ...]


def concept_label(external_id: str, name: str) -> str:
    """A concept as teachers read it, wherever the service names one (reasons, mastery,
    answers, analytics): its name, or "concept <id>" where it has none (EdNet's tags, the
    research files' skill numbers)."""
    return name or f"concept {external_id}"


def _item_ref(item: Item) -> ItemRef:
    cs = sorted(item.concepts, key=lambda c: c.id)
    return ItemRef(
        item.id,
        item.external_id,
        tuple(ConceptRef(c.external_id, concept_label(c.external_id, c.name)) for c in cs),
    )


def item_refs(
    session: Session, *, org: Organisation, external_ids: list[str], auto_create: bool
) -> dict[str, ItemRef]:
    """The items of ``external_ids``: active ones from the organisation's cached catalogue
    (no query while it is current), the rest (inactive, unknown, or all of them when the
    catalogue must be rebuilt) in one query; unknown ones are created (``auto_create``) or
    NotFound."""
    out: dict[str, ItemRef] = {}
    missing = list(external_ids)
    cat = catalogue(session, org) if not (session.new or session.dirty) else None
    if cat is not None:
        pos = cat.item_pos
        missing = []
        for ext in external_ids:
            k = pos.get(ext)
            if k is None:
                missing.append(ext)
                continue
            out[ext] = ItemRef(
                int(cat.item_db[k]),
                ext,
                tuple(ConceptRef(cat.concept_ext[c], cat.name(c)) for c in cat.item_concepts[k]),
            )
    if missing:
        found = {
            i.external_id: i
            for i in session.scalars(
                select(Item).where(Item.org_id == org.id, Item.external_id.in_(missing))
            )
        }
        created = False
        for ext in missing:
            item = found.get(ext)
            if item is None:
                if not auto_create:
                    raise NotFound(f"item {ext!r} not found")
                item = Item(org_id=org.id, external_id=ext, meta={}, concepts=[])
                session.add(item)
                org.bump_catalogue()
                created = True
            found[ext] = item
        if created:
            session.flush()
        for ext in missing:
            out[ext] = _item_ref(found[ext])
    return out
