"""Next-question recommendation: candidate items scored by the active model, picked by a
named policy from one registry (:data:`POLICIES`), each with the reason in a teacher's words.

What a policy sees (:class:`LearnerView`, computed once per request): every catalogue item's
predicted success (the active model's; for a concept-level model, shifted by the item's
difficulty estimated from the organisation's answers with shrinkage, so that the items of one
concept are told apart), and per concept the learner's status and reported mastery
(:mod:`tutor.evidence`: only the learner's own answers make a concept mastered), the model's
estimate (for models that forget, at the time of the request) and today's answers on it.

Rules every policy but ``random`` follows: a concept counts as mastered only with its
``mastered`` status;
items whose concepts have an unmastered prerequisite (organisation graph, else PSI-KT's learned
one) are skipped (relaxed, and said so, when nothing else is left); concepts that reached today's
cap of questions are skipped; items answered in the last ``recent_exclusion`` answers are
skipped. Policies (``register`` adds one):

* ``mixed`` (default): review one decayed concept (models that forget), then *stay on the
  concept the learner is working on* until it is mastered or capped; when it is struggling,
  *step back* to its unmastered prerequisite, or to its easiest questions; then the next
  concept of the curriculum; then the target rule;
* ``target``: the items whose predicted success is closest to the target (0.7 by default);
* ``review``: concepts practised whose predicted mastery has decayed below the review
  threshold since the learner's last answer (models that forget);
* ``curriculum``: items of the next concept in the designed curriculum
  (:mod:`tutor.curriculum`) that is not mastered and whose prerequisites are;
* ``skill-builder``: ASSISTments' rule: the curriculum's concepts in turn until 3 correct in a
  row (or today's cap), items at random;
* ``lowest-mastery``: OATutor's heuristic: the unmastered concept with the lowest reported
  mastery, an item at random;
* ``random``: any item at random (the baseline of no tutoring: it skips recent items only,
  not the prerequisite gates or the daily cap).

An empty list comes with a ``note`` that says why.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import evidence as ev_mod
from .curriculum import design_curriculum
from .db import Concept, Interaction, Item, ItemConcept, Learner, Organisation, PrerequisiteEdge
from .evidence import EvidenceRule
from .runtime import LoadedModel
from .service import (
    Invalid,
    NotFound,
    active_model,
    as_utc,
    current_state,
    db_scope,
    utcnow,
)
from .settings import MASTERY_SCALES

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
#: weight of difficulty (harder concepts later) against the first-meeting position in the
#: precedence the curriculum designer is given
DIFFICULTY_WEIGHT = 1.0 / 3.0
#: weight of the organisation's teaching levels (concepts.level) against the data's precedence
LEVEL_WEIGHT = 10.0


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
    per_model: dict[int, dict[str, Any]] = field(default_factory=dict)

    def name(self, pos: int) -> str:
        """A concept's name for a teacher ("concept <id>" where it has none)."""
        return self.concept_name[pos] or f"concept {self.concept_ext[pos]}"


_CACHE: dict[tuple[str, int], Catalogue] = {}
_LOCK = threading.Lock()


def catalogue(session: Session, org: Organisation) -> Catalogue:
    key = (db_scope(session), org.id)
    cat = _CACHE.get(key)
    if cat is not None and cat.version == org.catalogue_version:
        return cat
    concepts = session.execute(
        select(Concept.id, Concept.external_id, Concept.name, Concept.level)
        .where(Concept.org_id == org.id)
        .order_by(Concept.id)
    ).all()
    cpos = {c[0]: k for k, c in enumerate(concepts)}
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
    with _LOCK:
        _CACHE[key] = cat
    return cat


def _logit(p: np.ndarray) -> np.ndarray:
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
    return _logit(shrunk) - _logit(base), rate_c


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


