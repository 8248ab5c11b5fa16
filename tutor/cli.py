"""The ``tutor`` command line (Typer)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from data_loaders import FORMATS, DatasetError, IngestError, get_loader, ingest, open_dataset

app = typer.Typer(
    name="tutor",
    help="kt-tutor: ingest learner logs, train knowledge-tracing models, serve a tutor.",
    no_args_is_help=True,
    add_completion=False,
)
dataset_app = typer.Typer(help="Inspect canonical Parquet datasets.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)


class RichProgress:
    """The writer's progress protocol drawn as rich bars (bytes while reading, parts after)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def start(self, description: str, total: int | None) -> None:
        self.finish()
        if not self.enabled:
            return
        columns = [TextColumn("{task.description}"), BarColumn()]
        if description.startswith("reading"):
            columns += [DownloadColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
        else:
            columns += [MofNCompleteColumn(), TimeElapsedColumn()]
        self._progress = Progress(*columns, console=console, transient=False)
        self._progress.start()
        self._task = self._progress.add_task(description, total=total)

    def advance(self, n: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None


def _parse_options(raw: list[str] | None) -> dict[str, str]:
    opts: dict[str, str] = {}
    for item in raw or []:
        if "=" not in item:
            raise typer.BadParameter(f"expected name=value, got {item!r}", param_hint="--option")
        k, v = item.split("=", 1)
        opts[k.strip()] = v
    return opts


@app.command("ingest")
def ingest_cmd(
    format_name: Annotated[
        str, typer.Argument(metavar="FORMAT", help="Source format (see 'tutor formats').")
    ],
    input_path: Annotated[
        Path,
        typer.Argument(metavar="INPUT", help="Input file, directory or .zip ('-' for simulate)."),
    ],
    out_dir: Annotated[Path, typer.Option("--out", "-O", help="Dataset directory to write.")],
    concepts: Annotated[
        Path | None,
        typer.Option(
            "--concepts", help="Side file of concepts/items (format-specific, see formats)."
        ),
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="Loader option name=value (repeatable)."),
    ] = None,
    keep_expanded: Annotated[
        bool,
        typer.Option(
            "--keep-expanded",
            help="Keep multi-skill answers as one row per skill (reproduces published numbers).",
        ),
    ] = False,
    keep_duplicates: Annotated[
        bool, typer.Option("--keep-duplicates", help="Do not drop exact duplicate rows.")
    ] = False,
    buckets: Annotated[int, typer.Option(help="Number of learner hash partitions.")] = 32,
    encoding: Annotated[str, typer.Option(help="Text encoding of the input files.")] = "utf-8",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing output.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the manifest counts as JSON.")
    ] = False,
) -> None:
    """Ingest a log in FORMAT into the canonical Parquet dataset at --out."""
    progress = RichProgress(enabled=not quiet and not as_json)
    try:
        manifest = ingest(
            format_name,
            input_path,
            out_dir,
            options=_parse_options(option),
            encoding=encoding,
            concepts=concepts,
            buckets=buckets,
            keep_expanded=keep_expanded,
            keep_duplicates=keep_duplicates,
            overwrite=overwrite,
            progress=progress,
        )
    except IngestError as exc:
        progress.finish()
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from exc
    finally:
        progress.finish()
    c = manifest.counts
    if as_json:
        out.print_json(
            json.dumps(
                {
                    **c,
                    "rejected_by_reason": manifest.rejected_by_reason,
                    "skipped_by_reason": manifest.skipped_by_reason,
                }
            )
        )
        return
    out.print(
        f"[bold]{out_dir}[/bold]: read {c['rows_read']:,} rows, wrote {c['interactions']:,} "
        f"interactions of {c['learners']:,} learners ({c['items']:,} items, "
        f"{c['concepts']:,} concepts), rejected {c['rejected']:,}"
    )
    if c["multi_skill_rows_merged"]:
        out.print(f"  merged {c['multi_skill_rows_merged']:,} multi-skill repeat rows")
    if c["duplicates_dropped"]:
        out.print(f"  dropped {c['duplicates_dropped']:,} exact duplicate rows")
    for reason, n in manifest.rejected_by_reason.items():
        out.print(f"  rejected {n:,}: {reason}")
    for reason, n in manifest.skipped_by_reason.items():
        out.print(f"  skipped {n:,}: {reason}")
    if c.get("events"):
        out.print(f"  kept {c['events']:,} non-answer events in events.parquet")


@app.command("formats")
def formats_cmd() -> None:
    """List the source formats and their options."""
    table = Table(title="Ingest formats")
    table.add_column("format")
    table.add_column("what it reads")
    table.add_column("options (-o name=value)")
    for name in FORMATS:
        cls = get_loader(name)
        opts = "\n".join(f"{o.name}={o.default!r}: {o.help}" for o in cls.options)
        table.add_row(name, cls.summary, opts)
    out.print(table)


