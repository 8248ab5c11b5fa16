"""Policy evaluation (tutor/experiments: policy_setup, policy_eval, policy_report) on a tiny world
with tiny models: the service path, the baselines' rules, the HTTP path, outcomes and their
intervals, the CLI."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tutor.cli import app
from tutor.experiments.policy_eval import build_service, evaluate_setting, http_check, train_models
from tutor.experiments.policy_report import (
    mean_ci,
    paired_difference,
    share_ci,
    write_outputs,
    write_summary,
)
from tutor.experiments.policy_setup import (
    EvalConfig,
    PolicyEvalError,
    ServicePolicy,
    StepContext,
    TextbookPolicy,
    make_cohort,
    make_policy,
    parse_policy,
    policy_overrides,
)
from tutor.experiments.simulate import SETTINGS, WorldSetting, make_world

TINY = EvalConfig(
    policies=("hardest:dkt", "dkt:target"),
    learners=16,
    seeds=(0,),
    questions=24,
    session_length=8,
    train_learners=150,
    epochs=3,
)


def tiny_setting(name: str = "prerequisites-zpd") -> WorldSetting:
    s = SETTINGS[name]
    return replace(s, params=replace(s.params, concepts=5, items_per_concept=6))


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch

    torch.set_num_threads(1)
    world = make_world(tiny_setting(), learners=TINY.train_learners, seed=TINY.world_seed)
    work = tmp_path_factory.mktemp("policy-eval")
    return train_models(world, ["bkt", "dkt", "psikt"], work, TINY, log=lambda m: None)


class Recorded:
    """A :class:`data_loaders.progress.Progress` that keeps what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def start(self, description: str, total: int | None) -> None:
        self.calls.append(("start", description, total))

    def advance(self, n: int) -> None:
        self.calls.append(("advance", n))

    def finish(self) -> None:
        self.calls.append(("finish",))


def test_hardest_item_does_worse_than_target(tiny_runs: dict[str, Path], tmp_path: Path) -> None:
    bar = Recorded()
    res = evaluate_setting(
        tiny_setting(), TINY, tmp_path, runs=tiny_runs, log=lambda m: None, progress=bar
    )
    # one task counting every question asked, finished
    total = len(TINY.policies) * TINY.learners * TINY.questions
    assert bar.calls[0] == (
        "start",
        "prerequisites-zpd: policies x seeds x learners x questions",
        total,
    )
    assert sum(c[1] for c in bar.calls if c[0] == "advance") == total
    assert bar.calls[-1] == ("finish",)
    hard, target = res.summaries["hardest:dkt"], res.summaries["dkt:target"]
    assert target.final[0] > hard.final[0]
    diff = paired_difference(res.runs["dkt:target"], res.runs["hardest:dkt"])
    assert diff[0] > 0 and diff[1] > 0  # the same learners learn more, beyond noise
    assert target.success[0] > hard.success[0]  # and are less often wrong
    # every answer went through the service: the learners' histories are in the database
    from sqlalchemy import func, select

    from tutor.db import Interaction, create_db_engine, make_sessionmaker

    engine = create_db_engine(f"sqlite:///{tmp_path / 'service.db'}")
    with make_sessionmaker(engine)() as s:
        n = s.scalar(select(func.count()).select_from(Interaction))
    engine.dispose()
    assert n == 2 * TINY.learners * TINY.questions


def test_outcomes_tables_and_plot(tiny_runs: dict[str, Path], tmp_path: Path) -> None:
    cfg = replace(
        TINY,
        policies=("random", "textbook", "skill-builder", "lowest-mastery", "dkt:mixed"),
        learners=6,
        questions=12,
    )
    res = evaluate_setting(tiny_setting(), cfg, tmp_path / "w", runs=tiny_runs, log=lambda m: None)
    for s in res.summaries.values():
        assert 0 < s.final[0] < 1 and s.final[1] <= s.final[0] <= s.final[2]
        assert 0 <= s.success[0] <= 1
        assert s.retention[0] <= s.final[0] + 1e-9  # a week without practice: forgetting
        assert len(s.curve_mean) == cfg.questions and s.n_learners == cfg.learners
    assert res.best_ours() == "dkt:mixed"
    assert {v["baseline"] for v in res.verdict()} == {
        "skill-builder",
        "lowest-mastery",
        "random",
        "textbook",
    }
    paths = write_outputs(res, tmp_path / "out")
    table = paths["table"].read_text()
    assert "| skill-builder |" in table and "Best of ours" in table
    assert paths["plot"].stat().st_size > 10_000
    assert '"verdict"' in paths["json"].read_text()
    summary = write_summary(tmp_path / "out").read_text()
    assert "| prerequisites-zpd | dkt:mixed |" in summary
    with pytest.raises(PolicyEvalError, match="no \\*/results.json"):
        write_summary(tmp_path / "empty")


def test_http_path_makes_the_same_choices(tiny_runs: dict[str, Path], tmp_path: Path) -> None:
    world = make_world(tiny_setting(), learners=TINY.train_learners, seed=TINY.world_seed)
    cfg = replace(TINY, questions=6)
    out = http_check(world, tiny_runs, cfg, "dkt:mixed", 2, tmp_path)
    assert out["identical"] and out["same"] == out["total"] == 12
    out = http_check(world, tiny_runs, cfg, "psikt:mixed", 2, tmp_path / "psikt")
    assert out["identical"] and out["same"] == out["total"] == 12
    with pytest.raises(PolicyEvalError, match="recommender policy"):
        http_check(world, tiny_runs, cfg, "random", 2, tmp_path / "random")


