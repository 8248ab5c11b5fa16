"""Policy evaluation on simulated learners: do the recommendations teach?

For one simulator setting (:mod:`tutor.simulate`), :func:`evaluate_setting`

1. draws the world (graph, items) and a *training* population, generates its log under the
   world's default app policy and trains the models (DKT, CAKT, PSI-KT and BKT, small and few
   epochs, CPU) on it;
2. builds the service in-process: a temporary SQLite database with an organisation, the
   world's items, concepts and true prerequisite graph (``tutor.operations``), every model
   registered;
3. for each policy and each seed, draws an *evaluation cohort* of new learners of the same
   world (the same cohort for every policy: same seed, same learners, same session times and
   the same random numbers behind their answers, so the comparison is paired), and lets the
   policy choose each of ``questions`` items for each learner. Every answer is posted through
   :func:`tutor.service.record_answers`; the model-based policies read the learner's state
   through :func:`tutor.recommend.learner_view` and choose with :func:`tutor.recommend.recommend`
   (the code behind ``POST /v1/answers`` and ``GET /v1/learners/{id}/next-items``);
4. measures the learners' *true* mastery (hidden from every policy) and reports, with 95%
   confidence intervals over learners and seeds: mean true mastery after N questions,
   questions until every concept is mastered (share within the budget), retention a week after
   the last question, and the success rate learners experienced.

:func:`http_check` runs a few learners through the HTTP API (FastAPI's TestClient, an API
key, ``POST /v1/answers`` and ``GET /v1/learners/{id}/next-items``) and the same learners
in-process, and counts identical choices: the evaluation's path is the API's path.

Policies (:func:`make_policy` names). Every policy the service has is one entry of its
registry (:data:`tutor.recommend.POLICIES`), run here exactly as ``next-items`` runs it; only
two schedules that need the evaluation's own knowledge stay here:

* ``random``, ``skill-builder``, ``lowest-mastery``: the registry's baselines, run with the
  BKT model's view (``random``: an item at random; ``skill-builder``: ASSISTments' rule, the
  curriculum's concepts in turn until 3 correct in a row, the daily cap of 10 moving the
  learner on, items at random; ``lowest-mastery``: OATutor's heuristic, the unmastered concept
  with the lowest reported mastery, BKT's estimate read as predicted success);
* ``MODEL:POLICY`` with MODEL in dkt, cakt, psikt and POLICY a registry name (target, review,
  curriculum, mixed, ...): the service's recommender (first recommended item), with the
  service's settings. A policy that recommends nothing (``review`` when nothing has decayed,
  every policy once every concept is mastered) is replaced by ``target`` for that question and
  the fallback counted;
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
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .evidence import EvidenceRule
from .settings import POLICIES as POLICY_NAMES
from .simulate import SimLearner, SimulationError, SimWorld, WorldSetting, make_world, write_dataset

BASELINES = ("random", "textbook", "skill-builder", "lowest-mastery")
#: the registry's policies (tutor.recommend.POLICIES), names only (the registry imports the
#: service; this module is imported by the CLI before any database exists)
SERVICE_POLICIES = POLICY_NAMES
#: registry baselines run on their own (without a model prefix) read the BKT model's view
REGISTRY_BASELINES = ("random", "skill-builder", "lowest-mastery")
MODELS = ("dkt", "cakt", "psikt")
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
#: small models trained for a few epochs on CPU (the evaluation is about policies)
MODEL_OPTIONS: dict[str, dict[str, Any]] = {
    "dkt": {"emb_dim": 32, "hidden": 64, "dropout": 0.2},
    "cakt": {"hidden": 64},
    "psikt": {},
    "bkt": {},
}
#: training options per model: the settings the documented results (docs/policy_eval) were
#: made with, kept when the models' defaults for the ASSISTments-sized benchmarks changed
#: (DKT: lr 2e-3 and no weight decay; CAKT: no weight decay)
TRAIN_OPTIONS: dict[str, dict[str, Any]] = {
    "dkt": {"lr": 2e-3, "weight_decay": 0.0},
    "cakt": {"weight_decay": 0.0},
}
ORG = "sim"


class PolicyEvalError(ValueError):
    """Bad evaluation input (unknown policy, empty budget...)."""


@dataclass
class EvalConfig:
    """What :func:`evaluate_setting` runs (see the module docstring for the choices)."""

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
        from .settings import MASTERY_SCALES

        if self.mastery_scale not in MASTERY_SCALES:
            raise PolicyEvalError(
                f"mastery_scale must be one of {', '.join(MASTERY_SCALES)}, "
                f"got {self.mastery_scale!r}"
            )
        for p in self.policies:
            parse_policy(p)
        for m in self.tune:
            if m not in MODELS:
                raise PolicyEvalError(f"cannot tune {m!r}: expected one of {', '.join(MODELS)}")
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


def parse_policy(name: str) -> tuple[str, str | None, str | None]:
    """``(kind, model, registry policy)`` of a policy name; unknown names are refused."""
    if name == "textbook":
        return name, None, None
    if name in REGISTRY_BASELINES:
        return "baseline", "bkt", name
    if name.startswith("hardest:"):
        model = name.split(":", 1)[1]
        if model not in (*MODELS, "bkt"):
            raise PolicyEvalError(f"policy {name!r}: unknown model {model!r}")
        return "hardest", model, None
    if ":" in name:
        model, pol = name.split(":", 1)
        pol = pol.split("@", 1)[0]
        if model in MODELS and pol in SERVICE_POLICIES:
            policy_overrides(name)
            return "service", model, pol
    known = ", ".join([*BASELINES, "MODEL:POLICY", "hardest:MODEL"])
    raise PolicyEvalError(
        f"unknown policy {name!r}; expected one of {known} with MODEL in "
        f"{', '.join(MODELS)} and POLICY in {', '.join(SERVICE_POLICIES)}"
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
        from . import recommend

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
        from . import recommend

        lv = self._view(ctx)
        if self.kind == "hardest":
            p = lv.p_items.copy()
            if lv.recent and len(lv.recent) < len(p):
                p[list(lv.recent)] = np.inf
            return _item_index(lv.cat.item_ext[int(np.argmin(p))])
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
        return _item_index(out["items"][0]["item_id"])


def _item_index(external_id: str) -> int:
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


# ---------------------------------------------------------------------- the service
@dataclass
class ServiceWorld:
    """The in-process service of one evaluation: a SQLite database holding the world's
    catalogue and prerequisite graph, with every trained model registered."""

    url: str
    factory: Any
    engine: Any
    model_ids: dict[str, int]

    def close(self) -> None:
        self.engine.dispose()


def item_id(i: int) -> str:
    return f"q{i + 1}"


def build_service(world: SimWorld, runs: dict[str, Path], db_path: Path) -> ServiceWorld:
    """Create the database, import the world's catalogue (items named ``q<i+1>``, concepts
    ``0..C-1`` with the true prerequisite graph) and register ``runs`` (model -> run dir)."""
    from . import operations as ops
    from .db import Base, create_db_engine, make_sessionmaker
    from .recommend import _CACHE
    from .service import MODELS as MODEL_CACHE

    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{db_path}"
    engine = create_db_engine(url)
    Base.metadata.create_all(engine)
    factory = make_sessionmaker(engine)
    MODEL_CACHE.clear()
    _CACHE.clear()
    ids: dict[str, int] = {}
    with factory() as s, s.begin():
        org = ops.create_org(s, slug=ORG, name="simulated learners")
        ops.upsert_concepts(
            s, org=org, concepts=[(str(c), f"concept {c}") for c in range(world.n_concepts)]
        )
        items = []
        for i in range(world.n_items):
            cs = [str(int(c)) for c in world.item_concepts[i] if c >= 0]
            items.append((item_id(i), cs, {}))
        ops.upsert_items(s, org=org, items=items)
        ops.set_prerequisites(s, org=org, edges=[(str(a), str(b)) for a, b in world.prerequisites])
        for name, run in sorted(runs.items()):
            ids[name] = ops.register_model(s, org=org, run_dir=run, label=name).id
    return ServiceWorld(url, factory, engine, ids)


# ---------------------------------------------------------------------- running
@dataclass
class PolicyRun:
    """Per-learner outcomes of one policy on one cohort."""

    policy: str
    seed: int
    curve: np.ndarray  # (L, N) mean true mastery after each question
    all_mastered: np.ndarray  # (L, N) bool: every concept mastered after each question
    final: np.ndarray  # (L,) mean true mastery after the last question
    retention: np.ndarray  # (L,) a week (retention_days) later
    success: np.ndarray  # (L,) share of correct answers
    questions_to_all: np.ndarray  # (L,) first question count with all mastered, or nan
    choices: np.ndarray  # (L, N) items chosen
    fallbacks: int = 0
    seconds: float = 0.0


def _ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC)


def run_policy(
    svc: ServiceWorld,
    cohort: Cohort,
    policy: str,
    cfg: EvalConfig,
    *,
    progress: Callable[[int], None] | None = None,
) -> PolicyRun:
    """Run ``policy`` on every learner of ``cohort`` through the in-process service.

    Questions are asked round by round (every learner's k-th question, then the (k+1)-th), one
    database transaction per round, with all of the round's answers posted in one
    ``record_answers`` call (as a client batching answers would).
    """
    from sqlalchemy import select

    from . import operations as ops
    from . import service
    from .db import Learner

    _, model, _ = parse_policy(policy)
    world = cohort.world
    L, N = cohort.times_ms.shape
    state = world.initial_state()
    sims = [
        SimLearner(world, state, i, np.random.default_rng(0), cohort.uniforms[i]) for i in range(L)
    ]
    pols = [make_policy(policy, world, cfg, int(cohort.choice_seeds[i])) for i in range(L)]
    ext = [f"{policy}|s{cohort.seed}|{i}" for i in range(L)]
    with svc.factory() as s, s.begin():
        org = ops.get_org(s, ORG)
        ops.activate_model(s, org=org, model_id=svc.model_ids[model or "bkt"])
        have = set(s.scalars(select(Learner.external_id).where(Learner.org_id == org.id)))
        for e in ext:
            if e in have:
                raise PolicyEvalError(f"learner {e!r} already ran (run each policy once)")
            s.add(Learner(org_id=org.id, external_id=e, n_answers=0))
    items_hist: list[list[int]] = [[] for _ in range(L)]
    ans_hist: list[list[int]] = [[] for _ in range(L)]
    curve = np.zeros((L, N))
    allm = np.zeros((L, N), dtype=bool)
    choices = np.zeros((L, N), dtype=np.int64)
    t0 = time.perf_counter()
    for k in range(N):
        with svc.factory() as s, s.begin():
            org = ops.get_org(s, ORG)
            rows = {
                r.external_id: r
                for r in s.scalars(
                    select(Learner).where(Learner.org_id == org.id, Learner.external_id.in_(ext))
                )
            }
            batch = []
            for i in range(L):
                at_ms = int(cohort.times_ms[i, k])
                at = _ms_to_dt(at_ms)
                ctx = StepContext(s, org, rows[ext[i]], at, items_hist[i], ans_hist[i])
                item = pols[i].choose(ctx)
                correct = sims[i].answer(item, at_ms)
                items_hist[i].append(item)
                ans_hist[i].append(correct)
                choices[i, k] = item
                m = sims[i].true_mastery(at_ms)
                curve[i, k] = m.mean()
                allm[i, k] = bool((m >= cfg.mastery_threshold).all())
                batch.append(
                    service.AnswerIn(
                        event_id=f"{ext[i]}|{k}",
                        learner_id=ext[i],
                        item_id=item_id(item),
                        correct=correct,
                        timestamp=at,
                        source="simulation",
                    )
                )
            service.record_answers(s, org=org, answers=batch)
        if progress is not None:
            progress(L)
    last = cohort.times_ms[:, -1]
    later = last + int(cfg.retention_days * 86_400_000)
    retention = np.array([sims[i].true_mastery(int(later[i])).mean() for i in range(L)])
    first_all = np.where(allm.any(axis=1), allm.argmax(axis=1) + 1.0, np.nan)
    return PolicyRun(
        policy=policy,
        seed=cohort.seed,
        curve=curve,
        all_mastered=allm,
        final=curve[:, -1].copy(),
        retention=retention,
        success=np.array([np.mean(a) for a in ans_hist]),
        questions_to_all=first_all,
        choices=choices,
        fallbacks=sum(p.fallbacks for p in pols),
        seconds=time.perf_counter() - t0,
    )


# ---------------------------------------------------------------------- statistics
def mean_ci(x: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the normal-approximation confidence interval of the mean
    (``x`` pools learners over seeds; every learner is an independent draw)."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    z = {0.95: 1.959964}.get(level, 1.959964)
    half = z * x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else float("nan")
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


def share_ci(flags: np.ndarray) -> tuple[float, float, float]:
    """(share, low, high): Wilson's 95% interval of a proportion."""
    n = len(flags)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    p, z = float(np.mean(flags)), 1.959964
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return p, centre - half, centre + half


@dataclass
class PolicySummary:
    policy: str
    final: tuple[float, float, float]
    retention: tuple[float, float, float]
    success: tuple[float, float, float]
    share_all_mastered: tuple[float, float, float]
    questions_to_all: tuple[float, float, float]  # among learners who mastered everything
    curve_mean: list[float]
    curve_all_mastered: list[float]
    n_learners: int
    fallbacks: int
    seconds: float


def summarise(runs: list[PolicyRun]) -> PolicySummary:
    """Pool one policy's runs over seeds."""
    final = np.concatenate([r.final for r in runs])
    qta = np.concatenate([r.questions_to_all for r in runs])
    curve = np.concatenate([r.curve for r in runs])
    allm = np.concatenate([r.all_mastered for r in runs])
    return PolicySummary(
        policy=runs[0].policy,
        final=mean_ci(final),
        retention=mean_ci(np.concatenate([r.retention for r in runs])),
        success=mean_ci(np.concatenate([r.success for r in runs])),
        share_all_mastered=share_ci(np.isfinite(qta)),
        questions_to_all=mean_ci(qta),
        curve_mean=curve.mean(axis=0).tolist(),
        curve_all_mastered=allm.mean(axis=0).tolist(),
        n_learners=len(final),
        fallbacks=sum(r.fallbacks for r in runs),
        seconds=sum(r.seconds for r in runs),
    )


def paired_difference(a: list[PolicyRun], b: list[PolicyRun]) -> tuple[float, float, float]:
    """Mean and 95% CI of (a - b) final true mastery over the same learners (paired)."""
    da = np.concatenate([r.final for r in sorted(a, key=lambda r: r.seed)])
    db = np.concatenate([r.final for r in sorted(b, key=lambda r: r.seed)])
    return mean_ci(da - db)


# ---------------------------------------------------------------------- training
def train_models(
    world: SimWorld,
    models: list[str],
    workdir: Path,
    cfg: EvalConfig,
    *,
    log: Callable[[str], None] = print,
    progress: bool = False,
) -> dict[str, Path]:
    """Generate the training log (the world's own learners under its default app policy),
    write it as a canonical dataset and train each model (few epochs, one CPU thread)."""
    from kt_models.train import TrainConfig, train

    data = workdir / "train-data"
    counts = write_dataset(world, world.generate(), data, overwrite=True)
    log(f"training log: {counts.get('interactions', 0):,} answers of {world.n_learners} learners")
    runs: dict[str, Path] = {}
    for name in models:
        run = workdir / f"run-{name}"
        t = time.perf_counter()
        res = train(
            name,
            data,
            run,
            config=TrainConfig(
                epochs=cfg.epochs,
                patience=cfg.epochs,
                threads=1,
                seed=cfg.train_seed,
                **TRAIN_OPTIONS.get(name, {}),
            ),
            model_overrides=MODEL_OPTIONS.get(name, {}),
            progress=progress,
            log=lambda m: None,
        )
        log(f"trained {name} in {time.perf_counter() - t:.0f} s ({len(res['epochs'])} epochs)")
        runs[name] = run
    return runs


# ---------------------------------------------------------------------- one setting
@dataclass
class SettingResult:
    setting: WorldSetting
    config: EvalConfig
    summaries: dict[str, PolicySummary]
    runs: dict[str, list[PolicyRun]] = field(repr=False, default_factory=dict)
    model_auc: dict[str, float] = field(default_factory=dict)
    http: dict[str, Any] | None = None
    #: tuning cohort results: policy name -> mean final true mastery
    tuning: dict[str, float] = field(default_factory=dict)

    def best_ours(self) -> str | None:
        ours = [p for p in self.summaries if parse_policy(p)[0] == "service"]
        return max(ours, key=lambda p: self.summaries[p].final[0]) if ours else None

    def verdict(self) -> list[dict[str, Any]]:
        """Our best policy against each baseline: CIs overlap or not, and the paired gap."""
        best = self.best_ours()
        out: list[dict[str, Any]] = []
        if best is None:
            return out
        b = self.summaries[best].final
        for base in ("skill-builder", "lowest-mastery", "random", "textbook"):
            if base not in self.summaries:
                continue
            o = self.summaries[base].final
            diff = paired_difference(self.runs[best], self.runs[base])
            out.append(
                {
                    "best": best,
                    "baseline": base,
                    "best_final": b,
                    "baseline_final": o,
                    "non_overlapping_win": bool(b[1] > o[2]),
                    "paired_difference": diff,
                }
            )
        return out


def evaluate_setting(
    setting: WorldSetting,
    cfg: EvalConfig,
    workdir: Path | None = None,
    *,
    runs: dict[str, Path] | None = None,
    log: Callable[[str], None] = print,
    bar: Callable[[str, int], Any] | None = None,
    http_learners: int = 0,
) -> SettingResult:
    """Train (unless ``runs`` are given), build the service and run every policy on every
    seed's cohort; ``http_learners`` > 0 adds the HTTP path check (:func:`http_check`)."""
    cfg.validate()
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="policy-eval-")
        workdir = Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        train_world = make_world(setting, learners=cfg.train_learners, seed=cfg.world_seed)
        needed = cfg.models_needed()
        if runs is None:
            runs = train_models(train_world, needed, workdir, cfg, log=log)
        missing = [m for m in needed if m not in runs]
        if missing:
            raise PolicyEvalError(f"no trained run for {', '.join(missing)}")
        auc = {}
        for m, run in runs.items():
            import json

            f = Path(run) / "metrics.jsonl"
            if f.is_file():
                lines = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
                vals = [x.get("valid_auc") for x in lines]
                vals = [v for v in vals if v is not None]
                if vals:
                    auc[m] = float(max(vals))
        svc = build_service(train_world, runs, workdir / "service.db")
        cohorts = [make_cohort(train_world, cfg, s) for s in cfg.seeds]
        per: dict[str, list[PolicyRun]] = {}
        tuning: dict[str, float] = {}
        grid = [(m, t) for m in cfg.tune_mastery for t in cfg.tune_target]
        tcfg = replace(cfg, learners=cfg.tune_learners)
        total = (len(cfg.policies) + len(cfg.tune)) * len(cohorts) * cfg.learners * cfg.questions
        total += len(cfg.tune) * len(grid) * cfg.tune_learners * cfg.questions
        pbar = (
            bar(f"{setting.name}: policies x seeds x learners x questions", total) if bar else None
        )
        policies = list(cfg.policies)
        try:
            if cfg.tune:
                tcohort = make_cohort(train_world, tcfg, cfg.tune_seed)
                for model in cfg.tune:
                    scores = {}
                    for m, t in grid:
                        name = f"{model}:mixed@mastery={m:g},target={t:g}"
                        r = run_policy(
                            svc,
                            tcohort,
                            name,
                            tcfg,
                            progress=(lambda n: pbar.update(n)) if pbar else None,
                        )
                        scores[name] = float(r.final.mean())
                    tuning.update(scores)
                    best = max(scores, key=scores.get)
                    log(f"{setting.name} tuned {model}:mixed on seed {cfg.tune_seed}: {best}")
                    if best not in policies:
                        policies.append(best)
            for pol in policies:
                for c in cohorts:
                    r = run_policy(
                        svc, c, pol, cfg, progress=(lambda n: pbar.update(n)) if pbar else None
                    )
                    per.setdefault(pol, []).append(r)
                s = summarise(per[pol])
                log(
                    f"{setting.name} {pol:>18}: mastery {s.final[0]:.3f} "
                    f"[{s.final[1]:.3f}, {s.final[2]:.3f}]  success {s.success[0]:.2f}  "
                    f"({s.seconds:.0f} s)"
                )
        finally:
            if pbar is not None:
                pbar.close()
            svc.close()
        result = SettingResult(
            setting=setting,
            config=cfg,
            summaries={p: summarise(r) for p, r in per.items()},
            runs=per,
            model_auc=auc,
            tuning=tuning,
        )
        if http_learners:
            # PSI-KT's mixed policy where it runs (it forgets: the clock must travel too)
            plain = [p for p in cfg.policies if parse_policy(p)[0] == "service" and "@" not in p]
            pol = "psikt:mixed" if "psikt:mixed" in plain else next(iter(plain), None)
            if pol is not None:
                result.http = http_check(
                    train_world, runs, cfg, pol, http_learners, workdir / "http"
                )
                log(
                    f"HTTP check ({pol}, {result.http['learners']} learners): "
                    f"{result.http['same']}/{result.http['total']} identical choices"
                )
        return result
    finally:
        if tmp is not None:
            tmp.cleanup()


