"""The tutoring policies a policy evaluation compares, and what the evaluation is set to.

:class:`EvalConfig` holds an evaluation's choices (policies, cohort sizes, budget, schedule,
the recommender's settings, tuning); :func:`parse_policy` reads a policy name;
:func:`make_cohort` draws the learners every policy meets; :func:`make_policy` builds the
object that chooses each learner's next item. Running the evaluation is
:mod:`tutor.experiments.policy_eval`; its outcomes are :mod:`tutor.experiments.policy_report`.

Policies (:func:`make_policy` names). Every policy the service has is one entry of its
registry (:data:`tutor.policies.POLICIES`), run here exactly as ``next-items`` runs it; only
two schedules that need the evaluation's own knowledge stay here:

* ``random``, ``skill-builder``, ``lowest-mastery``: the registry's baselines, run with the
  BKT model's view (``random``: an item at random; ``skill-builder``: ASSISTments' rule, the
  curriculum's concepts in turn until 3 correct in a row, the daily cap of 10 moving the
  learner on, items at random; ``lowest-mastery``: OATutor's heuristic, the unmastered concept
  with the lowest reported mastery, BKT's estimate read as predicted success);
* ``MODEL:POLICY`` with MODEL a model of :data:`kt_models.registry.MODELS` (by default dkt,
  cakt and psikt) and POLICY a registry name (target, review, curriculum, mixed, ...): the
  service's recommender (first recommended item), with the service's settings. A policy that
  recommends nothing (``review`` when nothing has decayed, every policy once every concept is
  mastered) is replaced by ``target`` for that question and the fallback counted;
* ``textbook`` (evaluation only: it needs the question budget): concepts in the textbook's
  order, ``ceil(N / C)`` questions per concept, the concept's items in catalogue order, then
  around again;
* ``hardest:MODEL`` (evaluation only): the item with the lowest predicted success (a
  deliberately bad policy, for the tests).

Session schedule (the same for every policy): sessions of ``session_length`` questions,
``answer_gap_s`` seconds apart; between sessions a log-normal gap with median
``session_gap_days`` days (clipped to 0.25-10 days), so that forgetting matters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from kt_models.registry import model_names, names_text

from ..evidence import EvidenceRule
from ..settings import POLICIES as POLICY_NAMES
from .simulate import SimWorld

BASELINES = ("random", "textbook", "skill-builder", "lowest-mastery")
#: the registry's policies (tutor.policies.POLICIES), names only (the registry imports the
#: service; this module is imported by the CLI before any database exists)
SERVICE_POLICIES = POLICY_NAMES
#: registry baselines run on their own (without a model prefix) read the BKT model's view
REGISTRY_BASELINES = ("random", "skill-builder", "lowest-mastery")
#: what ``tutor policy-eval`` runs by default: the baselines and our policies. ``review`` and
#: ``curriculum`` only with PSI-KT: for models that do not forget, review recommends nothing
#: (so it is the target policy) and mixed is exactly curriculum-then-target. CAKT, five times
#: slower to serve, runs its mixed policy only.
DEFAULT_POLICIES = (
    *BASELINES,
    "dkt:target",
    "dkt:mixed",
    "cakt:mixed",
    "psikt:target",
    "psikt:review",
    "psikt:curriculum",
    "psikt:mixed",
)


class PolicyEvalError(ValueError):
    """Bad evaluation input (unknown policy, empty budget...)."""


@dataclass
class EvalConfig:
    """What :func:`tutor.experiments.policy_eval.evaluate_setting` runs (see the module
    docstrings for the choices)."""

    policies: tuple[str, ...] = DEFAULT_POLICIES
    learners: int = 100  # per seed
    seeds: tuple[int, ...] = (0, 1)
    questions: int = 80
    session_length: int = 10
    session_gap_days: float = 2.0
    answer_gap_s: float = 45.0
    retention_days: float = 7.0
    mastery_threshold: float = 0.8  # true mastery counted as "mastered"
    world_seed: int = 0
    train_learners: int = 400
    epochs: int = 6
    train_seed: int = 1
    # the recommender's settings (the service's defaults)
    target: float = 0.7
    rec_mastery_threshold: float = 0.8
    mastery_scale: str = "reachable"
    review_threshold: float = 0.6
    recent_exclusion: int = 5
    #: models whose ``mixed`` policy gets tuned settings (mastery threshold, target) chosen on
    #: a separate tuning cohort (``tune_seed``, never an evaluation seed); empty: no tuning
    tune: tuple[str, ...] = ()
    tune_mastery: tuple[float, ...] = (0.5, 0.6, 0.7)
    tune_target: tuple[float, ...] = (0.5, 0.7)
    tune_learners: int = 30
    tune_seed: int = 1000

    def validate(self) -> None:
        for name in ("learners", "questions", "session_length", "train_learners", "epochs"):
            if getattr(self, name) < 1:
                raise PolicyEvalError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.seeds:
            raise PolicyEvalError("at least one seed is needed")
        if not self.policies:
            raise PolicyEvalError("at least one policy is needed")
        if self.session_gap_days <= 0 or self.answer_gap_s <= 0 or self.retention_days < 0:
            raise PolicyEvalError("gaps must be positive and retention_days non-negative")
        if not 0 < self.mastery_threshold < 1:
            raise PolicyEvalError("mastery_threshold must be in (0, 1)")
        from ..settings import MASTERY_SCALES

        if self.mastery_scale not in MASTERY_SCALES:
            raise PolicyEvalError(
                f"mastery_scale must be one of {', '.join(MASTERY_SCALES)}, "
                f"got {self.mastery_scale!r}"
            )
        for p in self.policies:
            parse_policy(p)
        for m in self.tune:
            check_model(m, "cannot tune")
        if self.tune and self.tune_seed in self.seeds:
            raise PolicyEvalError("the tuning seed must not be an evaluation seed")
        if self.tune and not (self.tune_mastery and self.tune_target and self.tune_learners > 0):
            raise PolicyEvalError("tuning needs mastery and target values and learners")
        for v in (*self.tune_mastery, *self.tune_target):
            if not 0 < v < 1:
                raise PolicyEvalError(f"tuning values must be in (0, 1), got {v}")

    def models_needed(self) -> list[str]:
        need = {"bkt"}  # baselines post answers with BKT active; lowest-mastery reads it
        for p in self.policies:
            kind, model, _ = parse_policy(p)
            if model:
                need.add(model)
        need.update(self.tune)
        return sorted(need)


def check_model(model: str, what: str) -> None:
    """Refuse a model name that is not in :data:`kt_models.registry.MODELS`, naming the known
    ones (``what`` says where the name came from)."""
    if model not in model_names():
        raise PolicyEvalError(f"{what}: unknown model {model!r}; expected one of {names_text()}")


def parse_policy(name: str) -> tuple[str, str | None, str | None]:
    """``(kind, model, registry policy)`` of a policy name; unknown names are refused."""
    if name == "textbook":
        return name, None, None
    if name in REGISTRY_BASELINES:
        return "baseline", "bkt", name
    if name.startswith("hardest:"):
        model = name.split(":", 1)[1]
        check_model(model, f"policy {name!r}")
        return "hardest", model, None
    if ":" in name:
        model, pol = name.split(":", 1)
        pol = pol.split("@", 1)[0]
        if model in model_names() and pol in SERVICE_POLICIES:
            policy_overrides(name)
            return "service", model, pol
    known = ", ".join([*BASELINES, "MODEL:POLICY", "hardest:MODEL"])
    raise PolicyEvalError(
        f"unknown policy {name!r}; expected one of {known} with MODEL in "
        f"{names_text()} and POLICY in {', '.join(SERVICE_POLICIES)}"
    )


def policy_overrides(name: str) -> dict[str, float]:
    """The recommender settings a policy name overrides: ``MODEL:POLICY@mastery=X,target=Y``
    (an organisation's ``mastery_threshold`` and ``target_success``)."""
    if "@" not in name:
        return {}
    out: dict[str, float] = {}
    for part in name.split("@", 1)[1].split(","):
        key, _, val = part.partition("=")
        if key not in ("mastery", "target"):
            raise PolicyEvalError(f"policy {name!r}: unknown setting {key!r} (mastery, target)")
        try:
            v = float(val)
        except ValueError as exc:
            raise PolicyEvalError(f"policy {name!r}: {key} must be a number") from exc
        if not 0 < v < 1:
            raise PolicyEvalError(f"policy {name!r}: {key} must be in (0, 1)")
        out[key] = v
    return out


# ---------------------------------------------------------------------- the cohort
@dataclass
class Cohort:
    """An evaluation cohort: learners of a world with their schedule and random numbers."""

    world: SimWorld
    seed: int
    times_ms: np.ndarray  # (L, N) when each question is answered
    uniforms: np.ndarray  # (L, N) the random number behind each answer
    choice_seeds: np.ndarray  # (L,) seeds of the randomised policies' choices


def make_cohort(world: SimWorld, cfg: EvalConfig, seed: int) -> Cohort:
    """The cohort of ``seed``: the same for every policy (see the module docstring)."""
    cw = world.cohort(cfg.learners, seed)
    rng = np.random.default_rng([world.seed, 2_000 + seed])
    L, N = cfg.learners, cfg.questions
    times = np.empty((L, N), dtype=np.int64)
    gap = int(cfg.answer_gap_s * 1000)
    for i in range(L):
        t = int(cw.start_ms[i])
        for k in range(N):
            if k and k % cfg.session_length == 0:
                days = math.exp(rng.normal(math.log(cfg.session_gap_days), 0.5))
                t += int(min(max(days, 0.25), 10.0) * 86_400_000)
            elif k:
                t += gap
            times[i, k] = t
    uniforms = rng.random((L, N))
    choice_seeds = rng.integers(0, 2**31 - 1, L)
    return Cohort(cw, seed, times, uniforms, choice_seeds)


# ---------------------------------------------------------------------- policies
@dataclass
class StepContext:
    """What a policy may look at when choosing: the service session, the organisation, the
    learner's database row, the time, and the learner's own past (items, answers)."""

    session: Any
    org: Any
    learner: Any
    at: datetime
    items: list[int]
    answers: list[int]


class Policy:
    """Chooses the next item (an index into the world's items) for one learner."""

    name: str = ""
    model: str | None = None

    def __init__(self, world: SimWorld, cfg: EvalConfig, seed: int) -> None:
        self.world, self.cfg = world, cfg
        self.rng = np.random.default_rng(seed)
        C = world.n_concepts
        self.concept_items = [np.flatnonzero(world.item_concepts[:, 0] == c) for c in range(C)]
        self.fallbacks = 0

    def choose(self, ctx: StepContext) -> int:
        raise NotImplementedError


class TextbookPolicy(Policy):
    name = "textbook"

    def choose(self, ctx: StepContext) -> int:
        C = self.world.n_concepts
        per = max(1, math.ceil(self.cfg.questions / C))
        k = len(ctx.items)
        c = (k // per) % C
        items = self.concept_items[c]
        return int(items[(k % per + (k // (per * C)) * per) % len(items)])


class ServicePolicy(Policy):
    """A policy reading the learner's state through :func:`tutor.recommend.learner_view`."""

    def __init__(self, world: SimWorld, cfg: EvalConfig, seed: int, name: str) -> None:
        super().__init__(world, cfg, seed)
        kind, model, service_policy = parse_policy(name)
        self.name, self.kind, self.model, self.service_policy = name, kind, model, service_policy

    def _view(self, ctx: StepContext):  # noqa: ANN202 - recommend.LearnerView
        from .. import recommend

        return recommend.learner_view(
            ctx.session,
            org=ctx.org,
            learner=ctx.learner,
            recent_exclusion=self.cfg.recent_exclusion,
            at=ctx.at,
            # OATutor's heuristic reads BKT's mastery as it is
            scale="success" if self.service_policy == "lowest-mastery" else self.cfg.mastery_scale,
            rule=EvidenceRule(
                mastery_threshold=policy_overrides(self.name).get(
                    "mastery", self.cfg.rec_mastery_threshold
                )
            ),
        )

    def choose(self, ctx: StepContext) -> int:
        from .. import recommend

        lv = self._view(ctx)
        if self.kind == "hardest":
            p = np.array(lv.p_items[np.arange(len(lv.p_items))], dtype=np.float64)
            if lv.recent and len(lv.recent) < len(p):
                p[list(lv.recent)] = np.inf
            return item_index(lv.cat.item_ext[int(np.argmin(p))])
        over = policy_overrides(self.name)
        kw = {
            "n": 1,
            "target": over.get("target", self.cfg.target),
            "review_threshold": self.cfg.review_threshold,
        }
        kw["seed"] = int(self.rng.integers(2**31))
        out = recommend.recommend(lv, policy=self.service_policy, **kw)
        if not out["items"]:
            self.fallbacks += 1
            out = recommend.recommend(lv, policy="target", **kw)
        return item_index(out["items"][0]["item_id"])


def item_id(i: int) -> str:
    """The catalogue id of the world's item ``i`` (``q<i+1>``)."""
    return f"q{i + 1}"


def item_index(external_id: str) -> int:
    """The world's item index of a catalogue id (the inverse of :func:`item_id`)."""
    return int(external_id[1:]) - 1


#: schedules that need the evaluation's own knowledge (the question budget); every other
#: policy is the service's registry
EVALUATION_ONLY: dict[str, type[Policy]] = {"textbook": TextbookPolicy}


def make_policy(name: str, world: SimWorld, cfg: EvalConfig, seed: int) -> Policy:
    """A fresh policy object for one learner (see the module docstring for the names)."""
    kind, _, _ = parse_policy(name)
    if kind in EVALUATION_ONLY:
        return EVALUATION_ONLY[kind](world, cfg, seed)
    return ServicePolicy(world, cfg, seed, name)