@dataset_app.command("info")
def dataset_info(
    path: Annotated[Path, typer.Argument(help="Dataset directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Summarise a dataset: learners, interactions, items, concepts, rates and lengths."""
    try:
        info = open_dataset(path).info()
    except DatasetError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from exc
    if as_json:
        out.print_json(json.dumps(info))
        return
    table = Table(title=f"dataset {path}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key in (
        "format",
        "learners",
        "interactions",
        "items",
        "items_answered",
        "concepts",
        "correct_rate",
        "rows_read",
        "rejected",
        "duplicates_dropped",
        "multi_skill_rows_merged",
        "multi_skill",
        "events",
    ):
        v = info.get(key)
        table.add_row(key, f"{v:,}" if isinstance(v, int) else str(v))
    sl = info["sequence_length"]
    table.add_row(
        "sequence length",
        "mean {:.1f}; ".format(sl["mean"] or 0)
        + ", ".join(f"{k} {v:g}" for k, v in sl.items() if k != "mean"),
    )
    ts = info["time_span"]
    table.add_row(
        "time span", f"{ts['first']} .. {ts['last']} ({ts['rows_with_timestamp']:,} rows)"
    )
    for key in ("rejected_by_reason", "skipped_by_reason", "splits", "folds"):
        if info[key]:
            table.add_row(key, ", ".join(f"{k}: {v:,}" for k, v in info[key].items()))
    out.print(table)


def _parse_sets(raw: list[str] | None, what: str) -> dict[str, str]:
    opts: dict[str, str] = {}
    for item in raw or []:
        if "=" not in item:
            raise typer.BadParameter(f"expected name=value, got {item!r}", param_hint=what)
        k, v = item.split("=", 1)
        opts[k.strip().replace("-", "_")] = v.strip()
    return opts


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


@app.command("train")
def train_cmd(
    model: Annotated[
        str, typer.Option("--model", "-m", help="dkt, dkt+, cakt, psikt, bkt, logistic")
    ],
    data: Annotated[Path, typer.Option("--data", "-d", help="Dataset directory (tutor ingest).")],
    out_dir: Annotated[Path, typer.Option("--out", "-O", help="Run directory to write.")],
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML/JSON file with [train] and [model].")
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
    import dataclasses

    from kt_models.train import TrainConfig, train

    file_train, file_model = _load_config_file(config)
    tc = TrainConfig()
    fields = {f.name: f for f in dataclasses.fields(tc)}
    given = {**file_train, **_parse_sets(train_set, "--train-set")}
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
        if k not in fields:
            console.print(f"[red]error:[/red] unknown training option {k!r}")
            raise typer.Exit(code=2)
        cur = getattr(tc, k)
        try:
            if isinstance(v, str) and k == "max_len":
                v = None if v.lower() in ("none", "0", "") else int(v)
            elif isinstance(v, str) and k == "lr":
                v = float(v)
            elif isinstance(v, str) and cur is not None and not isinstance(cur, str):
                v = type(cur)(v) if not isinstance(cur, bool) else v.lower() in ("1", "true", "yes")
        except ValueError as exc:
            console.print(f"[red]error:[/red] training option {k!r}: {exc}")
            raise typer.Exit(code=2) from exc
        setattr(tc, k, v)
    overrides = {**file_model, **_parse_sets(set_, "--set")}
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
    except (KeyError, ValueError, DatasetError) as exc:
        msg = exc.args[0] if exc.args else str(exc)
        console.print(f"[red]error:[/red] {msg}")
        raise typer.Exit(code=2) from exc
    out.print(
        f"best validation AUC {result['best_valid_auc']:.4f} after "
        f"{len(result['epochs'])} epochs this run; checkpoint {out_dir / 'best.pt'}"
    )


@app.command("evaluate")
def evaluate_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="One or more run directories.")],
    data: Annotated[
        Path | None, typer.Option("--data", "-d", help="Evaluate on another dataset.")
    ] = None,
    multi_step: Annotated[int, typer.Option(help="Multi-step horizon n (0: off).")] = 10,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
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
    for run_dir in run_dirs:
        try:
            r = evaluate_run(run_dir, data=data, multi_step=multi_step, device=device)
        except (CheckpointError, FileNotFoundError, ValueError) as exc:
            console.print(f"[red]error:[/red] {run_dir}: {exc}")
            raise typer.Exit(code=2) from exc
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


def sample_path(name: str) -> Path:
    """A bundled sample dataset (see tutor/sample/README.md)."""
    from importlib.resources import files

    return Path(str(files("tutor") / "sample" / name))


@app.command("demo")
def demo_cmd(
    workdir: Annotated[Path, typer.Option(help="Where the demo writes its files.")] = Path("demo"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Run the demo: ingest the bundled ASSISTments 2009 sample and summarise it."""
    dataset = workdir / "assist2009_sample"
    progress = RichProgress(enabled=not quiet)
    try:
        manifest = ingest(
            "four-line",
            sample_path("assist2009_pid"),
            dataset,
            overwrite=True,
            progress=progress,
        )
    finally:
        progress.finish()
    c = manifest.counts
    out.print(
        f"ingested the bundled ASSISTments 2009 sample: {c['rows_read']:,} rows -> "
        f"{c['interactions']:,} interactions into {dataset}"
    )
    dataset_info(dataset, as_json=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