# ---------------------------------------------------------------------- the HTTP path
def http_check(
    world: SimWorld,
    runs: dict[str, Path],
    cfg: EvalConfig,
    policy: str,
    learners: int,
    workdir: Path,
) -> dict[str, Any]:
    """Run ``learners`` learners of seed 0's cohort with ``policy`` twice, in fresh databases:
    in-process (as :func:`run_policy`) and over HTTP (FastAPI TestClient, an admin key,
    ``GET /v1/learners/{id}/next-items?n=1&policy=...`` then ``POST /v1/answers``), and count
    identical choices.

    Each next-items request passes the simulated clock (``at=``, the time of the question),
    so that models that forget (PSI-KT) see the same elapsed time as in-process.
    """
    from fastapi.testclient import TestClient

    from . import operations as ops
    from .api import create_app
    from .security import create_key
    from .settings import Settings

    kind, model, service_policy = parse_policy(policy)
    if kind != "service" or "@" in policy:
        raise PolicyEvalError(
            f"the HTTP check needs a recommender policy with the service's settings, got {policy!r}"
        )
    small = EvalConfig(**{**asdict(cfg), "learners": learners, "policies": (policy,)})
    cohort = make_cohort(world, small, cfg.seeds[0])
    workdir.mkdir(parents=True, exist_ok=True)
    svc = build_service(world, runs, workdir / "inprocess.db")
    try:
        local = run_policy(svc, cohort, policy, small)
    finally:
        svc.close()

    svc = build_service(world, runs, workdir / "http.db")
    settings = Settings(
        database_url=svc.url,
        environment="test",
        analytics_warmup_groups=0,
        # the API's recommender with the evaluation's settings
        target_success=cfg.target,
        mastery_threshold=cfg.rec_mastery_threshold,
        mastery_scale=cfg.mastery_scale,
        review_threshold=cfg.review_threshold,
        recent_exclusion=cfg.recent_exclusion,
    )
    from .db import Learner

    with svc.factory() as s, s.begin():
        org = ops.get_org(s, ORG)
        ops.activate_model(s, org=org, model_id=svc.model_ids[model])
        key, _ = create_key(s, org=org, role="admin", pepper=settings.key_pepper)
        ext = [f"{policy}|s{cohort.seed}|{i}" for i in range(learners)]
        for e in ext:
            s.add(Learner(org_id=org.id, external_id=e, n_answers=0))
    svc.close()
    L, N = cohort.times_ms.shape
    state = cohort.world.initial_state()
    sims = [
        SimLearner(cohort.world, state, i, np.random.default_rng(0), cohort.uniforms[i])
        for i in range(L)
    ]
    choices = np.zeros((L, N), dtype=np.int64)
    headers = {"Authorization": f"Bearer {key}"}
    from urllib.parse import quote

    with TestClient(create_app(settings)) as client:
        for k in range(N):
            batch = []
            for i in range(L):
                at_ms = int(cohort.times_ms[i, k])
                got: list = []
                for pol in (service_policy, "target"):  # as the evaluation falls back
                    r = client.get(
                        f"/v1/learners/{quote(ext[i], safe='')}/next-items",
                        params={"n": 1, "policy": pol, "at": _ms_to_dt(at_ms).isoformat()},
                        headers=headers,
                    )
                    if r.status_code != 200:
                        raise PolicyEvalError(f"next-items answered {r.status_code}: {r.text}")
                    got = r.json()["items"]
                    if got:
                        break
                item = _item_index(got[0]["item_id"]) if got else -1
                if item < 0:
                    raise PolicyEvalError("next-items recommended nothing")
                correct = sims[i].answer(item, at_ms)
                choices[i, k] = item
                batch.append(
                    {
                        "event_id": f"{ext[i]}|{k}",
                        "learner_id": ext[i],
                        "item_id": item_id(item),
                        "correct": correct,
                        "timestamp": _ms_to_dt(at_ms).isoformat(),
                    }
                )
            r = client.post("/v1/answers", json={"answers": batch}, headers=headers)
            if r.status_code not in (200, 201):
                raise PolicyEvalError(f"answers answered {r.status_code}: {r.text}")
    same = int((choices == local.choices).sum())
    return {
        "policy": policy,
        "learners": L,
        "questions": N,
        "same": same,
        "total": int(choices.size),
        "identical": bool(same == choices.size),
    }


