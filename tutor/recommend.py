"""Next-question recommendation: candidate items scored by the active model, picked by a
named policy from one registry (:data:`POLICIES`, :mod:`tutor.policies`), each with the reason
in a teacher's words.

What a policy sees (:class:`LearnerView`, computed once per request by :func:`learner_view`):
every catalogue item's predicted success (the active model's; for a concept-level model,
shifted by the item's difficulty estimated from the organisation's answers with shrinkage
(:mod:`tutor.catalogue`), so that the items of one concept are told apart), and per concept the
learner's status and reported mastery (:mod:`tutor.evidence`: only the learner's own answers
make a concept mastered), the model's estimate (for models that forget, at the time of the
request) and today's answers on it. The prerequisite gates and the designed curriculum are
computed once per catalogue and model (:func:`model_view`).

:func:`recommend` runs a policy for one learner: where nothing is open it relaxes the
prerequisite gates (and says so). An empty list comes with a ``note`` that says why.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session

from . import evidence as ev_mod
from .blocking import may_block
from .catalogue import Catalogue, catalogue, data_precedence_edges
from .clock import as_utc, utcnow
from .curriculum import design_curriculum
from .db import Interaction, Learner, Organisation
from .errors import Invalid, NotFound
from .evidence import EvidenceRule
from .policies import POLICIES, ItemPredictions, LearnerView, Picker
from .runtime import LoadedModel
from .service import active_model
from .settings import MASTERY_SCALES
from .states import current_state, last_answers, recent_items

#: weight of difficulty (harder concepts later) against the first-meeting position in the
#: precedence the curriculum designer is given
DIFFICULTY_WEIGHT = 1.0 / 3.0
#: weight of the organisation's teaching levels (concepts.level) against the data's precedence
LEVEL_WEIGHT = 10.0


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


def warm(session: Session) -> int:
    """Load what the first learner request of each organisation with an active model needs:
    its model (through :func:`tutor.service.active_model`, with the id mapping it was
    registered with), its catalogue and their view, and the model's reachable-mastery
    reference (:meth:`tutor.runtime.LoadedModel.mastery_reference`, which every mastery on
    the default scale reads: 110 ms for DKT over 500 concepts, paid by a worker's first
    learner request before). A worker runs it at start and ``/ready`` before it answers
    ready, so that no learner's request waits seconds for a catalogue build. Returns the
    number of active models loaded."""
    n = 0
    orgs = session.scalars(
        select(Organisation).where(Organisation.active_model_id.is_not(None))
    ).all()
    for org in orgs:
        model = active_model(session, org=org)
        if model is None:
            continue
        model_view(catalogue(session, org), model)
        model.mastery_reference()
        n += 1
    return n


def model_view(cat: Catalogue, model: LoadedModel) -> dict[str, Any]:
    """Per (catalogue, model): item and concept model indices, the prerequisite gates
    (organisation graph, else PSI-KT's learned one) and the curriculum, ordered by the gates,
    by the data's precedence (the order in which learners met the concepts) and by Singh et
    al.'s contrast and transfer terms over the model's concept vectors."""
    view = cat.per_model.get(model.model_id)
    if view is not None:
        return view
    may_block("designing the curriculum")
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
        "item_sig": None if model.sets.item_sig is None else model.sets.item_sig[item_idx],
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


@functools.lru_cache(maxsize=64)
def _recent_items_query(keep: int) -> Select:
    """The items of a learner's (bound ``learner``) last ``keep`` answers: built once per
    ``keep``, bound per request."""
    return last_answers(bindparam("learner"), keep).with_only_columns(Interaction.item_id)


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
    view = model_view(cat, model)
    state, row = current_state(session, learner=learner, model=model)
    now = as_utc(at) or utcnow()
    first = as_utc(learner.first_seen)
    t_now = model.time_value(now, first, learner.n_answers) if model.forgets and first else None
    # one prediction per concept set the model knows (per item for an item-aware model;
    # set 0 holds the items it was not trained on), read both per catalogue item and as
    # concept estimates
    p_sets = model.predict_sets(state, t_now)
    own = None
    if view["item_sig"] is None:  # the sets are nodes: items are predicted one by one

        def own(positions: np.ndarray) -> np.ndarray:
            return model.predict(state, view["item_idx"][positions], t_now)

    p_items = ItemPredictions(
        p_sets, view["item_sig"], cat.item_offset, shift=not view["item_aware"], own=own
    )
    full = model.mastery_from(p_sets)
    if scale == "reachable":
        full = model.scaled_mastery(full)
    cidx = view["concept_idx"]
    estimate = np.where(cidx > 0, full[cidx], np.nan)
    keep = max(int(recent_exclusion), 1)
    ids = recent_items(session, learner.id, keep)
    if ids is None:
        rows = session.connection().execute(_recent_items_query(keep), {"learner": learner.id})
        ids = rows.scalars().all()
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
