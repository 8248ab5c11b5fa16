"""Evaluation: the numbers computed from a run's predictions (the predictions themselves come
from :mod:`kt_models.predictions`).

* **Next step**: every answer of a test learner after their first is predicted from the
  answers before it (the batch forward; equal to serving's step/predict to 1e-5).
* **Multi-step** (as in the PSI-KT and pyKT papers): a test learner's history is cut every
  ``n`` answers; from the state at each cut, the next ``n`` answers are predicted *without*
  seeing them (``predict`` at each answer's own time, so models that forget decay), then the
  true answers are fed in and the next window follows. Computed through the serving form
  (``init_state``/``step``/``predict``), batched over learners, or a model's one-pass form
  of the same loop (``multi_step_logits``: AKT's, equal to the loop to 1e-5, about 13x
  faster).
* **Comparison**: a paired bootstrap of the test AUC difference of two runs
  (:func:`compare_runs`).
* **Report numbers** (:func:`analyse_run`, what ``tutor report`` draws): calibration, AUC by
  sequence position (a prediction's *position* is the number of the learner's earlier answers
  it sees), DataShop-style learning curves (error rate by opportunity ``k``, the learner's
  ``k``-th answer on the concept; an answer to a multi-concept item is an opportunity of each
  of its concepts), the training history, and PSI-KT's prerequisite graph and learner traits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from data_loaders.progress import Progress, progress_bars

from .base import KTModel, load_checkpoint
from .data import Sequences, load_sequences, split_learners
from .metrics import calibration_table, metrics, paired_auc_bootstrap
from .predictions import (
    TRAITS,
    Answers,
    final_traits,
    next_step_answers,
    predict_multi_step,
    predict_next_step,
)
from .train import pick_device

POSITION_EDGES: tuple[int, ...] = (5, 10, 20, 50, 100, 200)


@dataclass
class LoadedRun:
    """A run directory opened for evaluation: its record, checkpoint, data and learners."""

    dir: Path
    record: dict[str, Any]  # run.json
    model: KTModel
    payload: dict[str, Any]  # the checkpoint's other content
    data: Path
    seqs: Sequences
    users: np.ndarray  # learner indices into ``seqs`` to evaluate
    subset: str
    protocol: str


def load_run(
    run_dir: Path | str,
    *,
    data: Path | str | None = None,
    device: torch.device,
    checkpoint: str = "best.pt",
) -> LoadedRun:
    """Open a run: ``run.json``, the checkpoint, its dataset (or ``data``) read with the
    checkpoint's vocabularies, and the learners to evaluate: the test learners of the
    training protocol on the run's own dataset, every learner of another one. Raises
    FileNotFoundError for a missing run directory or ``run.json`` and
    :class:`~kt_models.base.CheckpointError` for a missing or bad checkpoint."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: run directory not found")
    if not (run_dir / "run.json").is_file():
        raise FileNotFoundError(f"{run_dir / 'run.json'}: not found (not a run directory?)")
    run = json.loads((run_dir / "run.json").read_text())
    model, payload = load_checkpoint(run_dir / checkpoint, map_location=device)
    data_path = Path(data) if data is not None else Path(run["data"])
    seqs, _ = load_sequences(data_path, vocab=model.vocab)
    if data is None or Path(data).resolve() == Path(run["data"]).resolve():
        tc = run["train_config"]
        split = split_learners(seqs, seed=tc["seed"], fold=tc["fold"])
        users, subset, protocol = (
            split.test,
            "test learners of the training protocol",
            split.protocol,
        )
    else:
        users, subset = np.arange(seqs.n_users), "all learners of another dataset"
        protocol = "external dataset"
    return LoadedRun(run_dir, run, model, payload, data_path, seqs, users, subset, protocol)


