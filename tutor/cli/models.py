"""``tutor train``, ``evaluate``, ``compare``, ``report`` and ``models``: training and judging
knowledge-tracing models offline, and registering them with an organisation of the service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from data_loaders import DatasetError
from kt_models.registry import names_text

from .common import (
    DatabaseUrl,
    OrgOption,
    console,
    db_session,
    fail,
    find_org,
    name_values,
    out,
    when,
)

models_app = typer.Typer(help="Registered models of an organisation.", no_args_is_help=True)


def _load_config_file(path: Path | None) -> tuple[dict[str, object], dict[str, object]]:
    """A JSON or TOML file with optional [train] and [model] tables."""
    if path is None:
        return {}, {}
    import tomllib

    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise typer.BadParameter(f"{path}: {exc}", param_hint="--config") from exc
    return dict(data.get("train", {})), dict(data.get("model", {}))


def train_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help=f"The model: {names_text()}.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Dataset directory (tutor ingest).")],
    out_dir: Annotated[Path, typer.Option("--out", "-O", help="Run directory to write.")],
    config: Annotated[
        Path | None,
        typer.Option("--config", help="TOML/JSON file with \\[train] and \\[model] tables."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs.")] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed (weights, batches, learner split).")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate.")] = None,
    fold: Annotated[
        int | None, typer.Option(help="Cross-validation fold used as validation.")
    ] = None,
    patience: Annotated[int | None, typer.Option(help="Early-stopping patience.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Model option name=value (repeatable), e.g. hidden=200."),
    ] = None,
    train_set: Annotated[
        list[str] | None,
        typer.Option("--train-set", help="Training option name=value, e.g. batch_tokens=65536."),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from RUN/last.pt.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Train a knowledge-tracing model (early stopping on validation AUC; DDP under torchrun)."""
    from kt_models.base import CheckpointError
    from kt_models.train import TrainConfig, train, train_option

    file_train, file_model = _load_config_file(config)
    tc = TrainConfig()
    given = {**file_train, **name_values(train_set, "--train-set", identifiers=True)}
    for k, v in (
        ("epochs", epochs),
        ("seed", seed),
        ("lr", lr),
        ("fold", fold),
        ("patience", patience),
        ("device", device),
    ):
        if v is not None:
            given[k] = v
    for k, v in given.items():
        try:
            v = train_option(k, v)
        except ValueError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(code=2) from None
        setattr(tc, k, v)
    overrides = {**file_model, **name_values(set_, "--set", identifiers=True)}
    try:
        result = train(
            model,
            data,
            out_dir,
            model_overrides=overrides,
            config=tc,
            resume=resume,
            progress=not quiet,
            log=lambda m: console.print(m),
        )
    except (KeyError, ValueError, DatasetError, CheckpointError) as exc:
        msg = exc.args[0] if exc.args else str(exc)
        console.print(f"[red]error:[/red] {msg}")
        raise typer.Exit(code=2) from exc
    out.print(
        f"best validation AUC {result['best_valid_auc']:.4f} after "
        f"{len(result['epochs'])} epochs this run; checkpoint {out_dir / 'best.pt'}"
    )


def evaluate_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="One or more run directories.")],
    data: Annotated[
        Path | None, typer.Option("--data", "-d", help="Evaluate on another dataset.")
    ] = None,
    multi_step: Annotated[
        int, typer.Option(min=0, max=1000, help="Multi-step horizon n (0: off).")
    ] = 10,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot", metavar="FILE", help="PNG comparing the runs (AUC/ACC, calibration)."
        ),
    ] = None,
) -> None:
    """Evaluate runs on their test learners: next-step and multi-step metrics, results.json."""
    from kt_models.base import CheckpointError
    from kt_models.evaluate import evaluate_run

    table = Table(title="Evaluation (test learners)")
    for col in (
        "run",
        "model",
        "learners",
        "answers",
        "AUC",
        "ACC",
        "RMSE",
        "log-loss",
        "ECE",
        f"{multi_step}-step AUC",
        f"{multi_step}-step ACC",
    ):
        table.add_column(col, justify="left" if col in ("run", "model") else "right")
    results = []
    for run_dir in run_dirs:
        try:
            r = evaluate_run(run_dir, data=data, multi_step=multi_step, device=device)
        except (CheckpointError, FileNotFoundError, ValueError) as exc:
            console.print(f"[red]error:[/red] {run_dir}: {exc}")
            raise typer.Exit(code=2) from exc
        results.append(r)
        t = r["test"]
        ms = r.get("multi_step", {})
        table.add_row(
            str(run_dir),
            r["model"],
            f"{r['learners']:,}",
            f"{t['n']:,}",
            f"{t['auc']:.4f}",
            f"{t['acc']:.4f}",
            f"{t['rmse']:.4f}",
            f"{t['logloss']:.4f}",
            f"{t['ece']:.4f}",
            f"{ms['auc']:.4f}" if ms else "-",
            f"{ms['acc']:.4f}" if ms else "-",
        )
    out.print(table)
    out.print(f"protocol: {r['protocol']}; results.json written in each run directory")
    if plot is not None:
        from kt_models.report import plot_comparison

        try:
            plot.parent.mkdir(parents=True, exist_ok=True)
            out.print(f"comparison plot: {plot_comparison(results, plot)}", highlight=False)
        except OSError as exc:
            fail(f"--plot {plot}: {exc}")


