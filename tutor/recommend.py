"""Next-question recommendation: candidate items scored by the active model, picked by a
named policy, each with the reason it was chosen.

Per request: one batched ``predict`` over every candidate item of the organisation, one
vector of concept mastery (now, and at the learner's last answer for models that forget),
and the organisation's curriculum (cached per catalogue and model version). Policies:

* ``target``: the item whose predicted success is closest to the target (default 0.7, the
  zone of proximal development);
* ``review``: concepts whose predicted mastery has decayed below the review threshold since
  the learner's last answer (models that forget, e.g. PSI-KT); empty for other models;
* ``curriculum``: items of the next unmastered concept of the designed curriculum
  (:mod:`tutor.curriculum`) whose prerequisites are mastered;
* ``mixed`` (default): review first (at most a third of the slots), then the curriculum's
  next concept (up to half), then target items.

Every policy skips items answered in the learner's last ``recent_exclusion`` answers and items
with a concept whose prerequisites are not yet mastered (when nothing else is left, the
prerequisite rule is relaxed and the reason says so).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from .curriculum import design_curriculum
from .db import Concept, Interaction, Item, ItemConcept, Learner, Organisation, PrerequisiteEdge
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

POLICIES = ("mixed", "target", "review", "curriculum")


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
    #: item external id -> position
    item_pos: dict[str, int] = field(default_factory=dict)
    per_model: dict[int, dict[str, Any]] = field(default_factory=dict)


_CACHE: dict[tuple[str, int], Catalogue] = {}
_LOCK = threading.Lock()


def catalogue(session: Session, org: Organisation) -> Catalogue:
    key = (db_scope(session), org.id)
    cat = _CACHE.get(key)
    if cat is not None and cat.version == org.catalogue_version:
        return cat
    concepts = session.execute(
        select(Concept.id, Concept.external_id, Concept.name)
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
    )
    lens = np.array([len(cs) for cs in cat.item_concepts], dtype=np.int64)
    cat.link_item = np.repeat(np.arange(len(cat.item_concepts), dtype=np.int64), lens)
    cat.link_concept = (
        np.concatenate(cat.item_concepts) if len(cat.item_concepts) else np.zeros(0, np.int64)
    ).astype(np.int64)
    cat.item_pos = {ext: k for k, ext in enumerate(cat.item_ext)}
    with _LOCK:
        _CACHE[key] = cat
    return cat


def learned_prerequisites(model: LoadedModel, threshold: float = 0.7) -> list[tuple[str, str]]:
    """A PSI-KT model's learned graph as an acyclic edge list: edges with probability above
    ``threshold`` and above their reverse, added strongest first, skipping any that would
    close a cycle."""
    fn = getattr(model.model, "prerequisite_graph", None)
    if fn is None:
        return []
    p = fn().cpu().numpy()
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
    """Per (catalogue, model): item model indices, concept model indices, curriculum."""
    view = cat.per_model.get(model.model_id)
    if view is not None:
        return view
    item_idx = model.item_idx(cat.item_ext)
    pos = {c: i + 1 for i, c in enumerate(model.concept_ids)}
    concept_idx = np.array([pos.get(c, 0) for c in cat.concept_ext], dtype=np.int64)
    prereq_ext = [(cat.concept_ext[a], cat.concept_ext[b]) for a, b in cat.prerequisites]
    source = "organisation"
    if not prereq_ext:
        known = set(cat.concept_ext)
        prereq_ext = [(a, b) for a, b in learned_prerequisites(model) if a in known and b in known]
        source = "learned by the model" if prereq_ext else "none"
    vectors = None
    cv = model.model.concept_vectors()
    if cv is not None and len(cat.concept_ext):
        cvn = cv.detach().cpu().numpy()
        vectors = np.zeros((len(cat.concept_ext), cvn.shape[1]))
        have = concept_idx > 0
        vectors[have] = cvn[concept_idx[have] - 1]
    curriculum = design_curriculum(vectors, cat.concept_ext, prerequisites=prereq_ext)
    cpos = {c: k for k, c in enumerate(cat.concept_ext)}
    parents: list[list[int]] = [[] for _ in cat.concept_ext]
    for a, b in prereq_ext:
        parents[cpos[b]].append(cpos[a])
    view = {
        "edges": np.array([(cpos[a], cpos[b]) for a, b in prereq_ext], dtype=np.int64).reshape(
            -1, 2
        ),
        "item_idx": item_idx,
        "concept_idx": concept_idx,
        "curriculum": curriculum,
        "curriculum_pos": [cpos[c] for c in curriculum.order()],
        "parents": parents,
        "prerequisite_source": source,
    }
    cat.per_model[model.model_id] = view
    return view


@dataclass
class LearnerView:
    """Everything a policy looks at for one learner (computed once per request)."""

    cat: Catalogue
    view: dict[str, Any]
    model: LoadedModel
    p_items: np.ndarray  # [I] predicted success now
    mastery: np.ndarray  # [C] concept mastery now (nan: the model does not know the concept)
    mastery_then: np.ndarray | None  # [C] at the learner's last answer (forgetting models)
    recent: set[int]  # item positions answered recently


def learner_view(
    session: Session,
    *,
    org: Organisation,
    learner: Learner,
    recent_exclusion: int,
    at: datetime | None = None,
    scale: str = "reachable",
) -> LearnerView:
    """What the policies see of one learner. ``scale`` is how concept mastery is measured
    (see the module docstring): ``reachable`` (the default) on the range between a new
    learner and one who has just answered :data:`tutor.runtime.REFERENCE_STREAK` in a row correctly
    (:meth:`tutor.runtime.LoadedModel.scaled_mastery`), ``success`` as the mean predicted
    success over the concept's items."""
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
    # read both per catalogue item and as concept mastery
    p_all = model.predict_all(state, t_now)
    p_items = p_all[view["item_idx"]] if len(cat.item_ext) else np.zeros(0)
    full = model.mastery_from(p_all)
    if scale == "reachable":
        full = model.scaled_mastery(full)
    cidx = view["concept_idx"]
    mastery = np.where(cidx > 0, full[cidx], np.nan)
    mastery_then = None
    if t_now is not None and row.last_timestamp is not None:
        t_last = model.time_value(as_utc(row.last_timestamp), first, learner.n_answers)
        then = model.mastery_from(model.predict_all(state, t_last))
        if scale == "reachable":
            then = model.scaled_mastery(then)
        mastery_then = np.where(cidx > 0, then[cidx], np.nan)
    recent: set[int] = set()
    if recent_exclusion:
        ids = session.scalars(
            select(Interaction.item_id)
            .where(Interaction.learner_id == learner.id)
            .order_by(Interaction.timestamp.desc(), Interaction.event_id.desc())
            .limit(recent_exclusion)
        ).all()
        pos = np.flatnonzero(np.isin(cat.item_db, np.array(ids, dtype=np.int64)))
        recent = set(pos.tolist())
    return LearnerView(cat, view, model, p_items, mastery, mastery_then, recent)


