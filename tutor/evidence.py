"""Mastery that rests on the learner's own answers: per-concept evidence and statuses.

A knowledge-tracing model's concept estimate is an *inference*: it moves when the learner
answers other concepts, it can fall after a correct answer (DKT's non-monotone updates,
Yeung & Yeung, "Addressing two problems in deep knowledge tracing via prediction-consistent
regularization", L@S 2018) and, on a concept with little or skewed data, it may never reach a
threshold however well the learner does. The service therefore keeps, per learner and concept,
the learner's own evidence, and reports and gates on an evidence-based mastery:

* **Evidence** (:class:`ConceptEvidence`): own answers and correct ones, the current run
  (``+k``: the last k correct, ``-k``: the last k wrong), the answers given today (UTC), and
  the evidence mastery ``p``.
* **Evidence mastery** ``p`` is a Bayesian Knowledge Tracing filter (Corbett & Anderson 1995)
  over the learner's own answers on the concept, with fixed, documented parameters
  (:data:`GUESS`, :data:`SLIP`, :data:`LEARN`). Its starting point is the model's estimate at
  the learner's first answer on the concept, clipped to ``[PRIOR_MIN, PRIOR_MAX]`` *(ours)*:
  the model's inference from other concepts decides where a learner starts, never that the
  concept is mastered. The update is monotone by construction *(ours: BKT's learning
  transition after a wrong answer can raise a low ``p``, so ``p`` after a wrong answer is
  capped at its value before, and after a correct one floored at it; at the first own answer
  "before" is the model's estimate the service reported, unclipped)*: a correct answer on the
  concept never lowers its reported mastery and a wrong one never raises it, whatever the
  model.
* **Status** (:func:`status`), in the words a teacher reads:

  - ``not_started``: no own answer, and no answer at all (the value shown is the model's
    prior for a new learner);
  - ``estimated``: no own answer on this concept; the value shown is the model's estimate from
    the learner's answers on other concepts (it ranks and guides, it never counts as mastered);
  - ``mastered``: at least ``min_answers`` own answers and evidence mastery at or above the
    mastery threshold (defaults: 3 and 0.8; from a low start that is three correct in a row,
    ASSISTments' skill-builder criterion);
  - ``struggling``: not mastered, and either the last ``struggle_run`` own answers wrong, or
    ``struggle_answers`` own answers without reaching mastery;
  - ``learning``: otherwise.

Only ``mastered`` counts as mastered anywhere in the service (prerequisite gates, curriculum
skips, recommendations, analytics). The per-day cap (``daily_cap`` answers on one concept per
UTC day, ASSISTments' skill-builder limit of 10 by default; 0 = no cap) moves a learner on.

The evidence is stored with the learner's model state (``learner_states.evidence``) as a
JSON object ``{concept external id: [n, n_correct, run, p, day, n_day]}`` and updated in the
same transaction as the answer; :func:`fold` is the only place that changes it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: BKT parameters of the evidence filter (fixed, per Corbett & Anderson's typical values)
GUESS = 0.2
SLIP = 0.1
LEARN = 0.15
#: the model's estimate at a first own answer is clipped to this range to start the filter
PRIOR_MIN = 0.1
PRIOR_MAX = 0.5

STATUSES = ("not_started", "estimated", "learning", "mastered", "struggling")


@dataclass(frozen=True)
class EvidenceRule:
    """When a concept counts as mastered or struggling, and the daily cap (see module doc)."""

    mastery_threshold: float = 0.8
    min_answers: int = 3
    struggle_run: int = 3
    struggle_answers: int = 8
    daily_cap: int = 10

    def __post_init__(self) -> None:
        if not 0 < self.mastery_threshold < 1:
            raise ValueError(f"mastery_threshold must lie in (0, 1), got {self.mastery_threshold}")
        for name in ("min_answers", "struggle_run", "struggle_answers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.daily_cap < 0:
            raise ValueError(f"daily_cap must be 0 (off) or more, got {self.daily_cap}")


@dataclass
class ConceptEvidence:
    """A learner's own answers on one concept."""

    n: int = 0
    n_correct: int = 0
    run: int = 0  # +k: last k correct; -k: last k wrong
    p: float = 0.0  # evidence mastery (meaningful once n > 0)
    day: str = ""  # UTC date of the last answer (ISO)
    n_day: int = 0  # answers on that day

    def to_json(self) -> list[Any]:
        return [self.n, self.n_correct, self.run, self.p, self.day, self.n_day]

    @classmethod
    def from_json(cls, raw: Any) -> ConceptEvidence:
        n, nc, run, p, day, n_day = raw
        return cls(int(n), int(nc), int(run), float(p), str(day), int(n_day))

    def answers_on(self, day: str) -> int:
        return self.n_day if self.day == day else 0


Evidence = dict[str, ConceptEvidence]


def load(raw: Mapping[str, Any] | None) -> Evidence:
    return {c: ConceptEvidence.from_json(v) for c, v in (raw or {}).items()}


def dump(ev: Evidence) -> dict[str, list[Any]]:
    return {c: e.to_json() for c, e in sorted(ev.items())}


