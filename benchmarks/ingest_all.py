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
from pathlib import Path

from rich.console import Console
from rich.table import Table

from data_loaders import Dataset, ingest

ROOT = Path(__file__).resolve().parents[1]

# (label, format, path under data/, kwargs, expected {key: value} from the READMEs)
CASES: list[tuple[str, str, str, dict, dict]] = [
    (
        "ASSIST09 AKT pid",
        "four-line",
        "assist2009/akt_assist2009_pid",
        {},
        {
            "learners": 4151,
            "rows_read": 325637,
            "items": 16891,
            "concepts": 110,
            "interactions": 274590,
            "multi_skill_rows_merged": 51047,
        },
    ),
    (
        "ASSIST09 AKT pid --keep-expanded",
        "four-line",
        "assist2009/akt_assist2009_pid",
        {"keep_expanded": True},
        {"interactions": 325637},
    ),
    (
        "ASSIST09 DKVMN",
        "three-line",
        "assist2009/dkvmn_assist2009_updated",
        {},
        {"learners": 4151, "interactions": 325637, "concepts": 110},
    ),
    (
        "ASSIST09 DKT builder",
        "three-line",
        "assist2009/dkt_builder",
        {},
        {"learners": 4217, "interactions": 525534, "concepts": 124},
    ),
    (
        "ASSIST09 tabular + q_mat",
        "tabular",
        "assist2009/theophilee_tabular",
        {},
        {"learners": 3114, "interactions": 278336, "items": 17708, "concepts": 123},
    ),
    (
        "ASSIST15 DKVMN",
        "three-line",
        "assist2015/dkvmn",
        {},
        {"learners": 19840, "interactions": 683801, "concepts": 100},
    ),
    (
        "ASSIST15 AKT folds",
        "three-line",
        "assist2015/akt_folds",
        {},
        {"learners": 19840, "interactions": 683801, "concepts": 100},
    ),
    (
        "ASSIST15 pyKT split",
        "pykt",
        "assist2015/pykt_split",
        {},
        {"learners": 15275 + 3818, "interactions": 682797, "concepts": 100},
    ),
    (
        "DKT synthetic-5 v0",
        "dkt-synthetic",
        "synthetic/dkt_naive_c5/naive_c5_q50_s4000_v0.csv.gz",
        {},
        {"learners": 4000, "interactions": 200000, "concepts": 5},
    ),
    (
        "DKT synthetic-2 (20 files)",
        "dkt-synthetic",
        "synthetic/dkt_naive_c2",
        {},
        # every version draws its own concepts, so ids are namespaced per file (2 x 20)
        {"learners": 80000, "interactions": 4000000, "items": 20 * 50, "concepts": 20 * 2},
    ),
    (
        "EdNet KT1 u1",
        "ednet-kt1",
        "ednet/KT1_raw",
        {"concepts": "ednet/contents/questions.csv.gz"},
        {"learners": 1, "interactions": 1082, "correct_rate": 0.6959},
    ),
    (
        "EdNet KT1 reconstructed",
        "ednet-kt1",
        "ednet/KT1_reconstructed",
        {"concepts": "ednet/contents/questions.csv.gz"},
        {"learners": 16, "interactions": 173264, "correct_rate": 0.7231},
    ),
    (
        "EdNet KT4",
        "ednet-kt4",
        "ednet/KT4_raw",
        {"concepts": "ednet/contents/questions.csv.gz"},
        {"learners": 9},
    ),
]


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
    for i, (label, fmt, rel, kwargs, expected) in enumerate(CASES):
        src = args.data / rel
        if not src.exists():
            table.add_row(label, fmt, *["-"] * 9, "absent")
            continue
        kw = dict(kwargs)
        if "concepts" in kw:
            kw["concepts"] = args.data / kw["concepts"]
        out = out_root / f"{i:02d}"
        t0 = time.perf_counter()
        try:
            ingest(fmt, src, out, overwrite=True, **kw)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            failures += 1
            table.add_row(label, fmt, *["-"] * 9, f"[red]ERROR {exc}[/red]")
            continue
        secs = time.perf_counter() - t0
        info = Dataset.open(out).info()
        checks = []
        for key, want in expected.items():
            got = info.get(key)
            ok = got == want
            checks.append(
                ("" if ok else "[red]") + f"{key}={want:,}" + ("" if ok else f" (got {got})[/red]")
                if isinstance(want, int)
                else ("" if ok else "[red]")
                + f"{key}={want}"
                + ("" if ok else f" (got {got})[/red]")
            )
            failures += not ok
        table.add_row(
            label,
            fmt,
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