def test_cohorts_are_shared_by_policies() -> None:
    world = make_world(tiny_setting(), learners=20, seed=0)
    a, b = make_cohort(world, TINY, 0), make_cohort(world, TINY, 0)
    assert np.array_equal(a.times_ms, b.times_ms) and np.array_equal(a.uniforms, b.uniforms)
    assert np.array_equal(a.world.prior, b.world.prior)
    c = make_cohort(world, TINY, 1)
    assert not np.array_equal(a.uniforms, c.uniforms)
    gaps = np.diff(a.times_ms, axis=1)
    assert (gaps > 0).all()
    # a long gap (hours to days) between sessions, 45 s inside one
    k = TINY.session_length
    assert (gaps[:, k - 1] >= 6 * 3_600_000).all()
    assert (gaps[:, 0] == 45_000).all()


def _ctx(items: list[int], answers: list[int], day: int = 1) -> StepContext:
    return StepContext(None, None, None, datetime(2026, 1, day, tzinfo=UTC), items, answers)


def test_textbook_order() -> None:
    world = make_world(tiny_setting(), learners=2, seed=0)
    cfg = replace(TINY, questions=10)  # 5 concepts: 2 questions each
    pol = TextbookPolicy(world, cfg, 0)
    items: list[int] = []
    for _ in range(12):
        items.append(pol.choose(_ctx(items, [1] * len(items))))
    concepts = world.item_concepts[items, 0].tolist()
    assert concepts[:10] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert concepts[10:] == [0, 0] and items[10] != items[0]  # around again, next items


def test_baselines_are_the_service_registry() -> None:
    world = make_world(tiny_setting(), learners=2, seed=0)
    for name in ("random", "skill-builder", "lowest-mastery"):
        pol = make_policy(name, world, TINY, 0)
        assert isinstance(pol, ServicePolicy) and pol.service_policy == name
    assert isinstance(make_policy("textbook", world, TINY, 0), TextbookPolicy)


def test_policy_names() -> None:
    assert parse_policy("random") == ("baseline", "bkt", "random")
    assert parse_policy("lowest-mastery") == ("baseline", "bkt", "lowest-mastery")
    assert parse_policy("textbook") == ("textbook", None, None)
    assert parse_policy("psikt:review") == ("service", "psikt", "review")
    assert parse_policy("dkt:mixed@mastery=0.6,target=0.5") == ("service", "dkt", "mixed")
    assert policy_overrides("dkt:mixed@mastery=0.6,target=0.5") == {"mastery": 0.6, "target": 0.5}
    for bad, msg in (
        ("greedy", "unknown policy"),
        ("dkt:best", "unknown policy"),
        ("hardest:rnn", "unknown model"),
        ("dkt:mixed@speed=1", "unknown setting"),
        ("dkt:mixed@target=2", r"in \(0, 1\)"),
    ):
        with pytest.raises(PolicyEvalError, match=msg):
            parse_policy(bad)
    # the models are the registry's (kt_models.registry): an unknown one names the known ones
    assert parse_policy("logistic:target") == ("service", "logistic", "target")
    assert parse_policy("hardest:bkt") == ("hardest", "bkt", None)
    known = "expected one of akt, bkt, cakt"
    with pytest.raises(PolicyEvalError, match=f"unknown model 'rnn'; {known}"):
        parse_policy("hardest:rnn")
    with pytest.raises(PolicyEvalError, match="MODEL in akt, bkt, cakt, dkt"):
        parse_policy("rnn:target")
    with pytest.raises(PolicyEvalError, match="cannot tune: unknown model 'rnn'; expected one of"):
        replace(TINY, tune=("rnn",)).validate()
    with pytest.raises(PolicyEvalError, match="questions"):
        replace(TINY, questions=0).validate()
    with pytest.raises(PolicyEvalError, match="tuning seed"):
        replace(TINY, tune=("dkt",), tune_seed=0).validate()


def test_intervals() -> None:
    m, lo, hi = mean_ci(np.array([0.0, 1.0] * 50))
    assert m == 0.5 and hi - lo == pytest.approx(2 * 1.959964 * np.std([0, 1] * 50, ddof=1) / 10)
    p, lo, hi = share_ci(np.array([True] * 10))
    assert p == 1.0 and hi == pytest.approx(1.0) and 0.6 < lo < 0.8
    assert np.isnan(mean_ci(np.array([np.nan]))[0])


def test_service_holds_the_world(tiny_runs: dict[str, Path], tmp_path: Path) -> None:
    from sqlalchemy import func, select

    from tutor.db import Item, PrerequisiteEdge

    world = make_world(tiny_setting(), learners=5, seed=0)
    svc = build_service(world, tiny_runs, tmp_path / "svc.db")
    with svc.factory() as s:
        assert s.scalar(select(func.count()).select_from(Item)) == world.n_items
        edges = s.scalar(select(func.count()).select_from(PrerequisiteEdge))
        assert edges == len(world.prerequisites)
    assert set(svc.model_ids) == {"bkt", "dkt", "psikt"}
    svc.close()


def test_cli_simulate_and_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(
        app,
        ["simulate", "generate", "--out", str(tmp_path / "ds"), "--learners", "30"],
    )
    assert r.exit_code == 0, r.output
    assert "answers of 30 learners" in r.output
    r = runner.invoke(app, ["simulate", "generate", "--out", str(tmp_path / "x"), "--setting", "z"])
    assert r.exit_code == 2 and "unknown simulator setting" in r.output
    r = runner.invoke(app, ["policy-eval", "--policies", "greedy", "-q"])
    assert r.exit_code == 2 and "unknown policy" in r.output
    r = runner.invoke(app, ["policy-eval", "--seeds", "a,b", "-q"])
    assert r.exit_code == 2 and "--seeds" in r.output
    r = runner.invoke(app, ["simulate", "settings"])
    assert r.exit_code == 0 and "prerequisites" in r.output
