"""Training: seeded, early-stopped on validation AUC, resumable, DDP-ready.

``train(...)`` is what ``tutor train`` runs. Under ``torchrun`` (``WORLD_SIZE`` > 1) each
process joins a process group (NCCL on GPUs, gloo on CPUs), takes every ``world``-th batch of
the same seeded plan, and gradients are averaged by DistributedDataParallel, so every rank
ends each step with identical weights; rank 0 writes the run directory.

A run directory holds ``run.json`` (what was trained on what, with which protocol),
``metrics.jsonl`` (one line per epoch), ``best.pt`` (the checkpoint with the best validation
AUC) and ``last.pt`` (weights, optimiser and counters, for ``--resume``).
"""

from __future__ import annotations

import copy
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from data_loaders import Dataset
from data_loaders.progress import NoProgress, Progress, progress_bars

from .base import (
    CheckpointError,
    KTModel,
    ModelConfig,
    build_model,
    make_config,
    prediction_mask,
    read_checkpoint,
    save_checkpoint,
)
from .data import (
    Sequences,
    Split,
    load_sequences,
    make_batch,
    plan_batches,
    split_learners,
    windows,
)
from .metrics import metrics
from .predictions import predict_next_step


@dataclass
class TrainConfig:
    epochs: int = 30
    lr: float | None = None  # None: the model class's default_lr
    weight_decay: float | None = None  # None: the model class's default_weight_decay
    #: padded positions per batch (see data.plan_batches). Small batches generalise better
    #: on the benchmark datasets (ASSIST2015, with ``ema``: DKT at its former defaults 0.7217
    #: at 32,768 -> 0.7289 at 2,048, at a similar epoch time on CPU); raise it on a GPU,
    #: where larger batches keep the device busy.
    batch_tokens: int = 2048
    max_batch: int = 256
    max_len: int | None = 200  # training windows (see data.windows); evaluation: whole
    patience: int = 5
    lr_decay: float = 1.0  # multiply the learning rate by this after an epoch without gain
    grad_clip: float = 5.0
    seed: int = 42
    fold: int = 0
    device: str = "auto"
    threads: int = 0  # 0: torch's default
    #: exponential moving average of the weights (Polyak averaging), 0 = off. Validation, the
    #: checkpoints and early stopping use the averaged weights. The decay warms up as
    #: min(ema, (1 + t) / (10 + t)) after t steps, so short runs are not pulled to the
    #: initial weights.
    ema: float = 0.995
    #: compile the model's per-step training code with ``torch.compile``
    #: (:meth:`KTModel.compile_training`; PSI-KT: 3-4x faster an epoch on a CPU, after a
    #: few minutes of compiling the first time; needs a C++ compiler on CPUs). Models
    #: without such code ignore it.
    compile: bool = False