def learned_prerequisites(model: LoadedModel, threshold: float = 0.7) -> list[tuple[str, str]]:
    """A PSI-KT model's learned graph as an acyclic edge list: edges with probability above
    ``threshold`` and above their reverse, added strongest first, skipping any that would
    close a cycle."""
    graph = model.model.prerequisite_graph()
    if graph is None:
        return []
    p = graph.cpu().numpy()
    cand = np.argwhere((p > threshold) & (p > p.T))
    order = np.argsort(-p[cand[:, 0], cand[:, 1]]) if len(cand) else []
    reach: dict[int, set[int]] = {}
    edges: list[tuple[str, str]] = []
    for k in order:
        i, j = (int(x) for x in cand[k])
        if i in reach.get(j, set()) or i == j:
            continue  # j already reaches i: i -> j would close a cycle
        desc = {j} | reach.get(j, set())
        for a, r in list(reach.items()):
            if i in r or a == i:
                r |= desc
        reach.setdefault(i, set()).update(desc)
        edges.append((model.concept_ids[i], model.concept_ids[j]))
    return edges


def _model_view(cat: Catalogue, model: LoadedModel) -> dict[str, Any]:
    """Per (catalogue, model): item and concept model indices, the prerequisite gates
    (organisation graph, else PSI-KT's learned one) and the curriculum, ordered by the gates,
    by the data's precedence (the order in which learners met the concepts) and by Singh et
    al.'s contrast and transfer terms over the model's concept vectors."""
    view = cat.per_model.get(model.model_id)
    if view is not None:
        return view
    item_idx = model.item_idx(cat.item_ext)
    pos = {c: i + 1 for i, c in enumerate(model.concept_ids)}
    concept_idx = np.array([pos.get(c, 0) for c in cat.concept_ext], dtype=np.int64)
    cpos = {c: k for k, c in enumerate(cat.concept_ext)}
    gates = list(cat.prerequisites)
    source = "organisation"
    if not gates:
        gates = [
            (cpos[a], cpos[b]) for a, b in learned_prerequisites(model) if a in cpos and b in cpos
        ]
        source = "learned by the model" if gates else "none"
    data_edges = data_precedence_edges(cat, gates)
    vectors = None
    cv = model.model.concept_vectors()
    if cv is not None and len(cat.concept_ext):
        cvn = cv.detach().cpu().numpy()
        vectors = np.zeros((len(cat.concept_ext), cvn.shape[1]))
        have = concept_idx > 0
        vectors[have] = cvn[concept_idx[have] - 1]
    position = None
    if len(cat.met_position):
        k = len(cat.concept_rate)
        # where a concept usually comes in the data, and harder concepts later (the rank of
        # 1 - success rate, in [0, 1])
        hard = np.argsort(np.argsort(-cat.concept_rate, kind="stable")) / max(k - 1, 1)
        position = (1 - DIFFICULTY_WEIGHT) * cat.met_position + DIFFICULTY_WEIGHT * hard
        # the organisation's teaching levels (dense rank in [0, 1]; a concept without one in
        # the middle) weigh LEVEL_WEIGHT times more: they order the curriculum wherever the
        # prerequisite graph leaves a choice
        lv = cat.concept_level
        if len(lv) == k and np.isfinite(lv).any():
            have = np.isfinite(lv)
            uniq = np.unique(lv[have])
            rank = np.full(k, 0.5)
            rank[have] = np.searchsorted(uniq, lv[have]) / max(len(uniq) - 1, 1)
            position = position + LEVEL_WEIGHT * rank
    order_edges = [(cat.concept_ext[a], cat.concept_ext[b]) for a, b in gates] + [
        (cat.concept_ext[a], cat.concept_ext[b]) for a, b, _, _ in data_edges
    ]
    curriculum = design_curriculum(
        vectors,
        cat.concept_ext,
        prerequisites=order_edges,
        precedence=position,
        names={c: cat.name(k) for k, c in enumerate(cat.concept_ext)},
    )
    parents: list[list[int]] = [[] for _ in cat.concept_ext]
    for a, b in gates:
        parents[b].append(a)
    after: list[list[str]] = [[] for _ in cat.concept_ext]
    for a, b, share, n in data_edges:
        after[b].append(f"{cat.name(a)} ({share:.0%} of {n} learners met it first)")
    cur_pos = [cpos[c] for c in curriculum.order()]
    view = {
        "edges": np.array(gates, dtype=np.int64).reshape(-1, 2),
        "item_idx": item_idx,
        "concept_idx": concept_idx,
        "curriculum": curriculum,
        "curriculum_pos": cur_pos,
        "curriculum_rank": {c: k for k, c in enumerate(cur_pos)},
        "parents": parents,
        "after": after,
        "data_edges": data_edges,
        "prerequisite_source": source,
        "item_aware": bool(model.model.item_aware),
    }
    cat.per_model[model.model_id] = view
    return view


