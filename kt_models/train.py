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
import pickle
import random
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from data_loaders import Dataset

from .base import (
    CheckpointError,
    KTModel,
    build_model,
    make_config,
    prediction_mask,
    save_checkpoint,
)
from .data import (
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


def train(
    model_name: str,
    data: Path | str,
    out: Path | str,
    *,
    model_overrides: dict[str, Any] | None = None,
    config: TrainConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``model_name`` on the dataset ``data`` into the run directory ``out``."""
    cfg = config or TrainConfig()
    out = Path(out)
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

    seqs, vocab = load_sequences(data)
    split = split_learners(seqs, seed=cfg.seed, fold=cfg.fold)
    if len(split.train) == 0 or len(split.valid) == 0:
        raise ValueError(f"{data}: the split leaves no training or validation learners")
    mcfg = make_config(model_name, {**(model_overrides or {}), "seed": cfg.seed})
    model = build_model(model_name, vocab, mcfg).to(device)
    opt = make_optimizer(model, cfg)

    if not 0.0 <= cfg.ema < 1.0:
        raise ValueError(f"ema must be in [0, 1), got {cfg.ema}")
    ema_model = copy.deepcopy(model) if cfg.ema else None
    ema_steps = 0

    start_epoch, best_auc, bad_epochs = 0, -1.0, 0
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    last = out / "last.pt"
    if resume and last.is_file():
        state = _read_last(last, device)
        if state["model"] != model_name:
            raise ValueError(f"{last}: was a {state['model']} run, not {model_name}")
        try:
            model.load_state_dict(state["state_dict"])
            opt.load_state_dict(state["optimizer"])
            if ema_model is not None:
                ema_model.load_state_dict(state.get("ema_state_dict") or state["state_dict"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"{last}: its weights do not fit this {model_name} model (trained with other "
                f"model options or data?): {str(exc).splitlines()[0][:300]}; resume with the "
                "first run's options, or remove it or train without --resume"
            ) from exc
        if ema_model is not None:
            ema_steps = int(state.get("ema_steps") or 0)
        start_epoch, best_auc, bad_epochs = state["epoch"], state["best_auc"], state["bad_epochs"]
        log(f"resuming after epoch {start_epoch} (best valid AUC {best_auc:.4f})")
    elif rank == 0 and (out / "metrics.jsonl").exists() and not resume:
        (out / "metrics.jsonl").unlink()

    ddp_model: torch.nn.Module = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    manifest = Dataset.open(data).manifest  # the dataset's own reader (validated, cached)
    run_info = {
        "model": model_name,
        "model_config": asdict(mcfg),
        "train_config": asdict(cfg),
        "data": str(Path(data).resolve()),
        "split": split.to_dict(),
        "world_size": world,
        # what the model's time input means: days since the learner's first answer, or the
        # answer's position where the data has no clock (serving must feed the same)
        "time_unit": "days" if seqs.has_time else "answers",
        "device": str(device),
        "torch": torch.__version__,
    }
    if rank == 0:
        (out / "run.json").write_text(json.dumps(run_info, indent=2) + "\n")

    history: list[dict[str, Any]] = []
    train_seqs = windows(seqs, split.train, cfg.max_len)
    n_train = train_seqs.n_interactions
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        plan = plan_batches(
            train_seqs,
            np.arange(train_seqs.n_users),
            batch_tokens=cfg.batch_tokens,
            max_batch=cfg.max_batch,
            shuffle=True,
            seed=cfg.seed * 1000 + epoch,
        )
        if world > 1:
            per = len(plan) // world
            plan = plan[rank * per : (rank + 1) * per] if per else plan[:1]
        t0 = time.perf_counter()
        total_loss, total_tok, skipped = 0.0, 0, 0
        bar = _bar(len(plan), f"epoch {epoch + 1}/{cfg.epochs}", progress and rank == 0)
        for group in plan:
            batch = make_batch(train_seqs, group).to(device)
            logits = ddp_model(batch)
            loss = model.loss(batch, logits)
            if not optimizer_step(model, opt, loss, cfg, ema_model, ema_steps):
                skipped += 1
                if skipped > max(10, len(plan) // 2):
                    raise FloatingPointError(
                        f"{model_name}: loss or gradients not finite in {skipped} steps of epoch "
                        f"{epoch + 1}; lower the learning rate (--lr)"
                    )
                continue
            ema_steps += 1
            n_tok = int(prediction_mask(batch).sum())
            total_loss += float(loss.detach()) * n_tok
            total_tok += n_tok
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{total_loss / max(total_tok, 1):.4f}")
        train_secs = time.perf_counter() - t0
        scored = ema_model if ema_model is not None else model
        y, p = predict_next_step(scored, seqs, split.valid, device)
        vm = metrics(y, p)
        if bar is not None:
            bar.set_postfix(loss=f"{total_loss / max(total_tok, 1):.4f}", auc=f"{vm['auc']:.4f}")
            bar.close()
        record = {
            "epoch": epoch + 1,
            "train_loss": total_loss / max(total_tok, 1),
            "train_seconds": round(train_secs, 3),
            "skipped_steps": skipped,
            "interactions_per_second": round(n_train / max(train_secs, 1e-9)),
            **{f"valid_{k}": v for k, v in vm.items()},
        }
        history.append(record)
        improved = vm["auc"] > best_auc
        if improved:
            best_auc, bad_epochs = vm["auc"], 0
        else:
            bad_epochs += 1
            if cfg.lr_decay != 1.0:
                for group in opt.param_groups:
                    group["lr"] *= cfg.lr_decay
        if rank == 0:
            with open(out / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")
            if improved:
                save_checkpoint(
                    scored,
                    out / "best.pt",
                    manifest=manifest,
                    extra={"run": run_info, "epoch": epoch + 1, "valid": vm},
                )
            _save_last(
                out / "last.pt",
                model_name,
                model,
                opt,
                epoch + 1,
                best_auc,
                bad_epochs,
                ema_model,
                ema_steps,
            )
            log(
                f"epoch {epoch + 1}: loss {record['train_loss']:.4f}, valid AUC {vm['auc']:.4f}"
                f" ({train_secs:.1f} s){' *' if improved else ''}"
            )
        if bad_epochs >= cfg.patience:
            if rank == 0:
                log(f"early stop: no validation AUC gain in {cfg.patience} epochs")
            break
    if world > 1:
        dist.barrier()
    return {
        "best_valid_auc": best_auc,
        "epochs": history,
        "split": split.to_dict(),
        "model": ema_model if ema_model is not None else model,
        "rank": rank,
        "world_size": world,
    }


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
    """``last.pt`` for ``--resume``, loaded with ``weights_only=True``; a
    :class:`CheckpointError` naming the file and what to do when it is truncated, corrupt or
    not a training checkpoint."""
    remedy = "remove it or train without --resume"
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if refused is None:
            raise CheckpointError(
                f"{path}: {path.name} is truncated or corrupt ({str(exc)[:200]}); {remedy}"
            ) from exc
        raise CheckpointError(
            f"{path}: {path.name} holds an object that loading would have to run code to "
            f"build ({refused.group(1)}; refused); {remedy}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
        msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(
            f"{path}: {path.name} is truncated or corrupt ({msg}); {remedy}"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a training checkpoint (no fields); {remedy}")
    for key, kind in _LAST_FIELDS.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise CheckpointError(
                f"{path}: not a training checkpoint (field {key!r} missing or not "
                f"{getattr(kind, '__name__', 'a number')}); {remedy}"
            )
    return state


def _save_last(
    path: Path,
    name: str,
    model: KTModel,
    opt: torch.optim.Optimizer,
    epoch: int,
    best_auc: float,
    bad_epochs: int,
    ema_model: KTModel | None = None,
    ema_steps: int = 0,
) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(
        {
            "model": name,
            "state_dict": model.state_dict(),
            "ema_state_dict": ema_model.state_dict() if ema_model is not None else None,
            "ema_steps": int(ema_steps),
            "optimizer": opt.state_dict(),
            # plain Python numbers (never numpy scalars): loadable with weights_only=True
            "epoch": int(epoch),
            "best_auc": float(best_auc),
            "bad_epochs": int(bad_epochs),
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


def _bar(total: int, desc: str, enabled: bool):  # noqa: ANN202 - tqdm or None
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


__all__ = ["TrainConfig", "Split", "train", "train_option", "predict_next_step", "pick_device"]