def evaluate_run(
    run_dir: Path | str,
    *,
    data: Path | str | None = None,
    multi_step: int = 10,
    device: str = "auto",
    checkpoint: str = "best.pt",
) -> dict[str, Any]:
    """Evaluate a run's best checkpoint; writes and returns ``results.json``'s content."""
    dev = pick_device(device)
    lr = load_run(run_dir, data=data, device=dev, checkpoint=checkpoint)
    run_dir, run, model, payload = lr.dir, lr.record, lr.model, lr.payload
    data_path, seqs, users, subset, protocol = lr.data, lr.seqs, lr.users, lr.subset, lr.protocol
    y, p = predict_next_step(model, seqs, users, dev)
    results: dict[str, Any] = {
        "model": run["model"],
        "run": str(run_dir),
        "data": str(data_path),
        "subset": subset,
        "protocol": protocol,
        "learners": int(len(users)),
        "checkpoint_epoch": payload.get("extra", {}).get("epoch"),
        "test": metrics(y, p),
        "calibration": calibration_table(y, p),
    }
    if multi_step:
        my, mp, mk = predict_multi_step(model, seqs, users, multi_step, dev)
        per_k = {str(k): metrics(my[mk == k], mp[mk == k]) for k in range(1, multi_step + 1)}
        results["multi_step"] = {**metrics(my, mp), "horizon": multi_step, "by_steps_ahead": per_k}
    results["unknown_items_dropped"] = seqs.meta.get("unknown_items", 0)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def model_label(record: dict[str, Any]) -> str:
    """A run's model with the options it changed from the model's defaults (the seed
    aside), as ``tutor train --set`` takes them: ``dkt items=rasch``."""
    from dataclasses import asdict

    from .base import make_config

    name = record["model"]
    try:
        defaults = asdict(make_config(name))
    except KeyError:
        return name
    changed = [
        f"{k}={v}"
        for k, v in (record.get("model_config") or {}).items()
        if k != "seed" and k in defaults and defaults[k] != v
    ]
    return " ".join([name, *changed])