@dataclass
class LearnerView:
    """Everything a policy looks at for one learner (computed once per request)."""

    cat: Catalogue
    view: dict[str, Any]
    model: LoadedModel
    p_items: np.ndarray  # [I] predicted success now (item difficulty included)
    estimate: np.ndarray  # [C] the model's concept estimate now (nan: unknown concept)
    evidence: ev_mod.Evidence  # the learner's own evidence, by concept external id
    rule: EvidenceRule
    today: str  # UTC date of the request (the daily cap counts answers on it)
    recent: list[int]  # item positions answered recently, the latest first
    any_answers: bool
    exclude_recent: bool = True  # skip the recent items (recent_exclusion > 0)

    def __post_init__(self) -> None:
        c = len(self.cat.concept_ext)
        e = [self.evidence.get(x) for x in self.cat.concept_ext]
        self.n_own = np.array([x.n if x else 0 for x in e], dtype=np.int64)
        self.mastered = np.array([ev_mod.is_mastered(x, self.rule) for x in e], dtype=bool)
        self.struggling = np.array([ev_mod.is_struggling(x, self.rule) for x in e], dtype=bool)
        self.capped = np.array([ev_mod.capped(x, self.rule, self.today) for x in e], dtype=bool)
        est = np.asarray(self.estimate, dtype=np.float64)
        self.mastery = np.array(
            [x.p if x is not None and x.n else est[k] for k, x in enumerate(e)], dtype=np.float64
        ).reshape(c)

    def status(self, pos: int) -> str:
        e = self.evidence.get(self.cat.concept_ext[pos])
        return ev_mod.status(e, self.rule, any_answers=self.any_answers)

    def basis(self, pos: int) -> str:
        e = self.evidence.get(self.cat.concept_ext[pos])
        return ev_mod.basis(e, self.rule, any_answers=self.any_answers)


def _shifted(p: np.ndarray, offset: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(_logit(np.asarray(p, dtype=np.float64)) + offset)))


def learner_view(
    session: Session,
    *,
    org: Organisation,
    learner: Learner,
    recent_exclusion: int,
    at: datetime | None = None,
    scale: str = "reachable",
    rule: EvidenceRule | None = None,
) -> LearnerView:
    """What the policies see of one learner. ``scale`` is how the model's concept estimate is
    measured: ``reachable`` (the default) on the range between a new learner and one who has
    just answered :data:`tutor.runtime.REFERENCE_STREAK` in a row correctly
    (:meth:`tutor.runtime.LoadedModel.scaled_mastery`), ``success`` as the mean predicted
    success over the concept's items. ``rule`` is the mastery criterion (the defaults of
    :class:`tutor.evidence.EvidenceRule` when None)."""
    if scale not in MASTERY_SCALES:
        raise Invalid(
            f"unknown mastery scale {scale!r}; expected one of {', '.join(MASTERY_SCALES)}"
        )
    model = active_model(session, org=org)
    if model is None:
        raise NotFound("no active model for this organisation")
    cat = catalogue(session, org)
    view = _model_view(cat, model)
    state, row = current_state(session, learner=learner, model=model)
    now = as_utc(at) or utcnow()
    first = as_utc(learner.first_seen)
    t_now = model.time_value(now, first, learner.n_answers) if model.forgets and first else None
    # one prediction over every item the model knows (index 0: items it was not trained on),
    # read both per catalogue item and as concept estimates
    p_all = model.predict_all(state, t_now)
    p_items = p_all[view["item_idx"]] if len(cat.item_ext) else np.zeros(0)
    if len(p_items) and not view["item_aware"]:
        p_items = _shifted(p_items, cat.item_offset)
    full = model.mastery_from(p_all)
    if scale == "reachable":
        full = model.scaled_mastery(full)
    cidx = view["concept_idx"]
    estimate = np.where(cidx > 0, full[cidx], np.nan)
    keep = max(int(recent_exclusion), 1)
    ids = session.scalars(
        select(Interaction.item_id)
        .where(Interaction.learner_id == learner.id)
        .order_by(Interaction.timestamp.desc(), Interaction.event_id.desc())
        .limit(keep)
    ).all()
    # the catalogue's item positions by database id (built once per catalogue version)
    recent = [cat.item_db_pos[int(i)] for i in ids if int(i) in cat.item_db_pos]
    return LearnerView(
        cat=cat,
        view=view,
        model=model,
        p_items=p_items,
        estimate=estimate,
        evidence=ev_mod.load(row.evidence),
        rule=rule or EvidenceRule(),
        today=now.date().isoformat(),
        recent=recent,
        any_answers=learner.n_answers > 0,
        exclude_recent=bool(recent_exclusion),
    )


