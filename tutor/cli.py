"""The ``tutor`` command line (Typer)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from data_loaders import FORMATS, DatasetError, IngestError, get_loader, ingest, open_dataset
from data_loaders.progress import RichProgress
from kt_models.registry import names_text
from tutor import sim_cli as _sim_cli

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

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
        try:
            v = train_option(k, v)
        except ValueError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(code=2) from None
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
    except (KeyError, ValueError, DatasetError, CheckpointError) as exc:
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
            _fail(f"--plot {plot}: {exc}")


@app.command("compare")
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
        _fail(f"--boot must be at least 1, got {boot}")
    table = Table(title=f"Test AUC, A - B, paired bootstrap over learners ({boot} replicates)")
    for col in ("A", "B", "learners", "AUC A", "AUC B", "A - B", "95% interval", "P(A - B <= 0)"):
        table.add_column(col, justify="left" if col in ("A", "B") else "right")
    try:
        rows = compare_runs(run_a, run_b, n_boot=boot, seed=seed, device=device)
    except (CheckpointError, DatasetError, OSError, ValueError, KeyError) as exc:
        _fail(f"{exc}")
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


@app.command("report")
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
        _fail(f"{run_dir}: run directory not found")
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
        _fail(f"{run_dir}: {exc}")
    out.print(str(page), highlight=False)


def sample_path(name: str) -> Path:
    """A bundled sample dataset (see tutor/sample/README.md)."""
    from importlib.resources import files

    return Path(str(files("tutor") / "sample" / name))


@app.command("demo")
def demo_cmd(
    workdir: Annotated[Path, typer.Option(help="Where the demo writes its files.")] = Path("demo"),
    host: Annotated[str, typer.Option(help="Interface to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8000,
    epochs: Annotated[int, typer.Option(help="Training epochs (early stopping applies).")] = 20,
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Serve after building (default).")
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """The main job: ingest the bundled ASSISTments 2009 sample, train a small DKT on CPU, load
    everything into a fresh SQLite database, create demo API keys and serve the API."""
    import os

    from tutor.demo import build_demo, try_urls

    progress = RichProgress(enabled=not quiet)
    try:
        demo = build_demo(
            workdir,
            epochs=epochs,
            progress=progress,
            say=lambda m: out.print(m, highlight=False),
            train_progress=not quiet,
        )
    finally:
        progress.finish()
    base = f"http://{host}:{port}"
    out.print(
        f"6/6 serving on {base} (Ctrl-C stops); try:\n{try_urls(base, demo)}", highlight=False
    )
    if not serve:
        return
    import uvicorn

    os.environ["DATABASE_URL"] = demo["database_url"]
    from tutor.settings import get_settings

    get_settings.cache_clear()
    uvicorn.run("tutor.api.app:create_app", factory=True, host=host, port=port)


# ====================================================================== the service
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
orgs_app = typer.Typer(help="Organisations.", no_args_is_help=True)
models_app = typer.Typer(help="Registered models of an organisation.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (shown once, never stored).", no_args_is_help=True)
states_app = typer.Typer(help="Learner states.", no_args_is_help=True)
prereq_app = typer.Typer(help="The prerequisite graph of the concepts.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(orgs_app, name="orgs")
app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")
app.add_typer(states_app, name="states")
app.add_typer(prereq_app, name="prerequisites")

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL of the database (default: DATABASE_URL / the settings).",
        show_default=False,
    ),
]
OrgOption = Annotated[str, typer.Option("--org", help="Organisation slug.")]


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    raise typer.Exit(code=2)


def _url(database_url: str | None) -> str:
    if database_url:
        return database_url
    from tutor.settings import Settings

    try:
        return Settings().database_url
    except ValueError as exc:  # pydantic's ValidationError: a bad environment
        _fail(f"settings: {exc}")


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as given
        return url


def _db_error(url: str, exc: Exception) -> NoReturn:
    orig = getattr(exc, "orig", None) or exc
    msg = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    hint = ""
    if "no such table" in msg or ("relation" in msg and "does not exist" in msg):
        hint = " (is the schema there? run: tutor db upgrade)"
    _fail(f"database {_safe(url)}: {msg}{hint}")


@contextmanager
def _session(database_url: str | None) -> Iterator[Session]:
    """A session on the database in one transaction (commits on success); operation and
    database errors end the command with exit code 2."""
    from sqlalchemy.exc import SQLAlchemyError

    from tutor.db import create_db_engine, make_sessionmaker
    from tutor.operations import OperationError

    url = _url(database_url)
    try:
        engine = create_db_engine(url)
    except (SQLAlchemyError, ValueError) as exc:
        _db_error(url, exc)
    try:
        with make_sessionmaker(engine)() as session, session.begin():
            yield session
    except OperationError as exc:
        _fail(str(exc))
    except SQLAlchemyError as exc:
        _db_error(url, exc)
    finally:
        engine.dispose()


def _org(session: Session, slug: str) -> Any:
    from tutor.operations import get_org

    return get_org(session, slug)


def _when(dt: Any) -> str:
    return "-" if dt is None else dt.strftime("%Y-%m-%d %H:%M")


# ---------------------------------------------------------------------- db
def _alembic(action: str, url: str, revision: str | None = None) -> str | None:
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from tutor.db import migrate

    try:
        if action == "upgrade":
            migrate.upgrade(url, revision or "head")
        elif action == "downgrade":
            migrate.downgrade(url, revision or "base")
        return migrate.current(url)
    except CommandError as exc:
        _fail(f"migration: {exc}")
    except SQLAlchemyError as exc:
        _db_error(url, exc)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    database_url: DatabaseUrl = None,
) -> None:
    """Upgrade the schema to REVISION (default: the newest)."""
    url = _url(database_url)
    rev = _alembic("upgrade", url, revision)
    out.print(f"database {_safe(url)} at revision {rev or 'base (empty)'}", highlight=False)


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision ('base': drop everything).")],
    database_url: DatabaseUrl = None,
) -> None:
    """Downgrade the schema to REVISION."""
    url = _url(database_url)
    rev = _alembic("downgrade", url, revision)
    out.print(f"database {_safe(url)} at revision {rev or 'base (empty)'}", highlight=False)


@db_app.command("current")
def db_current(database_url: DatabaseUrl = None) -> None:
    """Print the schema's current revision."""
    url = _url(database_url)
    rev = _alembic("current", url)
    out.print(rev or "base (no schema)", highlight=False)