# ---------------------------------------------------------------------- reports
def _fmt(ci: tuple[float, float, float], nd: int = 3) -> str:
    m, lo, hi = ci
    if not math.isfinite(m):
        return "n/a"
    if not math.isfinite(lo):
        return f"{m:.{nd}f}"
    return f"{m:.{nd}f} [{lo:.{nd}f}, {hi:.{nd}f}]"


def results_table(res: SettingResult) -> str:
    """The markdown table of one setting (every outcome with its 95% CI)."""
    cfg = res.config
    n_seeds = len(cfg.seeds)
    head = (
        f"### Setting `{res.setting.name}`: {res.setting.description}\n\n"
        f"{cfg.learners} learners x {n_seeds} seeds per policy, N = {cfg.questions} questions "
        f"in sessions of {cfg.session_length} (median gap {cfg.session_gap_days:g} days); "
        f"retention {cfg.retention_days:g} days after the last question; "
        f"'mastered' = true mastery >= {cfg.mastery_threshold:g}. "
        "95% CIs over learners and seeds. The recommender's settings unless tuned: target "
        f"{cfg.target:g}, mastery threshold {cfg.rec_mastery_threshold:g} on the "
        f"'{cfg.mastery_scale}' mastery scale, review threshold {cfg.review_threshold:g}.\n"
    )
    if res.model_auc:
        aucs = ", ".join(f"{m} {a:.3f}" for m, a in sorted(res.model_auc.items()))
        head += f"\nModels' validation AUC on the simulated training log: {aucs}.\n"
    lines = [
        head,
        "| policy | mean true mastery after N | retention after a week | success rate | "
        "all concepts mastered within N | questions to master all (those who did) | fallbacks |",
        "|---|---|---|---|---|---|---:|",
    ]
    order = sorted(res.summaries.values(), key=lambda s: -s.final[0])
    for s in order:
        lines.append(
            f"| {s.policy} | {_fmt(s.final)} | {_fmt(s.retention)} | {_fmt(s.success, 2)} | "
            f"{_fmt(s.share_all_mastered, 2)} | {_fmt(s.questions_to_all, 1)} | {s.fallbacks} |"
        )
    v = res.verdict()
    if v:
        lines += ["", f"Best of ours: **{v[0]['best']}**."]
        lines += [
            "",
            "| baseline | its mastery | ours - baseline (paired, 95% CI) | non-overlapping CIs? |",
            "|---|---|---|---|",
        ]
        for r in v:
            lines.append(
                f"| {r['baseline']} | {_fmt(r['baseline_final'])} | "
                f"{_fmt(r['paired_difference'])} | {'yes' if r['non_overlapping_win'] else 'no'} |"
            )
    if res.tuning:
        lines += [
            "",
            f"Tuning (separate cohort, seed {cfg.tune_seed}, {cfg.tune_learners} learners): "
            "mean true mastery after N of each recommender setting tried:",
            "",
            "| policy and settings | mean true mastery |",
            "|---|---:|",
        ]
        for name, v in sorted(res.tuning.items(), key=lambda kv: -kv[1]):
            lines.append(f"| {name} | {v:.3f} |")
    if res.http is not None:
        h = res.http
        lines += [
            "",
            f"HTTP path check ({h['policy']}, {h['learners']} learners x {h['questions']} "
            f"questions through FastAPI's TestClient): {h['same']}/{h['total']} choices identical "
            "to the in-process run.",
        ]
    return "\n".join(lines) + "\n"