# ---------------------------------------------------------------------- choosing
class Picker:
    """The state of one recommendation: what is picked so far, what is allowed, and why an
    empty list is empty. Policies call :meth:`take` with candidate items."""

    def __init__(
        self, lv: LearnerView, *, n: int, target: float, review_threshold: float, seed: int
    ) -> None:
        self.lv, self.n, self.target, self.review_threshold = lv, n, target, review_threshold
        self.rng = np.random.default_rng(seed)
        cat = lv.cat
        n_items = len(cat.item_ext)
        self.picked: list[dict[str, Any]] = []
        self.taken = np.zeros(n_items, dtype=bool)
        self.fresh = np.ones(n_items, dtype=bool)
        if lv.exclude_recent and lv.recent:
            self.fresh[lv.recent] = False
        # concepts open to new work: prerequisites mastered, not capped today
        blocked = np.zeros(len(cat.concept_ext), dtype=bool)
        edges = lv.view["edges"]
        if len(edges):
            blocked[edges[~lv.mastered[edges[:, 0]], 1]] = True
        self.open = ~blocked & ~lv.capped
        self.closed = np.zeros(n_items, dtype=bool)  # an item with a concept not open
        if len(cat.link_item):
            self.closed[cat.link_item[~self.open[cat.link_concept]]] = True
        self.eligible = self.fresh & ~self.closed
        # an item with a concept that had today's questions and is not mastered (a mastered
        # concept's cap holds its own items back, not those it shares with other concepts)
        self.capped_items = np.zeros(n_items, dtype=bool)
        if len(cat.link_item):
            stuck = lv.capped & ~lv.mastered
            self.capped_items[cat.link_item[stuck[cat.link_concept]]] = True
        self.relaxed = False
        self.notes: list[str] = []
        #: (concept, why) when a struggling concept had nothing to step back to
        self.moved_on_from: tuple[int, str] | None = None

    @property
    def room(self) -> int:
        return self.n - len(self.picked)

    def items_of(self, concept: int) -> np.ndarray:
        cat = self.lv.cat
        return cat.link_item[cat.link_concept == concept]

    def has_open_items(self, concept: int) -> bool:
        """Whether the concept has items (it is open itself: see :meth:`take_concept`)."""
        return bool(len(self.items_of(concept)))

    def closeness(self, positions: np.ndarray) -> np.ndarray:
        return np.abs(self.lv.p_items[positions] - self.target)

    def take(
        self,
        positions: np.ndarray,
        rule: str,
        why: Callable[[int], str],
        limit: int,
        *,
        order: str = "target",
        allow: np.ndarray | None = None,
    ) -> int:
        """Pick up to ``limit`` of ``positions`` (allowed by ``allow``, default the eligible
        items), ordered by ``order``: ``target`` (closest predicted success first), ``easy``
        (highest first) or ``random``. Returns how many were picked."""
        ok = self.eligible if allow is None else allow
        positions = np.unique(np.asarray(positions, dtype=np.int64))
        positions = positions[ok[positions] & ~self.taken[positions]]
        if order == "easy":
            positions = positions[np.argsort(-self.lv.p_items[positions], kind="stable")]
        elif order == "random":
            positions = self.rng.permutation(positions)
        else:
            positions = positions[np.argsort(self.closeness(positions), kind="stable")]
        positions = positions[: max(min(limit, self.room), 0)]
        cat = self.lv.cat
        for p in positions:
            self.taken[p] = True
            self.picked.append(
                {
                    "item_id": cat.item_ext[p],
                    "predicted_success": round(float(self.lv.p_items[p]), 6),
                    "concepts": [cat.concept_ext[c] for c in cat.item_concepts[p]],
                    "concept_names": [cat.name(c) for c in cat.item_concepts[p]],
                    "policy": rule,
                    "reason": why(int(p)),
                }
            )
        return len(positions)

    def take_concept(
        self, concept: int, rule: str, why: Callable[[int], str], limit: int, order: str = "target"
    ) -> int:
        """Items of one open concept, in tiers: fresh items whose other concepts are open too;
        then fresh items whatever the prerequisites of their other concepts (a concept whose
        every item also carries a concept still waiting for prerequisites must not wait for
        ever; today's cap still holds); then, for a concept
        with no fresh item left, the least recently answered ones, so that a learner is never
        stuck for want of new items."""
        items = self.items_of(concept)
        got = self.take(items, rule, why, limit, order=order)
        if got < limit and self.open[concept]:
            allow = self.fresh & ~self.capped_items
            got += self.take(items, rule, why, limit - got, order=order, allow=allow)
        if got == 0 and self.open[concept]:
            recent = self.lv.recent
            stale = [p for p in items.tolist() if not self.taken[p] and not self.capped_items[p]]
            stale.sort(key=lambda p: -recent.index(p) if p in recent else -len(recent) - 1)
            for p in stale[: max(min(limit, self.room), 0)]:
                allow = np.zeros(len(self.taken), dtype=bool)
                allow[p] = True
                got += self.take(np.array([p]), rule, why, 1, allow=allow)
        return got

    def success_phrase(self, p: int) -> str:
        return f"Predicted success on this question: {self.lv.p_items[p]:.2f}."