def _mastered(lv: LearnerView, threshold: float) -> np.ndarray:
    return np.nan_to_num(lv.mastery, nan=0.0) >= threshold


def _prereq_ok(lv: LearnerView, mastered: np.ndarray) -> np.ndarray:
    """[I] bool: every concept of the item has all its prerequisites mastered."""
    cat = lv.cat
    edges = lv.view["edges"]
    blocked = np.zeros(len(cat.concept_ext), dtype=bool)
    if len(edges):
        blocked[edges[~mastered[edges[:, 0]], 1]] = True
    item_blocked = np.zeros(len(cat.item_ext), dtype=bool)
    item_blocked[cat.link_item[blocked[cat.link_concept]]] = True
    return ~item_blocked


def recommend(
    lv: LearnerView,
    *,
    n: int,
    policy: str,
    target: float,
    mastery_threshold: float,
    review_threshold: float,
) -> dict[str, Any]:
    if policy not in POLICIES:
        raise Invalid(f"unknown policy {policy!r}; expected one of {', '.join(POLICIES)}")
    n_items = len(lv.cat.item_ext)
    mastered = _mastered(lv, mastery_threshold)
    ok = _prereq_ok(lv, mastered) if n_items else np.zeros(0, dtype=bool)
    fresh = np.ones(n_items, dtype=bool)
    if lv.recent:
        fresh[list(lv.recent)] = False
    eligible = fresh & ok
    relaxed = False
    if not eligible.any():
        eligible, relaxed = fresh.copy(), True
    closeness = np.abs(lv.p_items - target)
    picked: list[dict[str, Any]] = []
    taken = np.zeros(n_items, dtype=bool)

    def concept_label(pos: int) -> str:
        return lv.cat.concept_ext[pos]

    def take(positions: np.ndarray, rule: str, why: Any, limit: int) -> None:
        positions = positions[eligible[positions] & ~taken[positions]]
        positions = positions[np.argsort(closeness[positions], kind="stable")][:limit]
        for p in positions:
            taken[p] = True
            cs = lv.cat.item_concepts[p]
            picked.append(
                {
                    "item_id": lv.cat.item_ext[p],
                    "predicted_success": round(float(lv.p_items[p]), 6),
                    "concepts": [concept_label(c) for c in cs],
                    "policy": rule,
                    "reason": why(p),
                }
            )

    def items_of(concepts: np.ndarray) -> np.ndarray:
        return np.unique(lv.cat.link_item[np.isin(lv.cat.link_concept, concepts)])

    def review(limit: int) -> None:
        if lv.mastery_then is None:
            return
        now, then = np.nan_to_num(lv.mastery, nan=1.0), np.nan_to_num(lv.mastery_then, nan=0.0)
        decayed = np.flatnonzero((then >= review_threshold) & (now < review_threshold))
        decayed = decayed[np.argsort(now[decayed] - then[decayed])]
        for c in decayed:
            if len(picked) >= limit:
                break
            take(
                items_of(np.array([c])),
                "review",
                lambda p, c=c: (
                    f"review {concept_label(c)}: predicted mastery fell from "
                    f"{then[c]:.2f} to {now[c]:.2f} since the last answer"
                ),
                1,
            )

    def curriculum(limit: int) -> None:
        for c in lv.view["curriculum_pos"]:
            if len(picked) >= limit:
                break
            if mastered[c] or not all(mastered[p] for p in lv.view["parents"][c]):
                continue
            k = lv.view["curriculum_pos"].index(c) + 1
            take(
                items_of(np.array([c])),
                "curriculum",
                lambda p, c=c, k=k: (
                    f"next concept in the curriculum: {concept_label(c)} (position {k}, "
                    f"mastery {np.nan_to_num(lv.mastery[c]):.2f}); predicted success "
                    f"{lv.p_items[p]:.2f}"
                ),
                limit - len(picked),
            )

    def target_fill(limit: int) -> None:
        take(
            np.arange(n_items),
            "target",
            lambda p: f"predicted success {lv.p_items[p]:.2f} is close to the target {target:.2f}",
            limit - len(picked),
        )

    if policy == "target":
        target_fill(n)
    elif policy == "review":
        review(n)
    elif policy == "curriculum":
        curriculum(n)
    else:
        review(max(1, n // 3))
        curriculum(len(picked) + max(1, (n + 1) // 2))
        target_fill(n)
    return {
        "policy": policy,
        "target": target,
        "model": {"id": lv.model.model_id, "name": lv.model.name, "forgets": lv.model.forgets},
        "prerequisites": lv.view["prerequisite_source"],
        "prerequisites_relaxed": relaxed,
        "items": picked[:n],
    }


def curriculum_for(
    view: dict[str, Any],
    cat: Catalogue,
    mastery: np.ndarray | None,
    mastery_threshold: float,
) -> dict[str, Any]:
    cur = view["curriculum"]
    steps = []
    for step, c in zip(cur.steps, view["curriculum_pos"], strict=True):
        m = None if mastery is None or np.isnan(mastery[c]) else round(float(mastery[c]), 6)
        steps.append(
            {
                "position": step.position + 1,
                "concept_id": step.concept_id,
                "name": cat.concept_name[c],
                "score_gain": step.score_gain,
                "prerequisites": step.prerequisites,
                "reason": step.reason,
                "mastery": m,
                "mastered": m is not None and m >= mastery_threshold,
            }
        )
    return {
        "method": cur.method,
        "score": cur.score,
        "prerequisites": view["prerequisite_source"],
        "steps": steps,
    }
