"""``tutor simulate`` and ``tutor policy-eval``: the simulator and the policy evaluation on
the command line (:data:`simulate_app` and :func:`policy_eval_cmd`, registered in
:mod:`tutor.cli`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console

from data_loaders.progress import RichProgress

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)

simulate_app = typer.Typer(
    help="Simulated learners with a hidden ground truth (prerequisites, learning, forgetting).",
    no_args_is_help=True,
)

REAL_DEFAULT = Path("../shared/data/assist2009/akt_assist2009_pid")
JUNYI_DEFAULT = Path("../shared/data/junyi/junyi_Exercise_table.csv")
_N = TypeVar("_N", int, float)
TUNE_GRID_ERROR = "--tune-mastery and --tune-target must be comma-separated numbers"


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code=2)


def _numbers(text: str, kind: Callable[[str], _N], message: str) -> tuple[_N, ...]:
    """The comma-separated numbers of an option; anything else ends the command with
    ``message``."""
    try:
        return tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError:
        _fail(message)


def _names(text: str) -> tuple[str, ...]:
    """The comma-separated names of an option, blanks dropped."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


@simulate_app.command("settings")
def simulate_settings() -> None:
    """List the named simulator settings and their parameters."""
    from .simulate import SETTINGS

    for s in SETTINGS.values():
        out.print(f"[bold]{s.name}[/bold]: {s.description}")
        out.print(json.dumps({**s.params.to_dict(), **s.to_dict()["extras"]}), highlight=False)
    out.print("[bold]calibrated[/bold]: read from a calibration file (tutor simulate calibrate)")


@simulate_app.command("generate")
def simulate_generate(
    out_dir: Annotated[Path, typer.Option("--out", "-O", help="Dataset directory to write.")],
    setting: Annotated[str, typer.Option(help="default, prerequisites, forgetting, calibrated")] = (
        "default"
    ),
    learners: Annotated[int, typer.Option(help="Learners to simulate.")] = 200,
    seed: Annotated[int, typer.Option(help="World seed: same seed, same dataset.")] = 0,
    calibration: Annotated[
        Path | None, typer.Option(help="Calibration JSON for --setting calibrated.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset.")] = False,
) -> None:
    """Simulate a population under the world's default app policy and write it as a
    canonical dataset (train models on it with tutor train); prints its statistics."""
    from data_loaders import DatasetError, IngestError

    from .simulate import SimulationError, load_setting, make_world, simulated_stats, write_dataset

    if learners < 1:
        _fail("--learners must be at least 1")
    try:
        s = load_setting(setting, calibration)
        world = make_world(s, learners=learners, seed=seed)
        log = world.generate()
        counts = write_dataset(world, log, out_dir, overwrite=overwrite)
        st = simulated_stats(world, log)
    except (SimulationError, IngestError, DatasetError) as exc:
        _fail(str(exc))
    out.print(
        f"{counts['interactions']:,} answers of {learners:,} learners ({s.name}) -> {out_dir}\n"
        f"correct rate {st.correct_rate:.3f}; answers per learner median "
        f"{st.length_quantiles['p50']:.0f}, mean {st.length_quantiles['mean']:.1f}; "
        f"error rate at opportunities 1..10: "
        + " ".join(f"{e:.2f}" for e in st.error_by_opportunity),
        highlight=False,
    )


