"""Policy evaluation on simulated learners: do the recommendations teach?

For one simulator setting (:mod:`tutor.experiments.simulate`), :func:`evaluate_setting`

1. draws the world (graph, items) and a *training* population, generates its log under the
   world's default app policy and trains the models the policies need (by default DKT, CAKT,
   PSI-KT and BKT; small, few epochs, CPU) on it;
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

The policies, their names and the session schedule are :mod:`tutor.experiments.policy_setup`;
the statistics, tables, plots and summary are :mod:`tutor.experiments.policy_report`.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from data_loaders.progress import NoProgress, Progress

from .policy_report import PolicyRun, SettingResult, summarise
from .policy_setup import (
    BASELINES,
    DEFAULT_POLICIES,
    Cohort,
    EvalConfig,
    PolicyEvalError,
    StepContext,
    item_id,
    item_index,
    make_cohort,
    make_policy,
    parse_policy,
)
from .simulate import SimLearner, SimulationError, SimWorld, WorldSetting, make_world, write_dataset

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


def build_service(world: SimWorld, runs: dict[str, Path], db_path: Path) -> ServiceWorld:
    """Create the database, import the world's catalogue (items named ``q<i+1>``, concepts
    ``0..C-1`` with the true prerequisite graph) and register ``runs`` (model -> run dir)."""
    from .. import operations as ops
    from ..catalogue import clear_cache
    from ..db import Base, create_db_engine, make_sessionmaker
    from ..service import MODELS as MODEL_CACHE

    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{db_path}"
    engine = create_db_engine(url)
    Base.metadata.create_all(engine)
    factory = make_sessionmaker(engine)
    MODEL_CACHE.clear()
    clear_cache()
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


def _ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC)


# ---------------------------------------------------------------------- running
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

    from .. import operations as ops
    from .. import service
    from ..db import Learner

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
def best_valid_auc(run: Path | str) -> float | None:
    """The best validation AUC in a run's ``metrics.jsonl`` (None: no such file or value)."""
    f = Path(run) / "metrics.jsonl"
    if not f.is_file():
        return None
    lines = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
    vals = [v for x in lines if (v := x.get("valid_auc")) is not None]
    return float(max(vals)) if vals else None


def evaluate_setting(
    setting: WorldSetting,
    cfg: EvalConfig,
    workdir: Path | None = None,
    *,
    runs: dict[str, Path] | None = None,
    log: Callable[[str], None] = print,
    progress: Progress | None = None,
    http_learners: int = 0,
) -> SettingResult:
    """Train (unless ``runs`` are given), build the service and run every policy on every
    seed's cohort; ``progress`` counts the questions asked, ``http_learners`` > 0 adds the
    HTTP path check (:func:`http_check`)."""
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
        auc = {m: a for m, run in runs.items() if (a := best_valid_auc(run)) is not None}
        svc = build_service(train_world, runs, workdir / "service.db")
        cohorts = [make_cohort(train_world, cfg, s) for s in cfg.seeds]
        per: dict[str, list[PolicyRun]] = {}
        tuning: dict[str, float] = {}
        grid = [(m, t) for m in cfg.tune_mastery for t in cfg.tune_target]
        tcfg = replace(cfg, learners=cfg.tune_learners)
        total = (len(cfg.policies) + len(cfg.tune)) * len(cohorts) * cfg.learners * cfg.questions
        total += len(cfg.tune) * len(grid) * cfg.tune_learners * cfg.questions
        bar = progress or NoProgress()
        bar.start(f"{setting.name}: policies x seeds x learners x questions", total)
        policies = list(cfg.policies)
        try:
            if cfg.tune:
                tcohort = make_cohort(train_world, tcfg, cfg.tune_seed)
                for model in cfg.tune:
                    scores = {}
                    for m, t in grid:
                        name = f"{model}:mixed@mastery={m:g},target={t:g}"
                        r = run_policy(svc, tcohort, name, tcfg, progress=bar.advance)
                        scores[name] = float(r.final.mean())
                    tuning.update(scores)
                    best = max(scores, key=scores.get)
                    log(f"{setting.name} tuned {model}:mixed on seed {cfg.tune_seed}: {best}")
                    if best not in policies:
                        policies.append(best)
            for pol in policies:
                for c in cohorts:
                    r = run_policy(svc, c, pol, cfg, progress=bar.advance)
                    per.setdefault(pol, []).append(r)
                s = summarise(per[pol])
                log(
                    f"{setting.name} {pol:>18}: mastery {s.final[0]:.3f} "
                    f"[{s.final[1]:.3f}, {s.final[2]:.3f}]  success {s.success[0]:.2f}  "
                    f"({s.seconds:.0f} s)"
                )
        finally:
            bar.finish()
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

    from .. import operations as ops
    from ..api import create_app
    from ..security import create_key
    from ..settings import Settings

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
    from ..db import Learner

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
                item = item_index(got[0]["item_id"]) if got else -1
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
    "run_policy",
    "train_models",
]