@dataclass(frozen=True)
class Policy:
    """A named recommendation policy: ``fill`` picks items into a :class:`Picker`."""

    name: str
    description: str
    fill: Callable[[Picker], None]


POLICIES: dict[str, Policy] = {}


def register(
    name: str, description: str
) -> Callable[[Callable[[Picker], None]], Callable[[Picker], None]]:
    """Add a policy to the registry (used by ``next-items``, settings and policy-eval)."""

    def deco(fn: Callable[[Picker], None]) -> Callable[[Picker], None]:
        if name in POLICIES:
            raise ValueError(f"policy {name!r} is registered twice")
        POLICIES[name] = Policy(name, description, fn)
        return fn

    return deco


def _next_concepts(pk: Picker, exclude: set[int] | None = None) -> list[int]:
    """Curriculum concepts open to new work, in curriculum order: not mastered, prerequisites
    mastered, not capped today, with items."""
    lv = pk.lv
    out = []
    for c in lv.view["curriculum_pos"]:
        if c in (exclude or ()) or lv.mastered[c] or not pk.open[c]:
            continue
        if not pk.has_open_items(c):
            continue
        out.append(c)
    return out


def _curriculum_reason(pk: Picker, c: int) -> Callable[[int], str]:
    lv = pk.lv
    k = lv.view["curriculum_rank"][c] + 1
    total = len(lv.view["curriculum_pos"])
    pre = [lv.cat.name(p) for p in lv.view["parents"][c]]
    why = f"its prerequisites {', '.join(pre)} are mastered" if pre else "no prerequisites"
    before = ""
    if pk.moved_on_from is not None:
        gone, trouble = pk.moved_on_from
        before = (
            f"Moving on from {lv.cat.name(gone)} ({trouble}; no easier question or "
            "prerequisite left to step back to). "
        )
    return lambda p: (
        before
        + f"Next in the curriculum: {lv.cat.name(c)} (step {k} of {total}; {why}). "
        + pk.success_phrase(p)
    )


def review_due(lv: LearnerView, review_threshold: float) -> np.ndarray:
    """[C] bool: concepts to review, for a model that forgets: mastered on the learner's own
    answers, not practised today, and predicted (now, or at the request's ``at``) to have
    decayed below ``review_threshold``. One review question a day per concept: a correct answer
    keeps it mastered, a wrong one lowers its evidence and may reopen it."""
    if not lv.model.forgets:
        return np.zeros(len(lv.cat.concept_ext), dtype=bool)
    now = np.nan_to_num(lv.estimate, nan=1.0)
    days = np.array(
        [(lv.evidence[c].day if c in lv.evidence else "") for c in lv.cat.concept_ext], dtype=object
    )
    return lv.mastered & (now < review_threshold) & (days < lv.today)


