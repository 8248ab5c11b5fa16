"""Ingest speed: the ``ednet-kt1`` loader against a plain pandas baseline.

Generates an EdNet-KT1-shaped directory (one ``u<id>.csv`` per learner with the KT1 header
``timestamp,solving_id,question_id,user_answer,elapsed_time``, plus an EdNet-Contents-shaped
``questions.csv``), then runs, each in its own subprocess so that peak memory is measured per
phase (``ru_maxrss`` of that process, interpreter and imports included):

* ours: ``data_loaders.ingest("ednet-kt1", ...)``, the whole pipeline to a Parquet dataset
  (parse, answer key join, correctness, concept tags, per-learner sort, seq, Parquet write);
* baseline: ``pandas.read_csv`` per file + ``concat``, then a merge with questions.csv and
  ``correct = user_answer == correct_answer`` (no tag lists, no sorting, nothing written).

Peak memory is each subprocess's ``VmHWM``. The CPU column is user + system seconds of all
the phase's threads: on a busy machine it is steadier than the wall-clock seconds.

Seconds are wall-clock seconds of the work inside each subprocess (imports excluded). The
page cache is warm for both (the generator has just written the files).

    python benchmarks/ingest_speed.py                      # 5M rows, 20,000 files
    python benchmarks/ingest_speed.py --rows 200000 --users 1000 --keep --workdir /tmp/kt1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HEADER = b"timestamp,solving_id,question_id,user_answer,elapsed_time\n"
CHOICES = np.array(["a", "b", "c", "d"])


# ---------------------------------------------------------------------- generator
def make_questions(path: Path, n: int, rng: np.random.Generator) -> None:
    """An EdNet-Contents-shaped questions.csv with ``n`` questions and 1-4 tags each."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    ids = np.arange(1, n + 1)
    bundles = np.maximum(1, (ids + rng.integers(0, 3, n)) // 2)
    ntags = rng.integers(1, 5, n)
    flat = rng.integers(1, 189, ntags.sum()).astype(str)
    ends = np.cumsum(ntags)
    tags = [";".join(flat[e - k : e]) for e, k in zip(ends, ntags, strict=True)]
    table = pa.table(
        {
            "question_id": [f"q{i}" for i in ids],
            "bundle_id": [f"b{b}" for b in bundles],
            "explanation_id": [f"e{b}" for b in bundles],
            "correct_answer": CHOICES[rng.integers(0, 4, n)],
            "part": rng.integers(1, 8, n),
            "tags": tags,
            "deployed_at": 1558093217098 + np.arange(n, dtype=np.int64) * 2500,
        }
    )
    pacsv.write_csv(table, path, write_options=pacsv.WriteOptions(quoting_style="none"))


def generate(
    root: Path, rows: int, users: int, seed: int = 0, questions: Path | None = None
) -> Path:
    """Write ``users`` KT1 files with ``rows`` answers in all under ``root/KT1``."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    qpath = root / "questions.csv"
    if questions is not None:
        shutil.copyfile(questions, qpath)
    else:
        make_questions(qpath, 13169, rng)
    qtab = pd.read_csv(qpath, dtype=str)
    qids = qtab["question_id"].to_numpy(dtype=object)
    keys = qtab["correct_answer"].to_numpy(dtype=object)

    # learners' history lengths: skewed like EdNet's, summing to exactly ``rows``
    w = rng.lognormal(0.0, 1.0, users)
    counts = np.maximum(1, np.floor(w / w.sum() * rows).astype(np.int64))
    diff = rows - int(counts.sum())
    while diff != 0:
        i = rng.integers(0, users, abs(diff))
        np.add.at(counts, i, 1 if diff > 0 else -1)
        counts = np.maximum(counts, 1)
        diff = rows - int(counts.sum())
    starts = np.cumsum(counts) - counts
    owner = np.repeat(np.arange(users), counts)
    pos = np.arange(rows, dtype=np.int64) - starts[owner]

    gaps = rng.integers(3_000, 180_000, rows, dtype=np.int64)
    gaps[starts] = 0
    csum = np.cumsum(gaps)
    first = rng.integers(1_500_000_000_000, 1_570_000_000_000, users, dtype=np.int64)
    ts = first[owner] + csum - csum[starts][owner]
    qi = rng.integers(0, len(qids), rows)
    right = rng.random(rows) < 0.7
    key_idx = pd.Series(keys[qi]).map({"a": 0, "b": 1, "c": 2, "d": 3}).to_numpy()
    wrong = (key_idx + rng.integers(1, 4, rows)) % 4
    answer = CHOICES[np.where(right, key_idx, wrong)]
    table = pa.table(
        {
            "timestamp": ts,
            "solving_id": pos + 1,
            "question_id": pa.array(qids, pa.string()).take(pa.array(qi)),
            "user_answer": answer,
            "elapsed_time": rng.integers(1, 90, rows, dtype=np.int64) * 1000,
        }
    )
    sink = pa.BufferOutputStream()
    pacsv.write_csv(
        table,
        sink,
        write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"),
    )
    buf = sink.getvalue().to_pybytes()
    del table, sink
    nl = np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == 10)
    ends = nl[np.cumsum(counts) - 1] + 1
    begins = np.r_[0, ends[:-1]]
    data = root / "KT1"
    data.mkdir(exist_ok=True)
    mv = memoryview(buf)
    for u, (b, e) in enumerate(zip(begins.tolist(), ends.tolist(), strict=True)):
        with open(data / f"u{u + 1}.csv", "wb") as fh:
            fh.write(HEADER)
            fh.write(mv[b:e])
    shutil.move(str(qpath), data / "questions.csv")
    return data


# ---------------------------------------------------------------------- phases
def phase_ours(data: Path, out: Path, chunk_mb: int) -> dict:
    from data_loaders import ingest

    c0, t0 = _cpu(), time.perf_counter()
    manifest = ingest("ednet-kt1", data, out, overwrite=True, options={"chunk_mb": chunk_mb})
    seconds = time.perf_counter() - t0
    return {"rows": manifest.counts["interactions"], "seconds": seconds, "cpu": _cpu() - c0}


def phase_baseline(data: Path) -> dict:
    import pandas as pd

    c0, t0 = _cpu(), time.perf_counter()
    frames = []
    for p in sorted(data.glob("u*.csv")):
        df = pd.read_csv(p)
        df["user_id"] = p.stem
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    q = pd.read_csv(data / "questions.csv", usecols=["question_id", "correct_answer", "tags"])
    df = df.merge(q, on="question_id", how="left")
    df["correct"] = (df["user_answer"] == df["correct_answer"]).astype("int8")
    seconds = time.perf_counter() - t0
    return {"rows": len(df), "seconds": seconds, "cpu": _cpu() - c0}


def peak_rss_mb() -> float:
    """Peak resident memory of this process.

    ``VmHWM`` (per address space, reset at exec), not ``ru_maxrss``: on Linux a child's
    ``ru_maxrss`` keeps the high-water mark of the parent it was forked from, here the
    generator holding the whole synthetic log.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu() -> float:
    """CPU seconds of this process (all threads), user + system."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_phase(name: str, data: Path, out: Path, chunk_mb: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--phase",
        name,
        "--data",
        str(data),
        "--out",
        str(out),
        "--chunk-mb",
        str(chunk_mb),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"phase {name} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory")
    ap.add_argument("--keep", action="store_true", help="keep the generated files and dataset")
    ap.add_argument("--questions", type=Path, default=None, help="use this questions.csv")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk-mb", type=int, default=32, help="ednet-kt1 option chunk_mb")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--repeat", type=int, default=1, help="runs per phase; best time is shown")
    ap.add_argument(
        "--reuse", action="store_true", help="reuse WORKDIR/KT1 when it exists (no generation)"
    )
    ap.add_argument("--phase", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.phase:
        sys.path.append(str(Path(__file__).resolve().parents[1]))
        if args.phase == "ours":
            res = phase_ours(args.data, args.out, args.chunk_mb)
        else:
            res = phase_baseline(args.data)
        res["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(res))
        return

    work = args.workdir or Path(tempfile.mkdtemp(prefix="kt1-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        data = work / "KT1"
        if args.reuse and (data / "questions.csv").is_file():
            args.users = len(list(data.glob("u*.csv")))
            print(f"reusing {data} ({args.users:,} files)", flush=True)
        else:
            data = generate(work, args.rows, args.users, args.seed, args.questions)
            print(
                f"generated {args.rows:,} rows in {args.users:,} files under {data} "
                f"in {time.perf_counter() - t0:.1f} s ({os.cpu_count()} CPUs)",
                flush=True,
            )
        phases = {"ours (ednet-kt1 -> Parquet)": "ours"}
        if not args.skip_baseline:
            phases["pandas read_csv per file"] = "baseline"
        results: dict[str, dict] = {}
        for _ in range(args.repeat):  # alternate the phases; keep each one's best time
            for label, phase in phases.items():
                r = run_phase(phase, data, work / "out", args.chunk_mb)
                best = results.get(label)
                if best is None or r["seconds"] < best["seconds"]:
                    r["peak_rss_mb"] = max(r["peak_rss_mb"], best["peak_rss_mb"] if best else 0)
                    results[label] = r
                else:
                    best["peak_rss_mb"] = max(best["peak_rss_mb"], r["peak_rss_mb"])
        print()
        head = f"{'':28} {'rows':>10} {'files':>7} {'seconds':>8} {'CPU s':>6} {'rows/s':>11}"
        print(head + f" {'peak RSS MB':>12}")
        for name, r in results.items():
            print(
                f"{name:28} {r['rows']:>10,} {args.users:>7,} {r['seconds']:>8.2f} "
                f"{r['cpu']:>6.2f} {r['rows'] / r['seconds']:>11,.0f} {r['peak_rss_mb']:>12,.0f}"
            )
        if len(results) == 2:
            ours, base = results.values()
            print(f"\nspeed-up: {base['seconds'] / ours['seconds']:.1f}x (wall time)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    main()
