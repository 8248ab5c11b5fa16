"""The recommendation policies: one registry (:data:`POLICIES`; :func:`register` adds one),
what a policy looks at (:class:`LearnerView`, one learner's, built by
:func:`tutor.recommend.learner_view`) and the :class:`Picker` a policy picks items with (what
is picked so far, what is allowed, and why an empty list is empty).

Rules every policy but ``random`` follows: a concept counts as mastered only with its
``mastered`` status;
items whose concepts have an unmastered prerequisite (organisation graph, else PSI-KT's learned
one) are skipped (relaxed, and said so, when nothing else is left); concepts that reached today's
cap of questions are skipped; items answered in the last ``recent_exclusion`` answers are
skipped. Policies:

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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import evidence as ev_mod
from .catalogue import Catalogue, logit
from .evidence import EvidenceRule
from .runtime import LoadedModel


class ItemPredictions:
    """A learner's predicted success on the catalogue's items, computed for the items asked
    (a policy looks at a few concepts' items, never scores the whole catalogue): from the
    model's prediction per concept set, shifted by each item's logit offset against its
    concept's success rate for a model that does not tell items apart (``shift``).
    Indexed like the ``[I]`` array it stands for: by an item position or an array of them.
    Where the model's sets are nodes (``item_sig`` None, see ``tutor.runtime.ConceptSets``),
    ``own(positions)`` predicts the items themselves, each once per request."""

    def __init__(
        self,
        p_sets: np.ndarray,
        item_sig: np.ndarray | None,
        offset: np.ndarray,
        *,
        shift: bool,
        own: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        if item_sig is None and own is None:
            raise ValueError("items without a signature need their own predictions (own)")
        self.p_sets, self.item_sig, self.offset, self.shift = p_sets, item_sig, offset, shift
        self.own = own
        #: the items' own predictions so far (nan: not yet asked), and their positions (to
        #: resolve any index of the [I] array: a position, positions, a mask, a slice)
        self._own = np.full(len(offset), np.nan) if item_sig is None else None
        self._positions = np.arange(len(offset)) if item_sig is None else None

    def __len__(self) -> int:
        return len(self.offset) if self.item_sig is None else len(self.item_sig)

    def __getitem__(self, positions: Any) -> Any:
        if self._own is not None:
            assert self.own is not None and self._positions is not None
            idx = self._positions[positions]
            want = np.unique(np.asarray(idx, dtype=np.int64).reshape(-1))
            new = want[np.isnan(self._own[want])]
            if len(new):
                self._own[new] = self.own(new)
            p = self._own[idx]
            positions = idx
        else:
            p = np.asarray(self.p_sets[self.item_sig[positions]], dtype=np.float64)
        if self.shift:
            p = 1.0 / (1.0 + np.exp(-(logit(p) + self.offset[positions])))
        return p

    def full(self) -> np.ndarray:
        """Every item's prediction ``[I]``."""
        return self[np.arange(len(self))]


@dataclass
class LearnerView:
    """Everything a policy looks at for one learner (computed once per request)."""

    cat: Catalogue
    view: dict[str, Any]
    model: LoadedModel
    p_items: ItemPredictions | np.ndarray  # [I] predicted success now (item difficulty in)
    estimate: np.ndarray  # [C] the model's concept estimate now (nan: unknown concept)
    evidence: ev_mod.Evidence  # the learner's own evidence, by concept external id
    rule: EvidenceRule
    today: str  # UTC date of the request (the daily cap counts answers on it)
    recent: list[int]  # item positions answered recently, the latest first
    any_answers: bool
    exclude_recent: bool = True  # skip the recent items (recent_exclusion > 0)

    def __post_init__(self) -> None:
        # every concept starts as one without own answers (the model's estimate; neither
        # mastered, struggling nor capped); then the concepts the learner answered
        c = len(self.cat.concept_ext)
        self.n_own = np.zeros(c, dtype=np.int64)
        self.mastered = np.zeros(c, dtype=bool)
        self.struggling = np.zeros(c, dtype=bool)
        self.capped = np.zeros(c, dtype=bool)
        self.mastery = np.array(self.estimate, dtype=np.float64).reshape(c)
        pos = self.cat.concept_pos
        for ext, e in self.evidence.items():
            k = pos.get(ext)
            if k is None or not e.n:
                continue
            self.n_own[k] = e.n
            self.mastered[k] = ev_mod.is_mastered(e, self.rule)
            self.struggling[k] = ev_mod.is_struggling(e, self.rule)
            self.capped[k] = ev_mod.capped(e, self.rule, self.today)
            self.mastery[k] = e.p

    def status(self, pos: int) -> str:
        e = self.evidence.get(self.cat.concept_ext[pos])
        return ev_mod.status(e, self.rule, any_answers=self.any_answers)

    def basis(self, pos: int) -> str:
        e = self.evidence.get(self.cat.concept_ext[pos])
        return ev_mod.basis(e, self.rule, any_answers=self.any_answers)


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
        # an item with a concept not open (the closed concepts' items: no catalogue scan)
        self.closed = np.zeros(n_items, dtype=bool)
        self.closed[cat.items_of_many(np.flatnonzero(~self.open))] = True
        self.eligible = self.fresh & ~self.closed
        # an item with a concept that had today's questions and is not mastered (a mastered
        # concept's cap holds its own items back, not those it shares with other concepts)
        self.capped_items = np.zeros(n_items, dtype=bool)
        self.capped_items[cat.items_of_many(np.flatnonzero(lv.capped & ~lv.mastered))] = True
        #: fresh items whatever the prerequisites of their other concepts, today's cap holding
        #: (the second tier of :meth:`take_concept`; the eligible items are among them)
        self.fresh_uncapped = self.fresh & ~self.capped_items
        self.relaxed = False
        self.notes: list[str] = []
        #: (concept, why) when a struggling concept had nothing to step back to
        self.moved_on_from: tuple[int, str] | None = None
        #: the concept being worked on, left for now because every one of its questions was
        #: answered within the recent window (it comes back once they are no longer recent)
        self.spaced_from: int | None = None

    @property
    def room(self) -> int:
        return self.n - len(self.picked)

    def items_of(self, concept: int) -> np.ndarray:
        return self.lv.cat.items_of(concept)

    def has_open_items(self, concept: int) -> bool:
        """Whether the concept has items (it is open itself: see :meth:`take_concept`)."""
        return bool(len(self.items_of(concept)))

    def has_fresh_items(self, concept: int) -> bool:
        """Whether :meth:`take_concept` would find a question of the concept not answered
        within the recent window (its first two tiers), rather than repeat one. Always, for a
        catalogue whose items are its concepts (:attr:`Catalogue.items_are_concepts`): an
        item answered again there is another question of the skill."""
        items = self.items_of(concept)
        if self.lv.cat.items_are_concepts:
            return bool(len(items))
        return bool((self.fresh_uncapped[items] & ~self.taken[items]).any())

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
            got += self.take(items, rule, why, limit - got, order=order, allow=self.fresh_uncapped)
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
    name: str, description: str | None = None
) -> Callable[[Callable[[Picker], None]], Callable[[Picker], None]]:
    """Add a policy to the registry (used by ``next-items``, settings and policy-eval). Its
    description is ``description``, else the function's docstring on one line."""

    def deco(fn: Callable[[Picker], None]) -> Callable[[Picker], None]:
        if name in POLICIES:
            raise ValueError(f"policy {name!r} is registered twice")
        text = " ".join((fn.__doc__ or "").split()) if description is None else description
        POLICIES[name] = Policy(name, text, fn)
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
    elif pk.spaced_from is not None:
        gone = pk.spaced_from
        n = len(pk.items_of(gone))
        qs = "its only question was" if n == 1 else f"all {n} of its questions were"
        before = (
            f"Back to {lv.cat.name(gone)} later: {qs} answered within the last "
            f"{len(lv.recent)} answers. "
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
    """The next concepts in curriculum order, those with a question not answered within the
    recent window first (a concept whose questions were all just answered comes after them,
    so that a learner never gets one back to back while another concept is open)."""
    start = len(pk.picked)
    later: list[int] = []  # concepts whose questions were all just answered, skipped so far

    def full() -> bool:
        return pk.room <= 0 or len(pk.picked) - start >= limit

    for c in _next_concepts(pk, exclude):  # looked at only until the list is full
        if full():
            break
        if not pk.has_fresh_items(c):
            later.append(c)
            continue
        if later and len(pk.picked) == start and pk.spaced_from is None and not pk.moved_on_from:
            pk.spaced_from = later[0]  # the reason says why the curriculum skips it now
        pk.take_concept(
            c, "curriculum", _curriculum_reason(pk, c), limit - (len(pk.picked) - start)
        )
    for c in later:
        if full():
            break
        pk.take_concept(
            c, "curriculum", _curriculum_reason(pk, c), limit - (len(pk.picked) - start)
        )
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


@register("mixed")
def _mixed(pk: Picker) -> None:
    """review a decayed concept, stay on the current concept until mastered (stepping back when
    struggling; leaving it for later when all its questions were answered recently), then the
    curriculum's next concept, then the target rule"""
    lv = pk.lv
    if lv.model.forgets:
        _review(pk, 1)
        pk.notes.clear()
    focus = _focus(pk)
    if focus is not None:
        if lv.struggling[focus]:
            _step_back(pk, focus)
        elif not pk.has_fresh_items(focus) and any(
            pk.has_fresh_items(c) for c in _next_concepts(pk, {focus})
        ):
            # every question of the concept was just answered: repeating one back to back
            # is no evidence of mastery; the next concept now, this one again once its
            # questions have left the recent window (never stuck: with nothing else fresh,
            # the learner stays and the least recent question comes back)
            pk.spaced_from = focus
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


@register("target")
def _target_policy(pk: Picker) -> None:
    """the items whose predicted success is closest to the target"""
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


@register("review")
def _review_policy(pk: Picker) -> None:
    """concepts whose predicted mastery has decayed since the last answer"""
    _review(pk, pk.n)


@register("curriculum")
def _curriculum_policy(pk: Picker) -> None:
    """items of the next concept of the designed curriculum"""
    _curriculum(pk, pk.n)


@register("skill-builder")
def _skill_builder(pk: Picker) -> None:
    """ASSISTments' rule: the curriculum's concepts in turn until 3 correct in a row (or the
    daily cap), items at random"""
    lv = pk.lv
    runs = [e.run if e is not None else 0 for e in map(lv.evidence.get, lv.cat.concept_ext)]
    todo = (
        c
        for c in lv.view["curriculum_pos"]
        if runs[c] < 3 and not lv.capped[c] and pk.has_open_items(c)
    )
    _in_turn(
        pk,
        todo,
        "skill-builder",
        lambda c: f"Skill builder {lv.cat.name(c)}: until 3 correct in a row.",
    )


@register("lowest-mastery")
def _lowest_mastery(pk: Picker) -> None:
    """OATutor's heuristic: the unmastered concept with the lowest reported mastery"""
    lv = pk.lv
    m = np.nan_to_num(lv.mastery, nan=0.0)
    todo = (
        c
        for c in np.argsort(m, kind="stable")
        if not lv.mastered[c] and pk.open[c] and pk.has_open_items(int(c))
    )
    _in_turn(
        pk, todo, "lowest-mastery", lambda c: f"Lowest mastery: {lv.cat.name(c)} at {m[c]:.2f}."
    )


def _in_turn(pk: Picker, concepts: Iterable[Any], rule: str, why: Callable[[Any], str]) -> None:
    """The items of ``concepts``, one concept after another, at random, until the list is full;
    ``why(c)`` says why concept c's items were picked."""
    for c in concepts:
        pk.take_concept(int(c), rule, lambda p, c=c: why(c), pk.room, order="random")
        if pk.room <= 0:
            return


@register("random")
def _random(pk: Picker) -> None:
    """items drawn at random from the catalogue"""
    pk.take(
        np.arange(len(pk.taken)),
        "random",
        lambda p: "Drawn at random.",
        pk.room,
        order="random",
        allow=pk.fresh,  # the baseline of no tutoring: no gates, no cap (only recency)
    )