def _review(pk: Picker, limit: int) -> None:
    lv = pk.lv
    if not lv.model.forgets:
        pk.notes.append(
            f"nothing to review: the active model ({lv.model.name}) does not model forgetting"
        )
        return
    now = np.nan_to_num(lv.estimate, nan=1.0)
    due = np.flatnonzero(review_due(lv, pk.review_threshold))
    due = due[np.argsort(now[due], kind="stable")]
    if not len(due):
        pk.notes.append(
            "nothing to review: no mastered concept is predicted to have decayed below "
            f"{pk.review_threshold:.2f}"
        )
    for c in due:
        if pk.room <= 0 or limit <= 0:
            break
        last = lv.evidence[lv.cat.concept_ext[c]].day
        limit -= pk.take_concept(
            int(c),
            "review",
            lambda p, c=c, last=last: (
                f"Review {lv.cat.name(c)}: mastered, last practised {last}; the model predicts "
                f"its mastery has fallen to {now[c]:.2f} (reviews below "
                f"{pk.review_threshold:.2f})."
            ),
            1,
        )


def _curriculum(pk: Picker, limit: int, exclude: set[int] | None = None) -> None:
    start = len(pk.picked)
    for c in _next_concepts(pk, exclude):
        left = limit - (len(pk.picked) - start)
        if pk.room <= 0 or left <= 0:
            break
        pk.take_concept(c, "curriculum", _curriculum_reason(pk, c), left)
    if len(pk.picked) == start:
        _explain_nothing_open(pk)


def _explain_nothing_open(pk: Picker) -> None:
    lv = pk.lv
    todo = ~lv.mastered
    cap = lv.rule.daily_cap
    if not todo.any():
        pk.notes.append("every concept is mastered")
    elif not (todo & ~lv.capped).any():
        pk.notes.append(f"every concept not yet mastered has had today's {cap} questions")
    elif not (todo & pk.open).any():
        pk.notes.append(
            "every concept not yet mastered waits for a prerequisite"
            + (f" or has had today's {cap} questions" if (todo & lv.capped).any() else "")
        )
    elif pk.capped_items.any():
        pk.notes.append(f"the questions left share a concept that has had today's {cap} questions")


def _focus(pk: Picker) -> int | None:
    """The concept the learner is working on: that of the latest answer, while it is not
    mastered and not capped today."""
    lv = pk.lv
    if not lv.recent:
        return None
    for c in lv.cat.item_concepts[lv.recent[0]]:
        c = int(c)
        if not lv.mastered[c] and pk.open[c] and pk.has_open_items(c):
            return c
    return None


def _step_back(pk: Picker, c: int) -> None:
    """A struggling concept: its earliest unmastered prerequisite that is open, else its
    easiest questions."""
    lv = pk.lv
    e = lv.evidence.get(lv.cat.concept_ext[c])
    trouble = (
        f"{-e.run} wrong in a row on {lv.cat.name(c)}"
        if e is not None and -e.run >= lv.rule.struggle_run
        else f"no progress on {lv.cat.name(c)} after {e.n if e else 0} questions"
    )
    seen, frontier, candidates = {c}, list(lv.view["parents"][c]), []
    while frontier:
        p = frontier.pop(0)
        if p in seen:
            continue
        seen.add(p)
        if not lv.mastered[p]:
            if pk.open[p]:
                candidates.append(p)
            frontier.extend(lv.view["parents"][p])
    rank = lv.view["curriculum_rank"]
    if not candidates:
        # every prerequisite is mastered (the usual case: the concept opened once they were):
        # one question on the weakest of them, to rebuild what the concept stands on
        done = [p for p in lv.view["parents"][c] if lv.mastered[p] and not lv.capped[p]]
        if done:
            weakest = min(done, key=lambda x: (lv.mastery[x], rank.get(x, 0)))
            pk.take_concept(
                weakest,
                "step-back",
                lambda q, p=weakest: (
                    f"Step back to {lv.cat.name(p)} (mastered), a prerequisite of "
                    f"{lv.cat.name(c)}: {trouble}. " + pk.success_phrase(q)
                ),
                1,
                order="easy",
            )
    for p in sorted(candidates, key=lambda x: rank.get(x, 0)):
        pk.take_concept(
            p,
            "step-back",
            lambda q, p=p: (
                f"Step back to {lv.cat.name(p)}, a prerequisite of {lv.cat.name(c)}: {trouble}. "
                + pk.success_phrase(q)
            ),
            pk.room,
        )
        if pk.room <= 0:
            return
    # easier questions of the concept itself: only ones not answered recently (repeating the
    # question just failed is no step back)
    items = pk.items_of(c)
    allow = pk.fresh & ~pk.capped_items
    got = pk.take(
        items,
        "step-back",
        lambda q: f"Easier question on {lv.cat.name(c)}: {trouble}. " + pk.success_phrase(q),
        pk.room,
        order="easy",
        allow=allow,
    )
    if not got:
        pk.moved_on_from = (c, trouble)