def compare_runs(
    run_a: Path | str,
    runs_b: Sequence[Path | str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    device: str = "auto",
) -> list[dict[str, Any]]:
    """Next-step test AUC of run ``a`` against each of ``runs_b`` on the same test learners,
    with a paired bootstrap confidence interval of the difference ``a - b`` over learners
    (:func:`kt_models.metrics.paired_auc_bootstrap`); ``a``'s predictions are computed once.
    Every run must have been trained on the same dataset with the same test learners;
    ``ValueError`` says what differs otherwise."""

    dev = pick_device(device)

    def answers(run: Path | str) -> tuple[LoadedRun, Answers]:
        lr = load_run(run, device=dev)
        return lr, next_step_answers(lr.model, lr.seqs, lr.users, dev)

    ra, a = answers(run_a)
    ua = ra.seqs.users[ra.users]
    out = []
    for run_b in runs_b:
        rb, b = answers(run_b)
        ub = rb.seqs.users[rb.users]
        if len(ua) != len(ub) or not (ua == ub).all():
            raise ValueError(
                f"{run_a} and {run_b} have different test learners ({len(ua)} and {len(ub)}; "
                f"data {ra.data} and {rb.data}): compare runs of one dataset and split"
            )
        if len(a.y) != len(b.y) or not (a.y == b.y).all() or not (a.scored == b.scored).all():
            raise ValueError(
                f"{run_a} and {run_b} see different answers of the same test learners (data "
                f"{ra.data} and {rb.data}): compare runs of one dataset"
            )
        m = a.scored
        res = paired_auc_bootstrap(
            a.y[m], a.p[m], b.p[m], a.learner[m], n_boot=n_boot, seed=seed, level=level
        )
        models = {"model_a": model_label(ra.record), "model_b": model_label(rb.record)}
        out.append({"a": str(run_a), "b": str(run_b), **models, **res})
    return out


# ---------------------------------------------------------------------- AUC by position
def position_buckets(max_position: int = 200) -> list[tuple[int, int | None]]:
    """``(low, high)`` position ranges (inclusive; ``high`` None: open-ended)."""
    edges = [e for e in POSITION_EDGES if e < max_position] + [max_position]
    buckets: list[tuple[int, int | None]] = []
    low = 1
    for e in edges:
        buckets.append((low, e))
        low = e + 1
    buckets.append((low, None))
    return buckets


def _bucket_label(low: int, high: int | None) -> str:
    return f">{low - 1}" if high is None else f"{low}-{high}"


def auc_by_position(
    y: np.ndarray, p: np.ndarray, position: np.ndarray, max_position: int = 200
) -> list[dict[str, Any]]:
    """AUC per position bucket: ``label``, ``low``, ``high``, ``n`` and ``auc`` (None when the
    bucket holds one answer class only, or nothing)."""
    y, p, position = np.asarray(y), np.asarray(p), np.asarray(position)
    rows = []
    for low, high in position_buckets(max_position):
        m = position >= low
        if high is not None:
            m &= position <= high
        n = int(m.sum())
        pos = int(y[m].sum()) if n else 0
        auc = float(roc_auc_score(y[m], p[m])) if 0 < pos < n else None
        rows.append(
            {"label": _bucket_label(low, high), "low": low, "high": high, "n": n, "auc": auc}
        )
    return rows


# ---------------------------------------------------------------------- learning curves
def opportunity_index(learner: np.ndarray, concept: np.ndarray) -> np.ndarray:
    """1-based opportunity of every row: how many rows of the same (learner, concept) come
    before it, plus one. Rows are taken to be in chronological order (vectorised: a stable
    sort by (learner, concept, row) and the rank inside each run)."""
    learner, concept = np.asarray(learner), np.asarray(concept)
    n = len(learner)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(n), concept, learner))
    ls, cs = learner[order], concept[order]
    new = np.r_[True, (ls[1:] != ls[:-1]) | (cs[1:] != cs[:-1])]
    starts = np.flatnonzero(new)
    rank = np.arange(n) - starts[np.cumsum(new) - 1] + 1
    out = np.empty(n, dtype=np.int64)
    out[order] = rank
    return out


@dataclass
class CurveCounts:
    """Per (concept, opportunity ``k``): ``n[c, k - 1]`` answers, ``wrong`` of them wrong,
    ``n_pred`` with a prediction and ``pred_wrong`` their summed predicted error."""

    n: np.ndarray  # [C, K]
    wrong: np.ndarray  # [C, K]
    n_pred: np.ndarray  # [C, K]
    pred_wrong: np.ndarray  # [C, K]