def compare_cmd(
    run_a: Annotated[Path, typer.Argument(help="Run directory A.")],
    run_b: Annotated[list[Path], typer.Argument(help="One or more run directories B.")],
    boot: Annotated[int, typer.Option(help="Bootstrap replicates.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
) -> None:
    """Is run A's test AUC above run B's? The difference with a 95% interval from a paired
    bootstrap over the test learners (same learners, same answers, both models)."""
    from kt_models.base import CheckpointError
    from kt_models.evaluate import compare_runs

    if boot < 1:
        fail(f"--boot must be at least 1, got {boot}")
    table = Table(title=f"Test AUC, A - B, paired bootstrap over learners ({boot} replicates)")
    for col in ("A", "B", "learners", "AUC A", "AUC B", "A - B", "95% interval", "P(A - B <= 0)"):
        table.add_column(col, justify="left" if col in ("A", "B") else "right")
    try:
        rows = compare_runs(run_a, run_b, n_boot=boot, seed=seed, device=device)
    except (CheckpointError, DatasetError, OSError, ValueError, KeyError) as exc:
        fail(f"{exc}")
    for r in rows:
        table.add_row(
            f"{run_a} ({r['model_a']})",
            f"{r['b']} ({r['model_b']})",
            f"{r['learners']:,}",
            f"{r['auc_a']:.4f}",
            f"{r['auc_b']:.4f}",
            f"{r['diff']:+.4f}",
            f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]",
            f"{r['p_le_0']:.3f}",
        )
    out.print(table)
    out.print(
        "The interval covers test-learner sampling only, not training randomness: compare "
        "several seeds per model too."
    )


def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (tutor train).")],
    out_dir: Annotated[
        Path, typer.Option("--out", "-O", help="Directory for the PNG plots and index.html.")
    ],
    data: Annotated[
        Path | None, typer.Option("--data", "-d", help="Report on another dataset.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
    max_position: Annotated[int, typer.Option(help="Last AUC-by-position bucket boundary.")] = 200,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Offline report of a trained run: calibration, AUC by position, learning curves (and
    PSI-KT's prerequisite graph and learner traits) as PNGs and an HTML page."""
    from kt_models.base import CheckpointError
    from kt_models.report import write_report

    if not run_dir.is_dir():
        fail(f"{run_dir}: run directory not found")
    try:
        page = write_report(
            run_dir,
            out_dir,
            data=data,
            device=device,
            max_position=max_position,
            progress=not quiet,
        )
    except (CheckpointError, FileNotFoundError, ValueError, DatasetError, OSError) as exc:
        fail(f"{run_dir}: {exc}")
    out.print(str(page), highlight=False)


@models_app.command("register")
def models_register(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (tutor train) or checkpoint.")],
    org: OrgOption,
    activate: Annotated[bool, typer.Option("--activate", help="Make it the active model.")] = False,
    label: Annotated[str, typer.Option(help="Label (default: the run directory's name).")] = "",
    mapping: Annotated[
        Path | None,
        typer.Option(
            "--mapping",
            help="CSV kind,model_id,catalogue_id (kind: item or concept): for a model trained "
            "under other ids than the organisation's catalogue.",
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Register a trained model (its checkpoint is stored in the database). A model that does
    not fit the organisation's catalogue is refused, naming the differences."""
    from tutor.operations import OperationError, read_mapping, register_model

    if not run_dir.exists():
        fail(f"run directory {run_dir} does not exist")
    try:
        ids = read_mapping(mapping) if mapping is not None else None
    except OperationError as exc:
        fail(str(exc))
    with db_session(database_url) as s:
        mv = register_model(
            s, org=find_org(s, org), run_dir=run_dir, label=label, activate=activate, mapping=ids
        )
        out.print(
            f"registered model {mv.id} ({mv.name}, {mv.label!r}) in {org!r}"
            + ("; now active" if activate else f"; activate: tutor models activate {mv.id}"),
            highlight=False,
        )


@models_app.command("list")
def models_list(org: OrgOption, database_url: DatabaseUrl = None) -> None:
    """List an organisation's registered models."""
    from sqlalchemy import select

    from tutor.db import ModelVersion

    with db_session(database_url) as s:
        o = find_org(s, org)
        table = Table(title=f"Models of {org}")
        for col in ("id", "model", "label", "active", "test AUC", "sha256", "created"):
            table.add_column(col)
        for mv in s.scalars(
            select(ModelVersion).where(ModelVersion.org_id == o.id).order_by(ModelVersion.id)
        ):
            auc = (mv.info or {}).get("results", {}).get("test", {}).get("auc")
            table.add_row(
                str(mv.id),
                mv.name,
                mv.label,
                "yes" if mv.id == o.active_model_id else "",
                "-" if auc is None else f"{auc:.4f}",
                mv.sha256[:12],
                when(mv.created_at),
            )
    out.print(table)


@models_app.command("activate")
def models_activate(
    model_id: Annotated[int, typer.Argument(metavar="ID", help="Model id (tutor models list).")],
    org: OrgOption,
    database_url: DatabaseUrl = None,
) -> None:
    """Make a registered model the organisation's active model (states rebuild lazily)."""
    from tutor.operations import activate_model

    with db_session(database_url) as s:
        mv = activate_model(s, org=find_org(s, org), model_id=model_id)
        out.print(f"model {mv.id} ({mv.name}) is now active in {org!r}", highlight=False)