@register(
    "mixed",
    "review a decayed concept, stay on the current concept until mastered (stepping back when "
    "struggling), then the curriculum's next concept, then the target rule",
)
def _mixed(pk: Picker) -> None:
    lv = pk.lv
    if lv.model.forgets:
        _review(pk, 1)
        pk.notes.clear()
    focus = _focus(pk)
    if focus is not None:
        if lv.struggling[focus]:
            _step_back(pk, focus)
        else:
            e = lv.evidence.get(lv.cat.concept_ext[focus])
            so_far = f"{e.n_correct} of {e.n} correct so far" if e else "just started"
            pk.take_concept(
                focus,
                "continue",
                lambda p: (
                    f"Keep practising {lv.cat.name(focus)} until it is mastered ({so_far}). "
                    + pk.success_phrase(p)
                ),
                pk.room,
            )
    if pk.room > 0:
        _curriculum(pk, pk.room, {focus} if focus is not None else set())
    if pk.room > 0:
        _target(pk, practice=False)


@register("target", "the items whose predicted success is closest to the target")
def _target_policy(pk: Picker) -> None:
    _target(pk, practice=True)


def _target(pk: Picker, *, practice: bool) -> None:
    """Items closest to the target, concepts not yet mastered first; with ``practice`` also
    items whose concepts are all mastered."""
    lv = pk.lv
    open_items = np.flatnonzero(pk.eligible)
    mastered_items = np.zeros(len(pk.taken), dtype=bool)
    if len(lv.cat.link_item):
        # items all of whose concepts are mastered are practice, not learning: last
        np.logical_or.at(mastered_items, lv.cat.link_item, lv.mastered[lv.cat.link_concept])
        done = np.ones(len(pk.taken), dtype=bool)
        np.logical_and.at(done, lv.cat.link_item, lv.mastered[lv.cat.link_concept])
        mastered_items = done & (np.bincount(lv.cat.link_item, minlength=len(done)) > 0)

    def why(p: int) -> str:
        names = ", ".join(lv.cat.name(c) for c in lv.cat.item_concepts[p]) or "no concept"
        return (
            f"Predicted success {lv.p_items[p]:.2f} is close to the target {pk.target:.2f} "
            f"({names})."
        )

    # an item without concepts teaches nothing the curriculum tracks: practice only
    tagged = np.bincount(lv.cat.link_item, minlength=len(pk.taken)) > 0
    learn = open_items[~mastered_items[open_items] & tagged[open_items]]
    pk.take(learn, "target", why, pk.room)
    if pk.room > 0 and practice:
        pk.take(open_items, "target", why, pk.room)
    if not pk.picked:
        _explain_nothing_open(pk)


@register("review", "concepts whose predicted mastery has decayed since the last answer")
def _review_policy(pk: Picker) -> None:
    _review(pk, pk.n)


@register("curriculum", "items of the next concept of the designed curriculum")
def _curriculum_policy(pk: Picker) -> None:
    _curriculum(pk, pk.n)


@register(
    "skill-builder",
    "ASSISTments' rule: the curriculum's concepts in turn until 3 correct in a row (or the "
    "daily cap), items at random",
)
def _skill_builder(pk: Picker) -> None:
    lv = pk.lv
    for c in lv.view["curriculum_pos"]:
        e = lv.evidence.get(lv.cat.concept_ext[c])
        if (e is not None and e.run >= 3) or lv.capped[c] or not pk.has_open_items(c):
            continue
        pk.take_concept(
            c,
            "skill-builder",
            lambda p, c=c: f"Skill builder {lv.cat.name(c)}: until 3 correct in a row.",
            pk.room,
            order="random",
        )
        if pk.room <= 0:
            return