def plot_curves(res: SettingResult, path: Path) -> None:
    """Mean true mastery and share with every concept mastered, against questions asked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    order = sorted(res.summaries.values(), key=lambda s: -s.final[0])
    cmap = plt.get_cmap("tab20")
    for k, s in enumerate(order):
        kind = parse_policy(s.policy)[0]
        style = "-" if kind == "service" else "--"
        x = np.arange(1, len(s.curve_mean) + 1)
        axes[0].plot(x, s.curve_mean, style, color=cmap(k % 20), label=s.policy, lw=1.6)
        axes[1].plot(x, s.curve_all_mastered, style, color=cmap(k % 20), label=s.policy, lw=1.6)
    axes[0].set_ylabel("mean true mastery (all concepts)")
    axes[1].set_ylabel(f"share with every concept >= {res.config.mastery_threshold:g}")
    for ax in axes:
        ax.set_xlabel("questions asked")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(
        f"setting '{res.setting.name}': {res.config.learners * len(res.config.seeds)} learners "
        "per policy (dashed: baselines)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def result_json(res: SettingResult) -> dict[str, Any]:
    """Everything behind the table and plot (no per-learner arrays)."""
    cfg = asdict(res.config)
    return {
        "setting": res.setting.to_dict(),
        "config": cfg,
        "model_auc": res.model_auc,
        "summaries": {p: asdict(s) for p, s in res.summaries.items()},
        "verdict": res.verdict(),
        "http_check": res.http,
        "tuning": res.tuning,
    }


def write_outputs(res: SettingResult, out: Path) -> dict[str, Path]:
    """``table.md``, ``results.json`` and ``mastery.png`` under ``out/<setting>/``."""
    import json

    d = out / res.setting.name
    d.mkdir(parents=True, exist_ok=True)
    paths = {"table": d / "table.md", "json": d / "results.json", "plot": d / "mastery.png"}
    paths["table"].write_text(results_table(res))
    paths["json"].write_text(json.dumps(result_json(res), indent=2, default=float) + "\n")
    plot_curves(res, paths["plot"])
    return paths


__all__ = [
    "BASELINES",
    "DEFAULT_POLICIES",
    "EvalConfig",
    "PolicyEvalError",
    "SimulationError",
    "evaluate_setting",
    "http_check",
    "make_policy",
    "parse_policy",
    "results_table",
    "run_policy",
    "write_outputs",
]


def write_summary(out: Path) -> Path:
    """``out/summary.md``: one row per setting found under ``out`` (its ``results.json``):
    our best policy and its mean true mastery against each baseline's, with the verdict."""
    import json

    rows = []
    for f in sorted(out.glob("*/results.json")):
        data = json.loads(f.read_text())
        for v in data.get("verdict", []):
            rows.append((data["setting"]["name"], v))
    if not rows:
        raise PolicyEvalError(f"{out}: no */results.json to summarise (run tutor policy-eval)")
    lines = [
        "# Policy evaluation: summary",
        "",
        "Mean true mastery after N questions (95% CI over learners and seeds) of our best "
        "policy in each setting against each baseline; the paired difference uses the same "
        "learners under both policies. Written by `tutor policy-eval` (tutor/policy_eval.py).",
        "",
        "| setting | our best policy | its mastery | baseline | baseline's mastery | "
        "ours - baseline (paired) | non-overlapping win? |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in rows:
        lines.append(
            f"| {name} | {v['best']} | {_fmt(tuple(v['best_final']))} | {v['baseline']} | "
            f"{_fmt(tuple(v['baseline_final']))} | {_fmt(tuple(v['paired_difference']))} | "
            f"{'yes' if v['non_overlapping_win'] else 'no'} |"
        )
    path = out / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path
