"""Ingest every real dataset in ../shared/data and compare the counts with their READMEs.

Usage: python benchmarks/ingest_all.py [--data ../shared/data] [--out DIR]

Prints one table: format, input, learners, rows read, interactions, items, concepts,
rejected, seconds, rows/s, and the count the dataset's README states (OK / MISMATCH).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from data_loaders import Dataset, ingest

ROOT = Path(__file__).resolve().parents[1]

QUESTIONS = "ednet/contents/questions.csv.gz"  # the EdNet answer key, under the data directory


@dataclass(frozen=True)
class Case:
    """One dataset to ingest and the counts its README states."""

    label: str
    format: str
    path: str  # under the data directory
    expected: dict[str, float]
    kwargs: dict[str, Any] = field(default_factory=dict)  # more ingest() arguments


def sequences(label: str, fmt: str, path: str, learners: int, rows: int, concepts: int) -> Case:
    """A benchmark file whose README states learners, interactions and concepts."""
    return Case(
        label, fmt, path, {"learners": learners, "interactions": rows, "concepts": concepts}
    )


def ednet(label: str, fmt: str, path: str, **expected: float) -> Case:
    """EdNet logs, with questions.csv as the answer key."""
    return Case(label, fmt, path, expected, {"concepts": QUESTIONS})


CASES: list[Case] = [
    Case(
        "ASSIST09 AKT pid",
        "four-line",
        "assist2009/akt_assist2009_pid",
        {
            "learners": 4151,
            "rows_read": 325637,
            "items": 16891,
            "concepts": 110,
            "interactions": 274590,
            "multi_skill_rows_merged": 51047,
        },
    ),
    Case(
        "ASSIST09 AKT pid --keep-expanded",
        "four-line",
        "assist2009/akt_assist2009_pid",
        {"interactions": 325637},
        {"keep_expanded": True},
    ),
    sequences(
        "ASSIST09 DKVMN", "three-line", "assist2009/dkvmn_assist2009_updated", 4151, 325637, 110
    ),
    sequences("ASSIST09 DKT builder", "three-line", "assist2009/dkt_builder", 4217, 525534, 124),
    Case(
        "ASSIST09 tabular + q_mat",
        "tabular",
        "assist2009/theophilee_tabular",
        {"learners": 3114, "interactions": 278336, "items": 17708, "concepts": 123},
    ),
    sequences("ASSIST15 DKVMN", "three-line", "assist2015/dkvmn", 19840, 683801, 100),
    sequences("ASSIST15 AKT folds", "three-line", "assist2015/akt_folds", 19840, 683801, 100),
    sequences("ASSIST15 pyKT split", "pykt", "assist2015/pykt_split", 15275 + 3818, 682797, 100),
    sequences(
        "DKT synthetic-5 v0",
        "dkt-synthetic",
        "synthetic/dkt_naive_c5/naive_c5_q50_s4000_v0.csv.gz",
        4000,
        200000,
        5,
    ),
    # every version draws its own concepts, so ids are namespaced per file (2 x 20)
    Case(
        "DKT synthetic-2 (20 files)",
        "dkt-synthetic",
        "synthetic/dkt_naive_c2",
        {"learners": 80000, "interactions": 4000000, "items": 20 * 50, "concepts": 20 * 2},
    ),
    ednet(
        "EdNet KT1 u1",
        "ednet-kt1",
        "ednet/KT1_raw",
        learners=1,
        interactions=1082,
        correct_rate=0.6959,
    ),
    ednet(
        "EdNet KT1 reconstructed",
        "ednet-kt1",
        "ednet/KT1_reconstructed",
        learners=16,
        interactions=173264,
        correct_rate=0.7231,
    ),
    ednet("EdNet KT4", "ednet-kt4", "ednet/KT4_raw", learners=9),
]


def check(key: str, want: float, got: Any) -> str:
    """``key=want``, in red with what was got when it differs."""
    shown = f"{key}={want:,}" if isinstance(want, int) else f"{key}={want}"
    return shown if got == want else f"[red]{shown} (got {got})[/red]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=None, help="keep datasets here (default: temp)")
    args = ap.parse_args(argv)
    out_root = args.out or Path(tempfile.mkdtemp(prefix="kt-ingest-all-"))
    console = Console(width=260)
    table = Table(title=f"Ingesting {args.data}")
    for col in (
        "dataset",
        "format",
        "learners",
        "rows read",
        "interactions",
        "items",
        "concepts",
        "correct",
        "rejected",
        "s",
        "rows/s",
        "README counts",
    ):
        table.add_column(col, justify="right" if col not in ("dataset", "format") else "left")
    failures = 0
    for i, case in enumerate(CASES):
        src = args.data / case.path
        if not src.exists():
            table.add_row(case.label, case.format, *["-"] * 9, "absent")
            continue
        kw = dict(case.kwargs)
        if "concepts" in kw:
            kw["concepts"] = args.data / kw["concepts"]
        out = out_root / f"{i:02d}"
        t0 = time.perf_counter()
        try:
            ingest(case.format, src, out, overwrite=True, **kw)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            failures += 1
            table.add_row(case.label, case.format, *["-"] * 9, f"[red]ERROR {exc}[/red]")
            continue
        secs = time.perf_counter() - t0
        info = Dataset.open(out).info()
        checks = [check(key, want, info.get(key)) for key, want in case.expected.items()]
        failures += sum(info.get(key) != want for key, want in case.expected.items())
        table.add_row(
            case.label,
            case.format,
            f"{info['learners']:,}",
            f"{info['rows_read']:,}",
            f"{info['interactions']:,}",
            f"{info['items']:,}",
            f"{info['concepts']:,}",
            f"{info['correct_rate']}",
            f"{info['rejected']:,}",
            f"{secs:.2f}",
            f"{info['rows_read'] / secs:,.0f}",
            "OK " + ", ".join(checks)
            if all("[red]" not in c for c in checks)
            else "MISMATCH " + ", ".join(checks),
        )
    console.print(table)
    console.print(f"datasets written under {out_root}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