def start(prior: float) -> float:
    """The filter's starting point from the model's estimate (rounded to 4 decimals, so that
    the answer path and a batched replay, whose float sums differ in the last bits, agree)."""
    if prior != prior:  # nan: the model does not know the concept
        prior = PRIOR_MIN
    return round(min(max(float(prior), PRIOR_MIN), PRIOR_MAX), 4)


def update(p: float, correct: bool) -> float:
    """One own answer through the evidence filter (monotone: see module doc)."""
    if correct:
        post = p * (1 - SLIP) / (p * (1 - SLIP) + (1 - p) * GUESS)
        return max(p, post + (1 - post) * LEARN)
    post = p * SLIP / (p * SLIP + (1 - p) * (1 - GUESS))
    return min(p, post + (1 - post) * LEARN)


def fold(
    ev: Evidence,
    concepts: Iterable[str],
    correct: bool,
    when: datetime,
    priors: Mapping[str, float] | None = None,
    shown: Mapping[str, tuple[float, float]] | None = None,
) -> Evidence:
    """Fold one answer on an item of ``concepts`` into ``ev`` (in place; returned).

    ``priors`` gives the model's estimate (before this answer, on the reachable scale) for
    concepts without evidence yet; a concept missing from it starts at :data:`PRIOR_MIN`.
    ``shown`` gives, for those concepts, the lowest and highest value ``GET /mastery`` could
    have reported just before (its estimate on either mastery scale; default: the prior): the
    first own answer is bounded by them, so that it too moves reported mastery the right way
    whatever scale the organisation reads.
    """
    day = when.date().isoformat()
    for c in concepts:
        e = ev.get(c)
        bound = None  # (low, high) of what was reported before a first own answer
        if e is None:
            raw = (priors or {}).get(c, PRIOR_MIN)
            e = ev[c] = ConceptEvidence(p=start(raw))
            bound = (shown or {}).get(c)
            if bound is None and raw == raw:
                bound = (float(raw), float(raw))
            if bound is not None and not all(math.isfinite(x) for x in bound):
                bound = None
        e.n += 1
        e.n_correct += int(bool(correct))
        if correct:
            e.run = e.run + 1 if e.run > 0 else 1
        else:
            e.run = e.run - 1 if e.run < 0 else -1
        e.p = update(e.p, bool(correct))
        if bound is not None:  # monotone against the estimate reported just before, too
            # (to 4 decimals, rounded away from the wrong way: the answer path and a batched
            # replay compute the estimate with float sums that differ in the last bits)
            if correct:
                e.p = max(e.p, math.ceil(bound[1] * 1e4) / 1e4)
            else:
                e.p = min(e.p, math.floor(bound[0] * 1e4) / 1e4)
        e.n_day = e.n_day + 1 if e.day == day else 1
        e.day = day
    return ev


def needs_prior(ev: Evidence, concepts: Iterable[str]) -> list[str]:
    """The concepts of an answer that have no evidence yet (their prior must be read)."""
    return [c for c in concepts if c not in ev]


def is_mastered(e: ConceptEvidence | None, rule: EvidenceRule) -> bool:
    return e is not None and e.n >= rule.min_answers and e.p >= rule.mastery_threshold


def is_struggling(e: ConceptEvidence | None, rule: EvidenceRule) -> bool:
    if e is None or e.n == 0 or is_mastered(e, rule):
        return False
    return -e.run >= rule.struggle_run or e.n >= rule.struggle_answers


def status(e: ConceptEvidence | None, rule: EvidenceRule, *, any_answers: bool) -> str:
    if e is None or e.n == 0:
        return "estimated" if any_answers else "not_started"
    if is_mastered(e, rule):
        return "mastered"
    if is_struggling(e, rule):
        return "struggling"
    return "learning"


def capped(e: ConceptEvidence | None, rule: EvidenceRule, today: str) -> bool:
    """The concept reached today's cap of own answers."""
    return bool(rule.daily_cap) and e is not None and e.answers_on(today) >= rule.daily_cap


def basis(e: ConceptEvidence | None, rule: EvidenceRule, *, any_answers: bool) -> str:
    """What a concept's reported mastery rests on, in a teacher's words."""
    if e is None or e.n == 0:
        if any_answers:
            return "no answers on this concept yet: estimated from answers on other concepts"
        return "no answers yet: the model's estimate for a new learner"
    text = f"{e.n_correct} of {e.n} own answers correct"
    if e.run > 1:
        text += f", the last {e.run} correct"
    elif e.run < -1:
        text += f", the last {-e.run} wrong"
    if is_mastered(e, rule):
        return text + f"; mastered (evidence {e.p:.2f} >= {rule.mastery_threshold:.2f})"
    if is_struggling(e, rule):
        if -e.run >= rule.struggle_run:
            return text + "; struggling"
        return text + f"; no mastery after {e.n} questions"
    need = max(rule.min_answers - e.n, 0)
    if need and e.p >= rule.mastery_threshold:
        return text + f"; {need} more correct to confirm mastery"
    return text