@register(
    "lowest-mastery",
    "OATutor's heuristic: the unmastered concept with the lowest reported mastery",
)
def _lowest_mastery(pk: Picker) -> None:
    lv = pk.lv
    m = np.nan_to_num(lv.mastery, nan=0.0)
    for c in np.argsort(m, kind="stable"):
        if lv.mastered[c] or not pk.open[c] or not pk.has_open_items(int(c)):
            continue
        pk.take_concept(
            int(c),
            "lowest-mastery",
            lambda p, c=c: f"Lowest mastery: {lv.cat.name(c)} at {m[c]:.2f}.",
            pk.room,
            order="random",
        )
        if pk.room <= 0:
            return


@register("random", "items drawn at random from the catalogue")
def _random(pk: Picker) -> None:
    pk.take(
        np.arange(len(pk.taken)),
        "random",
        lambda p: "Drawn at random.",
        pk.room,
        order="random",
        allow=pk.fresh,  # the baseline of no tutoring: no gates, no cap (only recency)
    )


def recommend(
    lv: LearnerView,
    *,
    n: int,
    policy: str,
    target: float,
    review_threshold: float,
    seed: int = 0,
    mastery_threshold: float | None = None,
) -> dict[str, Any]:
    """Run the registered ``policy`` for one learner. ``mastery_threshold`` is kept for
    callers of the earlier signature; the view's rule decides what is mastered."""
    spec = POLICIES.get(policy)
    if spec is None:
        raise Invalid(f"unknown policy {policy!r}; expected one of {', '.join(POLICIES)}")
    pk = Picker(lv, n=n, target=target, review_threshold=review_threshold, seed=seed)
    spec.fill(pk)
    if not pk.picked and policy not in ("review",) and pk.fresh.any():
        # nothing open: relax the prerequisite gates (said so) rather than leave the learner
        # without a question
        pk.eligible = pk.fresh & ~pk.capped_items
        if pk.eligible.any():
            pk.relaxed = True
            pk.open = ~lv.capped
            spec.fill(pk)
    note = None
    if not pk.picked:
        note = "; ".join(dict.fromkeys(pk.notes)) or "no item is open to this learner"
        note = note[0].upper() + note[1:] + "."
    return {
        "policy": policy,
        "target": target,
        "model": {"id": lv.model.model_id, "name": lv.model.name, "forgets": lv.model.forgets},
        "prerequisites": lv.view["prerequisite_source"],
        "prerequisites_relaxed": pk.relaxed,
        "items": pk.picked[:n],
        "note": note,
    }


def curriculum_for(
    view: dict[str, Any],
    cat: Catalogue,
    mastery: np.ndarray | None,
    mastered: np.ndarray | None,
    statuses: list[str] | None = None,
) -> dict[str, Any]:
    """The designed curriculum with, per step, what it rests on and the mastery of a learner
    (``statuses`` given) or a group (mean mastery; ``mastered`` when every member is)."""
    cur = view["curriculum"]
    steps = []
    for step, c in zip(cur.steps, view["curriculum_pos"], strict=True):
        m = None if mastery is None or np.isnan(mastery[c]) else round(float(mastery[c]), 6)
        reason = step.reason
        if view["after"][c]:
            reason += "; usually after " + ", ".join(view["after"][c])
        steps.append(
            {
                "position": step.position + 1,
                "concept_id": step.concept_id,
                "name": cat.name(c),
                "score_gain": step.score_gain,
                "prerequisites": step.prerequisites,
                "prerequisite_names": [cat.name(p) for p in view["parents"][c]],
                "reason": reason,
                "mastery": m,
                "mastered": bool(mastered[c]) if mastered is not None else False,
                "status": statuses[c] if statuses is not None else None,
            }
        )
    return {
        "method": cur.method,
        "score": cur.score,
        "prerequisites": view["prerequisite_source"],
        "data_precedence_pairs": len(view["data_edges"]),
        "steps": steps,
    }
