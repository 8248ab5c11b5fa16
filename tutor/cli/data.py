"""``tutor ingest``, ``formats``, ``dataset info`` and ``import``: from a source log to a
canonical Parquet dataset, and from the dataset into an organisation of the service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from data_loaders import FORMATS, DatasetError, IngestError, get_loader, ingest, open_dataset
from data_loaders.progress import RichProgress

from .common import DatabaseUrl, OrgOption, console, db_session, fail, name_values, out

dataset_app = typer.Typer(help="Inspect canonical Parquet datasets.", no_args_is_help=True)


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
            options=name_values(option, "--option"),
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


def import_cmd(
    dataset_dir: Annotated[Path, typer.Argument(help="Dataset directory (tutor ingest).")],
    org: OrgOption,
    create_org: Annotated[
        bool, typer.Option("--create-org", help="Create the organisation if it does not exist.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Import a canonical dataset (concepts, items, learners, answers) into an organisation.

    Idempotent: answers already imported are skipped. Learner states are rebuilt lazily, or
    now with 'tutor states rebuild'."""
    from tutor.importer import import_dataset

    progress = RichProgress(enabled=not quiet)
    try:
        with db_session(database_url) as s:
            try:
                c = import_dataset(
                    s,
                    org_slug=org,
                    dataset_dir=dataset_dir,
                    create_org=create_org,
                    progress=progress,
                )
            except DatasetError as exc:
                fail(str(exc))
    finally:
        progress.finish()
    out.print(
        f"imported {dataset_dir} into {org!r}: {c['interactions']:,} answers "
        f"({c['skipped']:,} already stored), {c['learners']:,} new learners, "
        f"{c['items']:,} new items, {c['concepts']:,} new concepts, "
        f"{c['item_concepts']:,} item-concept links in {c['seconds']:.1f} s",
        highlight=False,
    )
    if c["synthetic_timestamps"] or c["filled_timestamps"]:
        out.print(
            f"  timestamps: {c['synthetic_timestamps']:,} synthetic (learners without a clock), "
            f"{c['filled_timestamps']:,} filled from a neighbour",
            highlight=False,
        )