@simulate_app.command("calibrate")
def simulate_calibrate(
    data: Annotated[
        Path, typer.Option(help="Real four-line dataset (AKT's ASSISTments 2009 files).")
    ] = REAL_DEFAULT,
    junyi: Annotated[
        Path | None, typer.Option(help="Junyi exercise table (prerequisite graph shape).")
    ] = JUNYI_DEFAULT,
    out_dir: Annotated[
        Path, typer.Option("--out", "-O", help="Writes calibration.md and calibration.json.")
    ] = Path("docs/simulate"),
    learners: Annotated[int, typer.Option(help="Simulated learners per candidate.")] = 400,
    trials: Annotated[int, typer.Option(help="Random candidates.")] = 60,
    refine: Annotated[int, typer.Option(help="Local refinement steps.")] = 40,
    seed: Annotated[int, typer.Option(help="Search and world seed.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Fit the simulator to real data and print (and write) the comparison table."""
    from .simulate import (
        SETTINGS,
        SimulationError,
        calibrate,
        comparison_table,
        junyi_graph_stats,
        make_world,
        real_stats,
        simulated_stats,
        world_graph_stats,
    )

    if not data.exists():
        _fail(f"{data}: real dataset not found (give --data)")
    bar = RichProgress(enabled=not quiet, console=console)
    try:
        real = real_stats(data)
        bar.start("calibrating", trials + refine)
        setting, sim, loss = calibrate(
            real,
            learners=learners,
            trials=trials,
            refine=refine,
            seed=seed,
            progress=lambda k, n: bar.advance(1),
        )
        bar.finish()
        default = simulated_stats(make_world(SETTINGS["default"], learners=learners, seed=seed))
        jstats = junyi_graph_stats(junyi) if junyi is not None and junyi.exists() else None
        gstats = world_graph_stats(make_world(setting, learners=2, seed=seed))
    except SimulationError as exc:
        _fail(str(exc))
    finally:
        bar.finish()
    table = comparison_table(real, sim, default, jstats, gstats if jstats else None)
    fitted = {
        "guess": setting.params.guess,
        "slip": setting.params.slip,
        "learning_rate": setting.params.learning_rate,
        "prior_shift": setting.extras.prior_shift,
        "answers": setting.params.answers,
    }
    head = (
        f"# Simulator calibration\n\nReal: `{data}` ({real.learners:,} learners). Simulated: "
        f"{learners} learners of seed {seed} under the world's default app policy. Fitted "
        f"(loss {loss:.4f}): "
        + ", ".join(
            f"{k} = {v:.3f}" if isinstance(v, float) else f"{k} = {v}" for k, v in fitted.items()
        )
        + ".\n\nCommand: `tutor simulate calibrate` (tutor/experiments/simulate.py: "
        "`calibrate`).\n\n"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "calibration.md").write_text(head + table + "\n")
    (out_dir / "calibration.json").write_text(
        json.dumps(
            {
                "setting": setting.to_dict(),
                "loss": loss,
                "real": real.to_dict(),
                "simulated": sim.to_dict(),
                "default": default.to_dict(),
                "junyi": jstats,
                "simulated_graph": gstats,
            },
            indent=2,
        )
        + "\n"
    )
    out.print(head + table, highlight=False)
    console.print(f"wrote {out_dir / 'calibration.md'} and {out_dir / 'calibration.json'}")


def policy_eval_cmd(
    setting: Annotated[
        list[str] | None,
        typer.Option(help="Simulator setting (repeatable): prerequisites, forgetting, ..."),
    ] = None,
    policies: Annotated[
        str | None,
        typer.Option(help="Comma-separated policies (default: baselines and ours)."),
    ] = None,
    learners: Annotated[int, typer.Option(help="Learners per seed.")] = 100,
    seeds: Annotated[str, typer.Option(help="Comma-separated evaluation seeds.")] = "0,1",
    questions: Annotated[int, typer.Option("--questions", "-n", help="Budget N.")] = 80,
    session_length: Annotated[int, typer.Option(help="Questions per session.")] = 10,
    session_gap_days: Annotated[float, typer.Option(help="Median days between sessions.")] = 2.0,
    train_learners: Annotated[int, typer.Option(help="Learners of the training log.")] = 400,
    epochs: Annotated[int, typer.Option(help="Training epochs per model.")] = 6,
    tune: Annotated[
        str, typer.Option(help="Models whose mixed policy is tuned on a separate cohort.")
    ] = "dkt,psikt",
    tune_mastery: Annotated[
        str, typer.Option(help="Mastery thresholds tried when tuning (comma-separated).")
    ] = "0.5,0.6,0.7",
    tune_target: Annotated[
        str, typer.Option(help="Target successes tried when tuning (comma-separated).")
    ] = "0.5,0.7",
    tune_learners: Annotated[int, typer.Option(help="Learners of the tuning cohort.")] = 30,
    mastery_scale: Annotated[
        str,
        typer.Option(help="The recommender's mastery scale: reachable (default) or success."),
    ] = "reachable",
    http_learners: Annotated[
        int, typer.Option(help="Learners of the HTTP path check (0: none).")
    ] = 3,
    calibration: Annotated[
        Path | None, typer.Option(help="Calibration JSON for --setting calibrated.")
    ] = None,
    workdir: Annotated[
        Path | None, typer.Option(help="Keep training data, runs and databases here.")
    ] = None,
    out_dir: Annotated[
        Path,
        typer.Option("--out", "-O", help="Writes <setting>/table.md, results.json, mastery.png"),
    ] = Path("docs/policy_eval"),
    summary_only: Annotated[
        bool, typer.Option("--summary-only", help="Only rebuild OUT/summary.md from results.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Compare tutoring policies on simulated learners through the service's code path.

    For each setting: train the models on a simulated log, run every policy on the same
    cohorts through the service (record_answers, learner_view, recommend), check the HTTP path,
    and write OUT/<setting>/table.md, results.json and mastery.png, then OUT/summary.md."""
    import torch

    from .policy_eval import evaluate_setting
    from .policy_report import results_table, write_outputs, write_summary
    from .policy_setup import DEFAULT_POLICIES, EvalConfig, PolicyEvalError
    from .simulate import SimulationError, load_setting

    if summary_only:
        try:
            console.print(f"wrote {write_summary(out_dir)}")
        except PolicyEvalError as exc:
            _fail(str(exc))
        return
    torch.set_num_threads(1)
    cfg = EvalConfig(
        policies=_names(policies) if policies else DEFAULT_POLICIES,
        learners=learners,
        seeds=_numbers(seeds, int, f"--seeds must be comma-separated integers, got {seeds!r}"),
        questions=questions,
        session_length=session_length,
        session_gap_days=session_gap_days,
        tune_mastery=_numbers(tune_mastery, float, TUNE_GRID_ERROR),
        tune_target=_numbers(tune_target, float, TUNE_GRID_ERROR),
        train_learners=train_learners,
        epochs=epochs,
        tune=_names(tune),
        tune_learners=tune_learners,
        mastery_scale=mastery_scale,
    )
    names = setting or ["prerequisites", "forgetting"]
    try:
        cfg.validate()
        settings = [load_setting(n, calibration) for n in names]
    except (PolicyEvalError, SimulationError) as exc:
        _fail(str(exc))
    for s in settings:
        wd = workdir / s.name if workdir is not None else None
        try:
            res = evaluate_setting(
                s,
                cfg,
                wd,
                log=lambda m: console.print(m, highlight=False),
                progress=RichProgress(enabled=not quiet, console=console),
                http_learners=http_learners,
            )
        except (PolicyEvalError, SimulationError) as exc:
            _fail(str(exc))
        paths = write_outputs(res, out_dir)
        out.print(results_table(res), highlight=False)
        console.print(f"wrote {paths['table']}, {paths['json']} and {paths['plot']}")
    console.print(f"wrote {write_summary(out_dir)}")