def train_option(key: str, value: Any) -> Any:
    """A :class:`TrainConfig` field's value from a command line or config file: text is
    converted to the field's type (``max_len`` ``none``/``0`` = whole sequences, booleans
    ``1/true/yes``); other values pass as they are. Unknown names and bad text raise
    ``ValueError`` naming the option."""
    default = {f.name: f.default for f in fields(TrainConfig)}
    if key not in default:
        raise ValueError(f"unknown training option {key!r}")
    if not isinstance(value, str):
        return value
    cur = default[key]
    try:
        if key == "max_len":
            return None if value.lower() in ("none", "0", "") else int(value)
        if key in ("lr", "weight_decay"):
            return float(value)
        if isinstance(cur, bool):
            return value.lower() in ("1", "true", "yes")
        if cur is not None and not isinstance(cur, str):
            return type(cur)(value)
    except ValueError as exc:
        raise ValueError(f"training option {key!r}: {exc}") from None
    return value


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", 0))
            return torch.device(f"cuda:{local}")
        return torch.device("cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


# ---------------------------------------------------------------------- set-up
@dataclass(frozen=True)
class Process:
    """This process's place in the run: its rank among ``world`` processes and its device.
    Rank 0 writes the run directory, logs and draws progress."""

    rank: int
    world: int
    device: torch.device

    @property
    def writes(self) -> bool:
        return self.rank == 0


def set_up_process(cfg: TrainConfig) -> Process:
    """Join the process group under ``torchrun`` (NCCL on GPUs, gloo on CPUs), pick the
    device, set the thread count and seed every generator."""
    rank, world = _distributed()
    device = pick_device(cfg.device)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
        if device.type == "cuda":
            torch.cuda.set_device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    return Process(rank, world, device)


@dataclass
class TrainingState:
    """What a run carries from step to step and epoch to epoch (``last.pt`` saves it): the
    weights, the optimiser, the weight average and the early-stopping counters."""

    model: KTModel
    opt: torch.optim.Optimizer
    ema_model: KTModel | None = None
    ema_steps: int = 0  # weight-average updates so far (its warm-up counter)
    epoch: int = 0  # epochs done
    best_auc: float = -1.0
    bad_epochs: int = 0  # epochs since the best validation AUC

    @property
    def scored(self) -> KTModel:
        """The weights that validation, the checkpoints and early stopping use: the average
        when one is kept."""
        return self.ema_model if self.ema_model is not None else self.model


def new_state(model: KTModel, cfg: TrainConfig) -> TrainingState:
    """A fresh :class:`TrainingState` of ``model`` (already on its device): Adam
    (:func:`make_optimizer`) and, with ``cfg.ema``, a copy of the weights to average."""
    opt = make_optimizer(model, cfg)
    if not 0.0 <= cfg.ema < 1.0:
        raise ValueError(f"ema must be in [0, 1), got {cfg.ema}")
    return TrainingState(model, opt, copy.deepcopy(model) if cfg.ema else None)


def load_last(state: TrainingState, last: Path, model_name: str, device: torch.device) -> None:
    """Load ``last.pt`` into ``state``: weights, optimiser, weight average and counters. A
    :class:`CheckpointError` says what to do when it is unreadable or does not fit."""
    saved = _read_last(last, device)
    if saved["model"] != model_name:
        raise ValueError(f"{last}: was a {saved['model']} run, not {model_name}")
    try:
        state.model.load_state_dict(saved["state_dict"])
        state.opt.load_state_dict(saved["optimizer"])
        if state.ema_model is not None:
            state.ema_model.load_state_dict(saved.get("ema_state_dict") or saved["state_dict"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{last}: its weights do not fit this {model_name} model (trained with other "
            f"model options or data?): {str(exc).splitlines()[0][:300]}; resume with the "
            "first run's options, or remove it or train without --resume"
        ) from exc
    if state.ema_model is not None:
        state.ema_steps = int(saved.get("ema_steps") or 0)
    state.epoch, state.best_auc = saved["epoch"], saved["best_auc"]
    state.bad_epochs = saved["bad_epochs"]


# ---------------------------------------------------------------------- one epoch
def epoch_plan(
    seqs: Sequences, cfg: TrainConfig, seed: int, *, rank: int = 0, world: int = 1
) -> list[np.ndarray]:
    """One epoch's batches of every row of ``seqs`` (``cfg.batch_tokens``, ``cfg.max_batch``),
    shuffled by ``seed``; under DDP this rank's share of the same plan (every ``world``-th
    slice, so that every rank takes as many steps)."""
    plan = plan_batches(
        seqs,
        np.arange(seqs.n_users),
        batch_tokens=cfg.batch_tokens,
        max_batch=cfg.max_batch,
        shuffle=True,
        seed=seed,
    )
    if world > 1:
        per = len(plan) // world
        plan = plan[rank * per : (rank + 1) * per] if per else plan[:1]
    return plan


@dataclass
class EpochResult:
    """What an epoch of training steps did."""

    loss: float  # mean training loss per predicted answer, over the steps taken
    seconds: float
    skipped: int  # steps skipped for a loss or gradient that was not finite


def train_epoch(
    state: TrainingState,
    forward: torch.nn.Module,
    seqs: Sequences,
    plan: list[np.ndarray],
    cfg: TrainConfig,
    device: torch.device,
    *,
    epoch: int,
    advance: Callable[[int], None] | None = None,
) -> EpochResult:
    """The training steps of epoch ``epoch`` (counted from 1) over ``plan``
    (:func:`optimizer_step` each), with ``forward`` the model or its DDP wrapper;
    ``advance(1)`` after each step taken. Raises FloatingPointError when more than half the
    steps (and more than 10) had a loss or gradient that was not finite."""
    model = state.model
    model.train()
    t0 = time.perf_counter()
    total_loss, total_tok, skipped = 0.0, 0, 0
    for group in plan:
        batch = make_batch(seqs, group).to(device)
        logits = forward(batch)
        loss = model.loss(batch, logits)
        if not optimizer_step(model, state.opt, loss, cfg, state.ema_model, state.ema_steps):
            skipped += 1
            if skipped > max(10, len(plan) // 2):
                raise FloatingPointError(
                    f"{model.name}: loss or gradients not finite in {skipped} steps of epoch "
                    f"{epoch}; lower the learning rate (--lr)"
                )
            continue
        state.ema_steps += 1
        n_tok = int(prediction_mask(batch).sum())
        total_loss += float(loss.detach()) * n_tok
        total_tok += n_tok
        if advance is not None:
            advance(1)
    return EpochResult(total_loss / max(total_tok, 1), time.perf_counter() - t0, skipped)


# ---------------------------------------------------------------------- validation
def validate(
    state: TrainingState, seqs: Sequences, users: np.ndarray, device: torch.device
) -> dict[str, float]:
    """Next-step metrics of the scored weights on the validation learners ``users``."""
    y, p = predict_next_step(state.scored, seqs, users, device)
    return metrics(y, p)


def note_validation(state: TrainingState, cfg: TrainConfig, auc: float) -> bool:
    """Early-stopping bookkeeping after an epoch's validation: whether ``auc`` is a new best;
    otherwise one more bad epoch, and the learning rate decays by ``cfg.lr_decay``."""
    if auc > state.best_auc:
        state.best_auc, state.bad_epochs = auc, 0
        return True
    state.bad_epochs += 1
    if cfg.lr_decay != 1.0:
        for group in state.opt.param_groups:
            group["lr"] *= cfg.lr_decay
    return False


# ---------------------------------------------------------------------- the run directory
@dataclass
class RunDirectory:
    """The files of a run (``run.json``, ``metrics.jsonl``, ``best.pt``, ``last.pt``) and what
    ``best.pt`` records beside the weights; only a writing process (rank 0) touches them."""

    path: Path
    writes: bool
    manifest: dict[str, Any] = field(default_factory=dict)  # the training data's
    info: dict[str, Any] = field(default_factory=dict)  # run.json's content

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    def open(self, resume: bool) -> bool:
        """Create the directory; whether to resume (``resume`` and a ``last.pt`` there). A
        fresh start removes an earlier run's ``metrics.jsonl``."""
        if self.writes:
            self.path.mkdir(parents=True, exist_ok=True)
        if resume and self.last.is_file():
            return True
        if self.writes and (self.path / "metrics.jsonl").exists() and not resume:
            (self.path / "metrics.jsonl").unlink()
        return False

    def write_info(self, info: dict[str, Any], manifest: dict[str, Any]) -> None:
        self.info, self.manifest = info, manifest
        if self.writes:
            (self.path / "run.json").write_text(json.dumps(info, indent=2) + "\n")

    def checkpoint(
        self, state: TrainingState, record: dict[str, Any], vm: dict[str, float], improved: bool
    ) -> None:
        """After an epoch: its line of ``metrics.jsonl``, ``best.pt`` when it ``improved``
        and ``last.pt`` always."""
        if not self.writes:
            return
        with open(self.path / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if improved:
            save_checkpoint(
                state.scored,
                self.path / "best.pt",
                manifest=self.manifest,
                extra={"run": self.info, "epoch": state.epoch, "valid": vm},
            )
        _save_last(self.last, self.info["model"], state)


def run_info(
    model_name: str,
    mcfg: ModelConfig,
    cfg: TrainConfig,
    data: Path | str,
    split: Split,
    seqs: Sequences,
    proc: Process,
) -> dict[str, Any]:
    """``run.json``: what was trained on what, with which protocol."""
    return {
        "model": model_name,
        "model_config": asdict(mcfg),
        "train_config": asdict(cfg),
        "data": str(Path(data).resolve()),
        "split": split.to_dict(),
        "world_size": proc.world,
        # what the model's time input means: days since the learner's first answer, or the
        # answer's position where the data has no clock (serving must feed the same)
        "time_unit": "days" if seqs.has_time else "answers",
        "device": str(proc.device),
        "torch": torch.__version__,
    }


# ---------------------------------------------------------------------- the loop
def train(
    model_name: str,
    data: Path | str,
    out: Path | str,
    *,
    model_overrides: dict[str, Any] | None = None,
    config: TrainConfig | None = None,
    resume: bool = False,
    progress: bool | Progress = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``model_name`` on the dataset ``data`` into the run directory ``out``.

    ``progress``: True for a bar per epoch on stderr (gone when the epoch ends), False for
    none, or a :class:`~data_loaders.progress.Progress`; only rank 0 draws."""
    cfg = config or TrainConfig()
    proc = set_up_process(cfg)
    seqs, vocab = load_sequences(data)
    split = split_learners(seqs, seed=cfg.seed, fold=cfg.fold)
    if len(split.train) == 0 or len(split.valid) == 0:
        raise ValueError(f"{data}: the split leaves no training or validation learners")
    mcfg = make_config(model_name, {**(model_overrides or {}), "seed": cfg.seed})
    state = new_state(build_model(model_name, vocab, mcfg).to(proc.device), cfg)
    if cfg.compile and state.model.compile_training():
        log("compiling the per-step training code (torch.compile): the first batches wait")
    rundir = RunDirectory(Path(out), proc.writes)
    if rundir.open(resume):
        load_last(state, rundir.last, model_name, proc.device)
        log(f"resuming after epoch {state.epoch} (best valid AUC {state.best_auc:.4f})")
    forward: torch.nn.Module = state.model
    if proc.world > 1:
        forward = torch.nn.parallel.DistributedDataParallel(
            state.model, device_ids=[proc.device.index] if proc.device.type == "cuda" else None
        )
    rundir.write_info(
        run_info(model_name, mcfg, cfg, data, split, seqs, proc),
        Dataset.open(data).manifest,  # the dataset's own reader (validated, cached)
    )
    bars = progress_bars(progress) if proc.writes else NoProgress()
    run = _Run(cfg, proc, seqs, split, state, forward, rundir, bars, log)
    history = run.epochs()
    if proc.world > 1:
        dist.barrier()
    return {
        "best_valid_auc": state.best_auc,
        "epochs": history,
        "split": split.to_dict(),
        "model": state.scored,
        "rank": proc.rank,
        "world_size": proc.world,
    }


@dataclass
class _Run:
    """The pieces :func:`train` puts together, which its epochs use."""

    cfg: TrainConfig
    proc: Process
    seqs: Sequences
    split: Split
    state: TrainingState
    forward: torch.nn.Module  # the model, or its DDP wrapper
    rundir: RunDirectory
    bars: Progress
    log: Callable[[str], None]

    def epochs(self) -> list[dict[str, Any]]:
        """The epochs after ``state.epoch`` up to ``cfg.epochs`` or the early stop; their
        records."""
        history: list[dict[str, Any]] = []
        train_seqs = windows(self.seqs, self.split.train, self.cfg.max_len)
        for epoch in range(self.state.epoch, self.cfg.epochs):
            history.append(self.epoch(epoch + 1, train_seqs))
            if self.state.bad_epochs >= self.cfg.patience:
                if self.proc.writes:
                    self.log(f"early stop: no validation AUC gain in {self.cfg.patience} epochs")
                break
        return history

    def epoch(self, number: int, train_seqs: Sequences) -> dict[str, Any]:
        """Epoch ``number`` (from 1): its training steps, validation, early-stopping
        bookkeeping and checkpoints; its record (a line of ``metrics.jsonl``)."""
        cfg, proc, state = self.cfg, self.proc, self.state
        seed = cfg.seed * 1000 + number - 1
        plan = epoch_plan(train_seqs, cfg, seed, rank=proc.rank, world=proc.world)
        self.bars.start(f"epoch {number}/{cfg.epochs}", len(plan))
        try:
            done = train_epoch(
                state,
                self.forward,
                train_seqs,
                plan,
                cfg,
                proc.device,
                epoch=number,
                advance=self.bars.advance,
            )
            vm = validate(state, self.seqs, self.split.valid, proc.device)
        finally:
            self.bars.finish()
        record = {
            "epoch": number,
            "train_loss": done.loss,
            "train_seconds": round(done.seconds, 3),
            "skipped_steps": done.skipped,
            "interactions_per_second": round(train_seqs.n_interactions / max(done.seconds, 1e-9)),
            **{f"valid_{k}": v for k, v in vm.items()},
        }
        improved = note_validation(state, cfg, vm["auc"])
        state.epoch = number
        self.rundir.checkpoint(state, record, vm, improved)
        if proc.writes:
            self.log(
                f"epoch {number}: loss {done.loss:.4f}, valid AUC {vm['auc']:.4f}"
                f" ({done.seconds:.1f} s){' *' if improved else ''}"
            )
        return record


#: What ``last.pt`` holds beside tensors, with the type of each: plain data only, so that
#: ``--resume`` loads it with ``weights_only=True`` (no object that would run code to build).
_LAST_FIELDS: dict[str, type | tuple[type, ...]] = {
    "model": str,
    "state_dict": dict,
    "optimizer": dict,
    "epoch": int,
    "best_auc": (float, int),
    "bad_epochs": int,
}


def _read_last(path: Path, device: torch.device) -> dict[str, Any]:
    """``last.pt`` for ``--resume``, loaded by :func:`~kt_models.base.read_checkpoint`
    (``weights_only=True``); a :class:`CheckpointError` naming the file and what to do when it
    is truncated, corrupt or not a training checkpoint."""
    remedy = "remove it or train without --resume"
    state = read_checkpoint(path, device, remedy=remedy)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a training checkpoint (no fields); {remedy}")
    for key, kind in _LAST_FIELDS.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise CheckpointError(
                f"{path}: not a training checkpoint (field {key!r} missing or not "
                f"{getattr(kind, '__name__', 'a number')}); {remedy}"
            )
    return state


def _save_last(path: Path, name: str, state: TrainingState) -> None:
    """``last.pt``, written atomically: plain numbers beside the tensors (see _LAST_FIELDS)."""
    tmp = path.with_name(f".{path.name}.tmp")
    ema = state.ema_model
    torch.save(
        {
            "model": name,
            "state_dict": state.model.state_dict(),
            "ema_state_dict": ema.state_dict() if ema is not None else None,
            "ema_steps": int(state.ema_steps),
            "optimizer": state.opt.state_dict(),
            # plain Python numbers (never numpy scalars): loadable with weights_only=True
            "epoch": int(state.epoch),
            "best_auc": float(state.best_auc),
            "bad_epochs": int(state.bad_epochs),
        },
        tmp,
    )
    tmp.replace(path)


def make_optimizer(model: KTModel, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam with ``cfg``'s learning rate and weight decay, or the model class's defaults
    (``default_lr``, ``default_weight_decay``) where they are ``None``."""
    cls = type(model)
    lr = cfg.lr if cfg.lr is not None else cls.default_lr
    wd = cfg.weight_decay if cfg.weight_decay is not None else cls.default_weight_decay
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)


def optimizer_step(
    model: KTModel,
    opt: torch.optim.Optimizer,
    loss: torch.Tensor,
    cfg: TrainConfig,
    ema_model: KTModel | None = None,
    ema_steps: int = 0,
) -> bool:
    """One training step on ``loss``: backward, clip to ``cfg.grad_clip``, Adam, then the
    weight average's update (its ``ema_steps``-th). A step whose loss or gradient is not
    finite is skipped (as mixed-precision training does) and False returned; under DDP every
    rank sees the same averaged gradient, so all skip alike."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    finite = bool(torch.isfinite(loss)) and all(
        bool(torch.isfinite(q.grad).all()) for q in model.parameters() if q.grad is not None
    )
    if not finite:
        return False
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    if ema_model is not None:
        _ema_update(ema_model, model, ema_decay(cfg.ema, ema_steps))
    return True


def ema_decay(decay: float, steps: int) -> float:
    """The averaging decay after ``steps`` updates: ``min(decay, (1 + t) / (10 + t))``, the
    warm-up of TensorFlow's ExponentialMovingAverage (its ``num_updates``), so that the average
    follows the weights closely while there are few of them."""
    return min(decay, (1.0 + steps) / (10.0 + steps))


@torch.no_grad()
def _ema_update(ema_model: KTModel, model: KTModel, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * weights; buffers are copied as they are."""
    for e, q in zip(ema_model.parameters(), model.parameters(), strict=True):
        e.lerp_(q.detach(), 1.0 - decay)
    for e, b in zip(ema_model.buffers(), model.buffers(), strict=True):
        e.copy_(b)


__all__ = [
    "EpochResult",
    "Process",
    "RunDirectory",
    "Split",
    "TrainConfig",
    "TrainingState",
    "epoch_plan",
    "load_last",
    "make_optimizer",
    "new_state",
    "note_validation",
    "optimizer_step",
    "pick_device",
    "predict_next_step",
    "set_up_process",
    "train",
    "train_epoch",
    "train_option",
    "validate",
]