# ---------------------------------------------------------------------- orgs
@orgs_app.command("create")
def orgs_create(
    slug: Annotated[str, typer.Argument(help="Short unique id, e.g. acme.")],
    name: Annotated[str | None, typer.Option(help="Display name (default: the slug).")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an organisation."""
    from tutor.operations import create_org

    with _session(database_url) as s:
        org = create_org(s, slug=slug, name=name)
        out.print(f"created organisation {org.slug!r} (id {org.id}, {org.name})", highlight=False)


@orgs_app.command("list")
def orgs_list(database_url: DatabaseUrl = None) -> None:
    """List the organisations."""
    from sqlalchemy import func, select

    from tutor.db import Learner, ModelVersion, Organisation

    with _session(database_url) as s:
        n_learners = {
            o: n
            for o, n in s.execute(select(Learner.org_id, func.count()).group_by(Learner.org_id))
        }
        n_models = {
            o: n
            for o, n in s.execute(
                select(ModelVersion.org_id, func.count()).group_by(ModelVersion.org_id)
            )
        }
        table = Table(title="Organisations")
        for col in ("slug", "name", "learners", "models", "active model", "created"):
            table.add_column(col, justify="right" if col in ("learners", "models") else "left")
        for org in s.scalars(select(Organisation).order_by(Organisation.slug)):
            table.add_row(
                org.slug,
                org.name,
                f"{n_learners.get(org.id, 0):,}",
                str(n_models.get(org.id, 0)),
                "-" if org.active_model_id is None else str(org.active_model_id),
                _when(org.created_at),
            )
    out.print(table)


# ---------------------------------------------------------------------- import
@app.command("import")
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
        with _session(database_url) as s:
            try:
                c = import_dataset(
                    s,
                    org_slug=org,
                    dataset_dir=dataset_dir,
                    create_org=create_org,
                    progress=progress,
                )
            except DatasetError as exc:
                _fail(str(exc))
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


# ---------------------------------------------------------------------- models
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
        _fail(f"run directory {run_dir} does not exist")
    try:
        ids = read_mapping(mapping) if mapping is not None else None
    except OperationError as exc:
        _fail(str(exc))
    with _session(database_url) as s:
        mv = register_model(
            s, org=_org(s, org), run_dir=run_dir, label=label, activate=activate, mapping=ids
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

    with _session(database_url) as s:
        o = _org(s, org)
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
                _when(mv.created_at),
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

    with _session(database_url) as s:
        mv = activate_model(s, org=_org(s, org), model_id=model_id)
        out.print(f"model {mv.id} ({mv.name}) is now active in {org!r}", highlight=False)


# ---------------------------------------------------------------------- keys
@keys_app.command("create")
def keys_create(
    org: OrgOption,
    role: Annotated[str, typer.Option(help="admin, teacher, learner or ingest.")],
    learner: Annotated[
        str | None, typer.Option(help="A learner key's learner (external id).")
    ] = None,
    group: Annotated[
        list[str] | None, typer.Option("--group", help="A teacher key's group (repeatable).")
    ] = None,
    name: Annotated[str, typer.Option(help="What the key is for.")] = "",
    database_url: DatabaseUrl = None,
) -> None:
    """Create an API key and print it once (it is not stored: keep it now)."""
    from sqlalchemy import select

    from tutor.db import Group, Learner
    from tutor.security import ROLES, create_key
    from tutor.settings import Settings

    if role not in ROLES:
        _fail(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    try:
        pepper = Settings().key_pepper
    except ValueError as exc:
        _fail(f"settings: {exc}")
    with _session(database_url) as s:
        o = _org(s, org)
        lr = None
        if learner is not None:
            lr = s.scalar(
                select(Learner).where(Learner.org_id == o.id, Learner.external_id == learner)
            )
            if lr is None:
                _fail(f"learner {learner!r} does not exist in organisation {org!r}")
        groups = []
        for g in group or []:
            row = s.scalar(select(Group).where(Group.org_id == o.id, Group.external_id == g))
            if row is None:
                _fail(f"group {g!r} does not exist in organisation {org!r}")
            groups.append(row)
        try:
            key, row = create_key(
                s, org=o, role=role, pepper=pepper, learner=lr, groups=groups, name=name
            )
        except ValueError as exc:
            _fail(str(exc))
        prefix = row.prefix
    out.print(key, highlight=False, soft_wrap=True)
    console.print(
        f"created {role} key {prefix} in {org!r}. [bold]This is the only time the key is "
        "shown[/bold]: it is not stored (only its hash is), so keep it now.",
        highlight=False,
    )


def _scope(row: Any, learner_ext: str | None) -> str:
    if row.role == "learner":
        return f"learner {learner_ext}"
    if row.role == "teacher":
        return "groups " + ", ".join(sorted(g.external_id for g in row.groups))
    return "organisation"


@keys_app.command("list")
def keys_list(org: OrgOption, database_url: DatabaseUrl = None) -> None:
    """List an organisation's API keys (prefix, role, scope; never the key)."""
    from sqlalchemy import select

    from tutor.db import ApiKey, Learner

    with _session(database_url) as s:
        o = _org(s, org)
        table = Table(title=f"API keys of {org}")
        for col in ("prefix", "role", "scope", "name", "created", "revoked"):
            table.add_column(col)
        rows = s.execute(
            select(ApiKey, Learner.external_id)
            .outerjoin(Learner, Learner.id == ApiKey.learner_id)
            .where(ApiKey.org_id == o.id)
            .order_by(ApiKey.created_at, ApiKey.id)
        ).all()
        for key, learner_ext in rows:
            table.add_row(
                key.prefix,
                key.role,
                _scope(key, learner_ext),
                key.name,
                _when(key.created_at),
                _when(key.revoked_at) if key.revoked_at else "",
            )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    prefix: Annotated[str, typer.Argument(help="The key's prefix (tutor keys list).")],
    org: OrgOption,
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke an API key. A service process that has not seen the key refuses it at once;
    one that authenticated it recently keeps accepting it for at most
    TUTOR_AUTH_CACHE_SECONDS (30 s by default; 0 turns that cache off)."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from tutor.db import ApiKey

    with _session(database_url) as s:
        o = _org(s, org)
        key = s.scalar(select(ApiKey).where(ApiKey.org_id == o.id, ApiKey.prefix == prefix))
        if key is None:
            _fail(f"no API key with prefix {prefix!r} in organisation {org!r}")
        if key.revoked_at is not None:
            out.print(f"key {prefix} was already revoked ({_when(key.revoked_at)})")
            return
        key.revoked_at = datetime.now(UTC)
    from tutor.settings import Settings

    ttl = Settings().auth_cache_seconds
    out.print(
        f"revoked key {prefix} of {org!r}; running service processes refuse it within "
        f"{ttl:g} s (TUTOR_AUTH_CACHE_SECONDS)",
        highlight=False,
    )


# ---------------------------------------------------------------------- states
@states_app.command("rebuild")
def states_rebuild(
    org: OrgOption,
    model: Annotated[
        int | None, typer.Option("--model", help="Model id (default: the active model).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Rebuild every learner's state for a model now (instead of lazily, learner by learner)."""
    import time

    from sqlalchemy import func, select

    from tutor.db import Learner
    from tutor.operations import rebuild_states

    progress = RichProgress(enabled=not quiet)
    t0 = time.perf_counter()
    try:
        with _session(database_url) as s:
            o = _org(s, org)
            if model is None and o.active_model_id is None:
                _fail(
                    f"organisation {org!r} has no active model (register one: tutor models "
                    f"register RUN_DIR --org {org} --activate, or name one with --model)"
                )
            total = s.scalar(
                select(func.count()).select_from(Learner).where(Learner.org_id == o.id)
            )
            progress.start("rebuilding learner states", total)
            n = rebuild_states(s, org=o, model_id=model, progress=progress.advance)
            mid = model or o.active_model_id
    finally:
        progress.finish()
    out.print(
        f"rebuilt {n:,} learner states of {org!r} for model {mid} in "
        f"{time.perf_counter() - t0:.1f} s",
        highlight=False,
    )


# ---------------------------------------------------------------------- prerequisites
def _read_edges(path: Path, names: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """``prerequisite,concept`` CSV rows, a JSON list of pairs (or of objects with those
    keys), or Junyi Academy's exercise table (columns ``name`` and ``prerequisites``, a
    comma-separated list; display names from ``pretty_display_name`` go into ``names``)."""
    import csv

    if not path.is_file():
        _fail(f"prerequisite file {path} does not exist")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            _fail(f"{path}: not valid JSON ({exc})")
        if not isinstance(data, list):
            _fail(f"{path}: expected a JSON list of [prerequisite, concept] pairs")
        edges = []
        for k, e in enumerate(data):
            if isinstance(e, dict) and {"prerequisite", "concept"} <= e.keys():
                edges.append((str(e["prerequisite"]), str(e["concept"])))
            elif isinstance(e, (list, tuple)) and len(e) == 2:
                edges.append((str(e[0]), str(e[1])))
            else:
                _fail(f"{path}: entry {k} is not a [prerequisite, concept] pair: {e!r}")
        return edges
    reader = csv.DictReader(text.splitlines())
    cols = {c.strip().lower(): c for c in reader.fieldnames or []}
    if {"name", "prerequisites"} <= cols.keys():  # Junyi's exercise table
        edges = []
        for row in reader:
            name = (row.get(cols["name"]) or "").strip()
            if not name:
                continue
            if names is not None and "pretty_display_name" in cols:
                names[name] = (row.get(cols["pretty_display_name"]) or "").strip()
            for pre in (row.get(cols["prerequisites"]) or "").split(","):
                if pre.strip():
                    edges.append((pre.strip(), name))
        return edges
    if not {"prerequisite", "concept"} <= cols.keys():
        _fail(
            f"{path}: expected CSV columns prerequisite,concept; found "
            f"{', '.join(reader.fieldnames or []) or 'none'}"
        )
    edges = []
    for line, row in enumerate(reader, start=2):
        a, b = (
            (row.get(cols["prerequisite"]) or "").strip(),
            (row.get(cols["concept"]) or "").strip(),
        )
        if not a or not b:
            _fail(f"{path}:{line}: empty prerequisite or concept")
        edges.append((a, b))
    return edges


@prereq_app.command("load")
def prerequisites_load(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV (prerequisite,concept), JSON pairs, or Junyi's exercise table "
            "(name,prerequisites,...)."
        ),
    ],
    org: OrgOption,
    append: Annotated[
        bool, typer.Option("--append", help="Add to the graph instead of replacing it.")
    ] = False,
    create_concepts: Annotated[
        bool,
        typer.Option(
            "--create-concepts", help="Create concepts the file names that do not exist yet."
        ),
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Set the organisation's prerequisite graph (a cycle or unknown concept changes nothing)."""
    from sqlalchemy import select
    from sqlalchemy.orm import aliased

    from tutor.db import Concept, PrerequisiteEdge
    from tutor.operations import set_prerequisites

    names: dict[str, str] = {}
    edges = _read_edges(file, names)
    with _session(database_url) as s:
        o = _org(s, org)
        if create_concepts:
            from tutor.operations import upsert_concepts

            ids = dict.fromkeys([c for e in edges for c in e] + list(names))
            upsert_concepts(s, org=o, concepts=[(c, names.get(c, "")) for c in ids])
        have: list[tuple[str, str]] = []
        if append:  # validated as one graph with the edges already there (cycles included)
            pre, post = aliased(Concept), aliased(Concept)
            have = [
                (a, b)
                for a, b in s.execute(
                    select(pre.external_id, post.external_id)
                    .select_from(PrerequisiteEdge)
                    .join(pre, pre.id == PrerequisiteEdge.prerequisite_id)
                    .join(post, post.id == PrerequisiteEdge.concept_id)
                    .where(PrerequisiteEdge.org_id == o.id)
                )
            ]
        n = set_prerequisites(s, org=o, edges=[*have, *edges], replace=True)
    out.print(
        f"{org!r} now has {n:,} prerequisite edges"
        + (f" ({n - len(set(have)):,} added)" if append else ""),
        highlight=False,
    )


# ---------------------------------------------------------------------- serve
@app.command("serve")
def serve_cmd(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1)] = 1,
    migrate: Annotated[
        bool, typer.Option("--migrate/--no-migrate", help="Run 'tutor db upgrade' first.")
    ] = True,
    database_url: DatabaseUrl = None,
) -> None:
    """Serve the HTTP API (uvicorn; the settings come from the environment / .env)."""
    import os

    import uvicorn

    url = _url(database_url)
    if migrate:
        rev = _alembic("upgrade", url, "head")
        console.print(f"database {_safe(url)} at revision {rev}", highlight=False)
    os.environ["DATABASE_URL"] = url  # the workers read their settings from the environment
    from tutor.settings import get_settings

    get_settings.cache_clear()
    uvicorn.run("tutor.api.app:create_app", factory=True, host=host, port=port, workers=workers)


# simulated learners and policy evaluation (tutor/sim_cli.py)
app.add_typer(_sim_cli.simulate_app, name="simulate")
app.command("policy-eval")(_sim_cli.policy_eval_cmd)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
