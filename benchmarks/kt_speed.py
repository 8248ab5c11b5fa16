"""Training throughput and serving latency of every model.

* training: seconds per epoch and interactions per second on ASSIST2015 (pyKT split, the
  folds 1-4 training learners), one epoch after a warm-up epoch, each the training loop's own
  (``kt_models.train.train_epoch``: batches, ``optimizer_step`` with its finiteness check,
  clipping and weight average, the loss bookkeeping);
* serving: the time of one ``step`` and of one ``predict`` for a single learner (the request
  path of the tutor service), averaged over 2,000 answers.

Usage: python benchmarks/kt_speed.py [--models dkt,dkt-large,cakt,...] [--threads 2]
  [--synthetic N] [--batch-tokens N]  (dkt-large: kt_quality.py's 256-unit DKT)
  --synthetic N times an epoch on a simulated dataset of N interactions instead (for GPUs:
  e.g. --synthetic 20000000 --device cuda).
  --profile prints where one training batch's time goes per model (torch.profiler) instead.
  --floor prints CAKT's arithmetic floor instead: the distinct learning-curve volumes of an
  epoch, the 3D convolutions' FLOPs over them, and the seconds they take at this CPU's fp32
  matrix-multiply rate (the most any convolution code could reach).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from data_loaders import ingest
from kt_models.base import build_model, make_config
from kt_models.data import load_sequences, make_batch, split_learners, windows
from kt_models.train import TrainConfig, epoch_plan, new_state, pick_device, train_epoch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kt_quality import model_rows  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def time_epoch(
    name: str, data: Path, device: torch.device, cfg: TrainConfig, overrides: dict | None = None
) -> tuple[float, int]:
    seqs, vocab = load_sequences(data)
    split = split_learners(seqs, seed=cfg.seed, fold=cfg.fold)
    st = new_state(build_model(name, vocab, make_config(name, overrides)).to(device), cfg)
    model = st.model
    if cfg.compile:  # compiled in the warm-up epoch (timed apart: the compile seconds)
        model.compile_training()
    ws = windows(seqs, split.train, cfg.max_len)
    plan = epoch_plan(ws, cfg, seed=0)
    took = []
    for epoch in (1, 2):  # warm-up, then the timed epoch
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train_epoch(st, model, ws, plan, cfg, device, epoch=epoch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        took.append(time.perf_counter() - t0)
    print(f"{name}: first epoch {took[0]:.1f} s (compiling, if compiled), then {took[1]:.1f} s")
    return min(took), ws.n_interactions


def profile_batch(
    name: str, data: Path, cfg: TrainConfig, overrides: dict | None = None, rows: int = 12
) -> str:
    """Where one training batch's time goes (a full-length batch of ``cfg.batch_tokens``,
    forward and backward, after three unprofiled ones): torch.profiler's operators by own
    CPU time, and the count of operator calls."""
    from torch.profiler import ProfilerActivity, profile

    seqs, vocab = load_sequences(data)
    split = split_learners(seqs, seed=cfg.seed, fold=cfg.fold)
    ws = windows(seqs, split.train, cfg.max_len)
    full = np.flatnonzero(ws.lengths() == ws.lengths().max())
    users = full[: max(1, cfg.batch_tokens // int(ws.lengths().max()))]
    batch = make_batch(ws, users)
    model = build_model(name, vocab, make_config(name, overrides)).train()
    if cfg.compile:
        model.compile_training()

    def once() -> None:
        model.loss(batch, model(batch)).backward()

    for _ in range(3):
        once()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        once()
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    calls = sum(e.count for e in events if e.key.startswith("aten::"))
    table = events.table(sort_by="self_cpu_time_total", row_limit=rows)
    return (
        f"{name}: one batch of {len(users)} x {batch.item.shape[1]} answers, forward and "
        f"backward {wall * 1000:.0f} ms under the profiler, {calls:,} aten operator calls\n"
        f"{table}"
    )


@torch.no_grad()
def cakt_floor(data: Path, cfg: TrainConfig, overrides: dict | None = None) -> str:
    """A lower bound on CAKT's epoch from arithmetic alone: the distinct volumes its batch
    forward runs the CNN on (``CAKT._curves`` runs each once per batch), times the 3D
    convolutions' multiply-adds per volume, times 3 (forward; backward to the input and to the
    weights), at the rate of a large fp32 matrix product on this CPU. The convolutions with
    1-8 channels run well below that rate, and the LSTMs, gates and elementwise work come on
    top, so the real epoch is longer."""
    seqs, vocab = load_sequences(data)
    split = split_learners(seqs, seed=cfg.seed, fold=cfg.fold)
    model = build_model("cakt", vocab, make_config("cakt", overrides))
    ws = windows(seqs, split.train, cfg.max_len)
    plan = epoch_plan(ws, cfg, seed=0)
    answers = volumes = 0
    for group in plan:
        batch = make_batch(ws, group)
        pos, weight = model.history_indices(batch)
        tok = model._tokens(batch.item, batch.correct)
        rows = torch.arange(pos.shape[0]).view(-1, 1, 1, 1)
        frames = torch.where(pos >= 0, tok[rows, pos.clamp(min=0)], 0)[weight > 0]
        answers += int(batch.mask.sum())
        volumes += len(torch.unique(frames, dim=0))
    k, side = model.config.k, model.config.H
    cells = k * side * side
    chans = [1, *(int(c) for c in str(model.config.channels).split(","))]
    macs = 0
    for c_in, c_out in zip(chans[:-1], chans[1:], strict=True):
        macs += (c_in * c_out + c_out * c_out) * 27 * cells  # the block's two 3x3x3 convs
        macs += c_in * c_out * cells if c_in != c_out else 0  # its 1x1x1 shortcut
    flops = 2 * macs * 3 * volumes
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    t0, n = time.perf_counter(), 20
    for _ in range(n):
        a @ b
    rate = 2 * 2048**3 * n / (time.perf_counter() - t0)
    return (
        f"cakt: {len(plan)} batches, {answers:,} answers, {volumes:,} distinct volumes "
        f"({volumes / len(plan):,.0f} a batch); {macs:,} multiply-adds a volume forward; "
        f"{flops / 1e12:.2f} TFLOP an epoch forward and backward; at {rate / 1e9:.0f} GFLOP/s "
        f"(fp32 matrix product, {torch.get_num_threads()} threads) the convolutions alone take "
        f"at least {flops / rate:.1f} s an epoch"
    )


@torch.no_grad()
def time_step(
    name: str, data: Path, overrides: dict | None = None, n: int = 2000
) -> tuple[float, float]:
    """(ms per ``step`` alone, ms per ``predict`` of one item) for a single learner."""
    seqs, vocab = load_sequences(data)
    model = build_model(name, vocab, make_config(name, overrides)).eval()
    state = model.init_state(1)
    items = torch.from_numpy(seqs.item[:n].astype(np.int64))
    correct = torch.from_numpy(seqs.correct[:n].astype(np.float32))
    times = torch.arange(n, dtype=torch.float32) * 0.01
    for i in range(50):  # warm-up
        state = model.step(state, items[i : i + 1], correct[i : i + 1], times[i : i + 1])
    t0 = time.perf_counter()
    for i in range(n):
        state = model.step(state, items[i : i + 1], correct[i : i + 1], times[i : i + 1])
    t1 = time.perf_counter()
    for i in range(n):
        model.predict(state, items[i : i + 1].view(1, 1), at_time=times[i : i + 1].view(1, 1))
    t2 = time.perf_counter()
    return (t1 - t0) / n * 1000, (t2 - t1) / n * 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--models", default="dkt,dkt-large,dkt+,cakt,psikt,bkt,logistic")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--synthetic", type=int, default=0, help="simulate N interactions instead")
    ap.add_argument("--batch-tokens", type=int, default=TrainConfig.batch_tokens)
    ap.add_argument(
        "--profile", action="store_true", help="profile one training batch per model instead"
    )
    ap.add_argument("--floor", action="store_true", help="CAKT's arithmetic floor instead")
    args = ap.parse_args(argv)
    try:
        models = model_rows(args.models)
    except ValueError as exc:
        ap.error(str(exc))
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    work = Path(tempfile.mkdtemp(prefix="kt-speed-"))
    if args.synthetic:
        learners = max(args.synthetic // 200, 10)
        data = work / "sim"
        ingest(
            "simulate",
            "-",
            data,
            options={
                "learners": str(learners),
                "answers": "200",
                "concepts": "100",
                "items_per_concept": "20",
                "seed": "0",
            },
        )
        label = f"simulated ({args.synthetic:,} interactions)"
    else:
        data = work / "a15"
        ingest("pykt", args.data / "assist2015" / "pykt_split", data)
        label = "ASSIST2015 pyKT split, train folds"
    console = Console(width=200)
    table = Table(
        title=f"Training and serving speed: {label}, {device}, {torch.get_num_threads()} threads"
    )
    for col in ("model", "s/epoch", "interactions/s", "step ms (1 learner)", "predict ms"):
        table.add_column(col, justify="left" if col == "model" else "right")
    if args.floor:
        console.print(cakt_floor(data, TrainConfig(batch_tokens=args.batch_tokens)))
        return 0
    for name, (base, over, train_over) in models:
        cfg = TrainConfig(batch_tokens=args.batch_tokens, **train_over)
        if args.profile:
            console.print(profile_batch(base, data, cfg, over).replace(base, name, 1))
            continue
        secs, n = time_epoch(base, data, device, cfg, over)
        ms, pms = time_step(base, data, over) if device.type == "cpu" else (float("nan"),) * 2
        table.add_row(name, f"{secs:.2f}", f"{n / secs:,.0f}", f"{ms:.3f}", f"{pms:.3f}")
        console.print(
            f"{name}: {secs:.2f} s/epoch, {n / secs:,.0f} interactions/s, "
            f"step {ms:.3f} ms, predict {pms:.3f} ms"
        )
    if not args.profile:
        console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