def curve_counts(
    concept: np.ndarray,
    opportunity: np.ndarray,
    correct: np.ndarray,
    p: np.ndarray,
    *,
    n_concepts: int,
    max_opportunity: int,
) -> CurveCounts:
    """The counts behind DataShop-style learning curves, the one computation the report and
    the service's analytics share. Rows are (answer, concept of its item) pairs:
    ``concept`` in ``0..n_concepts-1``, 1-based ``opportunity`` (see
    :func:`opportunity_index`), ``correct`` 0/1 and ``p`` the predicted success (nan: no
    prediction, e.g. a learner's first answer in the evaluation protocol). The observed error
    counts every answer; the predicted error the answers with a prediction. Opportunities
    beyond ``max_opportunity`` are left out."""
    concept, opportunity = np.asarray(concept, np.int64), np.asarray(opportunity, np.int64)
    p = np.asarray(p, np.float64)
    keep = (opportunity >= 1) & (opportunity <= max_opportunity)
    key = concept[keep] * max_opportunity + opportunity[keep] - 1
    size = n_concepts * max_opportunity
    wrong = 1.0 - np.asarray(correct, np.float64)[keep]
    pk = p[keep]
    known = ~np.isnan(pk)

    def count(k: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(k, weights=w, minlength=size).reshape(n_concepts, max_opportunity)

    return CurveCounts(
        n=count(key),
        wrong=count(key, wrong),
        n_pred=count(key[known]),
        pred_wrong=count(key[known], 1.0 - pk[known]),
    )


def dataset_concept_names(data: Path | str) -> dict[str, str]:
    """The dataset's concept names by concept id, those it has (ASSISTments' skill names;
    EdNet's tags and the research files' skill numbers have none); empty where its concept
    table cannot be read."""
    from data_loaders.dataset import open_dataset
    from data_loaders.errors import DatasetError

    try:
        table = open_dataset(data).concepts()
    except (DatasetError, OSError, ValueError):
        return {}
    ids, names = table.column("concept_id").to_pylist(), table.column("name").to_pylist()
    return {str(c): str(n).strip() for c, n in zip(ids, names, strict=True) if n and str(n).strip()}


def learning_curves(
    answers: Answers,
    item_concepts: np.ndarray,
    concept_names: Sequence[str],
    *,
    n_concepts: int = 6,
    max_opportunity: int = 20,
    min_count: int = 5,
    names: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Error rate by opportunity, observed and predicted, of the most practised concepts
    (:func:`curve_counts`); ``concept_names`` are the concept ids of the model's vocabulary,
    ``names`` what to call them (:func:`dataset_concept_names`).

    Each answer counts once for each of its item's concepts. The observed error counts every
    answer, the predicted error the scored ones; an opportunity with fewer than
    ``min_count`` answers is left out.
    """
    q = np.asarray(item_concepts)[answers.item]  # [N, K]
    row = np.repeat(np.arange(len(answers.item)), q.shape[1])
    concept = q.reshape(-1)
    keep = concept > 0
    row, concept = row[keep], concept[keep]
    if len(row) == 0:
        return []
    opp = opportunity_index(answers.learner[row], concept)
    counts = np.bincount(concept, minlength=len(concept_names) + 1)
    counts[0] = 0
    top = [int(c) for c in np.argsort(-counts, kind="stable")[:n_concepts] if counts[c] > 0]
    cc = curve_counts(
        concept,
        opp,
        answers.y[row],
        answers.p[row],
        n_concepts=len(concept_names) + 1,
        max_opportunity=max_opportunity,
    )
    curves = []
    for c in top:
        n, n_pred = cc.n[c], cc.n_pred[c]
        ok = np.flatnonzero((n >= min_count) & (n_pred > 0))
        curves.append(
            {
                "concept": str(concept_names[c - 1]),
                "name": (names or {}).get(str(concept_names[c - 1]), ""),
                "answers": int(counts[c]),
                "opportunity": (ok + 1).tolist(),
                "n": n[ok].astype(np.int64).tolist(),
                "observed_error": (cc.wrong[c][ok] / n[ok]).tolist(),
                "predicted_error": (cc.pred_wrong[c][ok] / n_pred[ok]).tolist(),
            }
        )
    return curves


# ---------------------------------------------------------------------- PSI-KT pieces
def trait_summary(traits: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Median, mean, min and max of each trait over the learners that have it (nan: none)."""
    summary = {}
    for k in TRAITS:
        v = traits[k][np.isfinite(traits[k])]
        summary[k] = {
            "median": float(np.median(v)) if len(v) else float("nan"),
            "mean": float(v.mean()) if len(v) else float("nan"),
            "min": float(v.min()) if len(v) else float("nan"),
            "max": float(v.max()) if len(v) else float("nan"),
        }
    return summary


# ---------------------------------------------------------------------- a run's report numbers
@dataclass
class RunAnalysis:
    """What ``tutor report`` shows of a run: every next-step prediction of the reported
    learners (computed once) and the numbers drawn from them."""

    run: LoadedRun
    answers: Answers
    metrics: dict[str, Any]  # next-step metrics over the scored answers
    calibration: list[dict[str, float]]  # metrics.calibration_table
    auc_by_position: list[dict[str, Any]]
    learning_curves: list[dict[str, Any]]
    history: list[dict[str, Any]]  # metrics.jsonl, one record per epoch
    results: dict[str, Any] | None  # results.json, when computed on the same dataset
    summary: dict[str, Any]  # the data and learners reported on
    graph: np.ndarray | None = None  # [C, C] prerequisite probabilities (PSI-KT)
    #: the dataset's concept names by concept id (:func:`dataset_concept_names`)
    concept_names: dict[str, str] = field(default_factory=dict)
    traits: dict[str, np.ndarray] | None = None  # per learner, after their last answer
    trait_summary: dict[str, dict[str, float]] | None = None


def analyse_run(
    lr: LoadedRun,
    device: torch.device,
    *,
    max_position: int = 200,
    progress: bool | Progress = False,
) -> RunAnalysis:
    """The report numbers of a run opened by :func:`load_run` (its checkpoint, on the learners
    it picked); ValueError when there is no learner to report on."""
    model, seqs, users = lr.model, lr.seqs, lr.users
    if len(users) == 0:
        raise ValueError(f"{lr.data}: no learners to report on ({lr.subset})")
    # a learned prerequisite graph and learner traits to show (PSI-KT)
    graph = model.prerequisite_graph() if model.has_traits else None
    interp = graph is not None
    bars = progress_bars(progress)
    try:
        bars.start("next-step predictions", len(users))
        answers = next_step_answers(model, seqs, users, device, advance=bars.advance)
        traits = None
        if interp:
            bars.start("learner traits", len(users))
            traits = final_traits(model, seqs.subset(users), device, advance=bars.advance)
    finally:
        bars.finish()
    s = answers.scored
    y, p, pos = answers.y[s], answers.p[s], answers.position[s]
    vocab = model.vocab
    names = dataset_concept_names(lr.data)
    summary = {
        "dataset": str(lr.data),
        "subset": lr.subset,
        "protocol": lr.protocol,
        "learners in the dataset": seqs.n_users,
        "learners reported": int(len(users)),
        "answers of these learners": int(len(answers.y)),
        "scored predictions": int(s.sum()),
        "items": vocab.n_items,
        "concepts": vocab.n_concepts,
        "clock": "timestamps (days)" if seqs.has_time else "answer index",
        "unknown items dropped": seqs.meta.get("unknown_items", 0),
        "checkpoint epoch": lr.payload.get("extra", {}).get("epoch"),
    }
    return RunAnalysis(
        run=lr,
        answers=answers,
        metrics=metrics(y, p),
        calibration=calibration_table(y, p),
        auc_by_position=auc_by_position(y, p, pos, max_position),
        learning_curves=learning_curves(answers, vocab.item_concepts, vocab.concepts, names=names),
        history=read_history(lr.dir / "metrics.jsonl"),
        results=matching_results(lr.dir, lr.data),
        summary=summary,
        graph=graph.float().cpu().numpy() if graph is not None else None,
        concept_names=names,
        traits=traits,
        trait_summary=trait_summary(traits) if traits is not None else None,
    )


def read_history(path: Path) -> list[dict[str, Any]]:
    """A run's ``metrics.jsonl``: one record per epoch ([] without the file)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def matching_results(run_dir: Path, data_path: Path) -> dict[str, Any] | None:
    """The run's ``results.json`` when it was computed on ``data_path``, else None."""
    path = run_dir / "results.json"
    if not path.is_file():
        return None
    try:
        res = json.loads(path.read_text())
        if Path(res["data"]).resolve() != data_path.resolve():
            return None
        return res
    except (ValueError, KeyError, TypeError):
        return None


__all__ = [
    "LoadedRun",
    "RunAnalysis",
    "analyse_run",
    "auc_by_position",
    "compare_runs",
    "evaluate_run",
    "learning_curves",
    "load_run",
    "opportunity_index",
    "position_buckets",
    "predict_multi_step",
    "trait_summary",
]
