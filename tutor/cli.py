"""The ``tutor`` command line (Typer)."""

from __future__ import annotations

import json
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
out = Console(soft_wrap=True)


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
