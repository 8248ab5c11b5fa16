"""Offline reports of a trained run: PNG plots and an HTML page (``tutor report``).

:func:`write_report` draws the numbers :func:`kt_models.evaluate.analyse_run` computes of a
run's ``best.pt`` on the run's test learners (the protocol of
:func:`kt_models.evaluate.evaluate_run`: ``split_learners(seqs, seed=..., fold=...)``, or all
learners of another dataset; every next-step prediction is computed once):

* ``calibration.png``: reliability diagram: mean predicted vs observed success per probability
  bin (10 equal-width bins), the bins' answer counts as bars, the ECE in the title;
* ``auc_by_position.png``: AUC by sequence position, where a prediction's *position* is the
  number of the learner's earlier answers it sees (1 for the second answer); buckets 1-5,
  6-10, 11-20, 21-50, 51-100, 101-200 and >200 (cut at ``max_position``), each with its
  number of predictions; a bucket with one answer class only has no AUC and is skipped;
* ``learning_curves.png``: DataShop-style learning curves of the most practised concepts (up
  to 6): error rate by opportunity ``k`` (the learner's ``k``-th answer on the concept; an
  answer to a multi-concept item is an opportunity of each of its concepts), observed vs
  predicted, over the scored answers (a learner's first answer has no prediction);
* ``training.png``: the run's ``metrics.jsonl``: training loss and validation AUC per epoch;
* PSI-KT (any model with ``prerequisite_graph`` and ``learner_traits``) also gets
  ``prerequisite_graph.png`` (edges with probability > 0.5, width by probability; the 40
  concepts of highest degree when there are more; layered by a topological order when the
  edges form a DAG, else on a circle; concepts labelled by the dataset's names where it has
  them, else their ids), a table of its most probable edges by name, and ``traits.png``
  (histograms of alpha, mu, sigma and gamma of each test learner after their last answer).

``index.html`` (self-contained: no external URL) shows the images, a metrics table (the run's
``results.json`` when it was computed on the same dataset, else computed here), the run's
configuration and a data summary; ``report.json`` holds the numbers behind the plots. Every
file is written atomically. matplotlib draws with the Agg canvas (no display, no pyplot).

:func:`plot_comparison` draws the figure of ``tutor evaluate RUN ... --plot FILE``.
"""

from __future__ import annotations

import html
import io
import json
import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from data_loaders.progress import Progress

from .evaluate import RunAnalysis, analyse_run, load_run
from .metrics import json_safe
from .predictions import TRAITS
from .train import pick_device

MAX_GRAPH_NODES = 40
MAX_GRAPH_EDGES = 300
#: the prerequisite edges the report lists by name, most probable first
STRONGEST_EDGES = 15


# ---------------------------------------------------------------------- graph layout
def graph_layout(
    probs: np.ndarray, threshold: float = 0.5
) -> tuple[np.ndarray, list[tuple[int, int]], str]:
    """Node positions ``[n, 2]``, the edges drawn and the layout's name.

    Edges are those with probability > ``threshold``; when they form a DAG the nodes are
    layered by the longest path from a source (a topological order), else on a circle.
    """
    n = probs.shape[0]
    src, dst = np.nonzero(probs > threshold)
    edges = list(zip(src.tolist(), dst.tolist(), strict=True))
    indeg = np.zeros(n, dtype=np.int64)
    np.add.at(indeg, dst, 1)
    out_edges: list[list[int]] = [[] for _ in range(n)]
    for i, j in edges:
        out_edges[i].append(j)
    layer = np.zeros(n, dtype=np.int64)
    ready = [v for v in range(n) if indeg[v] == 0]
    seen = 0
    while ready:
        v = ready.pop()
        seen += 1
        for j in out_edges[v]:
            layer[j] = max(layer[j], layer[v] + 1)
            indeg[j] -= 1
            if indeg[j] == 0:
                ready.append(j)
    pos = np.zeros((n, 2))
    if seen == n and edges:
        for lv in np.unique(layer):
            members = np.flatnonzero(layer == lv)
            pos[members, 0] = lv
            pos[members, 1] = np.linspace(0, 1, len(members) + 2)[1:-1]
        return pos, edges, "layered by topological order"
    angle = 2 * np.pi * np.arange(n) / max(n, 1)
    pos[:, 0], pos[:, 1] = np.cos(angle), np.sin(angle)
    return pos, edges, "circle" + (" (the edges have a cycle)" if edges else "")


# ---------------------------------------------------------------------- drawing
def _figure(width: float, height: float):  # noqa: ANN202 - matplotlib Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_figure(fig: Any, path: Path | str) -> Path:
    """Write ``fig`` as PNG atomically (a temporary file, then a rename)."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _atomic_write(path, buf.getvalue())
    return path


def _draw_calibration(
    ax: Any, table: list[dict[str, float]], label: str | None = None, counts: bool = True
) -> None:
    ax.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1)
    pts = [r for r in table if r["n"] and not math.isnan(r["predicted"])]
    ax.plot(
        [r["predicted"] for r in pts], [r["observed"] for r in pts], marker="o", ms=4, label=label
    )
    if counts:
        twin = ax.twinx()
        centres = [(r["bin_low"] + r["bin_high"]) / 2 for r in table]
        twin.bar(centres, [r["n"] for r in table], width=0.09, color="0.5", alpha=0.25)
        twin.set_ylabel("answers per bin")
        ax.set_zorder(twin.get_zorder() + 1)
        ax.patch.set_visible(False)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted success probability")
    ax.set_ylabel("observed success rate")


def plot_calibration(table: list[dict[str, float]], m: dict[str, Any], path: Path) -> None:
    """The reliability diagram of a calibration table; ``m``: the metrics (ECE, n)."""
    fig = _figure(6, 4.5)
    ax = fig.add_subplot()
    _draw_calibration(ax, table)
    ax.set_title(f"Calibration: ECE {m['ece']:.4f} ({m['n']:,} predictions)")
    save_figure(fig, path)


def plot_auc_by_position(rows: list[dict[str, Any]], overall: float | None, path: Path) -> None:
    fig = _figure(7, 4.5)
    ax = fig.add_subplot()
    shown = [r for r in rows if r["auc"] is not None]
    x = np.arange(len(shown))
    ax.plot(x, [r["auc"] for r in shown], marker="o")
    for i, r in enumerate(shown):
        ax.annotate(
            f"n={r['n']:,}",
            (i, r["auc"]),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=8,
        )
    if overall is not None and not math.isnan(overall):
        ax.axhline(overall, color="0.5", ls="--", lw=1, label=f"all positions ({overall:.4f})")
        ax.legend(loc="lower right")
    ax.margins(x=0.08, y=0.15)
    ax.set_xticks(x, [r["label"] for r in shown])
    skipped = [r["label"] for r in rows if r["auc"] is None and r["n"]]
    ax.set_xlabel(
        "answers seen before the prediction"
        + (f" (skipped, one class only: {', '.join(skipped)})" if skipped else "")
    )
    ax.set_ylabel("AUC")
    ax.set_title("AUC by sequence position")
    save_figure(fig, path)


def plot_learning_curves(curves: list[dict[str, Any]], path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    n = max(len(curves), 1)
    cols = min(3, n)
    rows = -(-n // cols)
    fig = _figure(4 * cols, 3.2 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, c in zip(axes, curves, strict=False):
        ax.plot(c["opportunity"], c["observed_error"], marker="o", ms=3, label="observed")
        ax.plot(
            c["opportunity"], c["predicted_error"], marker="s", ms=3, ls="--", label="predicted"
        )
        ax.set_ylim(0, 1)
        count = f"{c['answers']:,} answers"
        title = (
            f"{c['name'][:40]}\nid {c['concept'][:20]}, {count}"
            if c.get("name")
            else f"{c['concept'][:40]}, {count}"
        )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("opportunity")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("error rate")
        ax.legend(fontsize=7)
    for ax in axes[len(curves) :]:
        ax.set_axis_off()
    if not curves:
        axes[0].text(0.5, 0.5, "no answers with a concept", ha="center", va="center")
    fig.suptitle("Learning curves of the most practised concepts")
    save_figure(fig, path)


def plot_training(history: list[dict[str, Any]], path: Path) -> None:
    fig = _figure(6, 4)
    ax = fig.add_subplot()
    ep = [h["epoch"] for h in history]
    ax.plot(
        ep,
        [h.get("train_loss", np.nan) for h in history],
        marker="o",
        ms=3,
        color="C0",
        label="training loss",
    )
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss", color="C0")
    twin = ax.twinx()
    auc = [h.get("valid_auc", np.nan) for h in history]
    twin.plot(ep, auc, marker="s", ms=3, color="C1", label="validation AUC")
    twin.set_ylabel("validation AUC", color="C1")
    finite = [a if a is not None and not math.isnan(a) else -1 for a in auc]
    if max(finite) >= 0:
        best = int(np.argmax(finite))
        twin.axvline(ep[best], color="0.6", ls=":", lw=1)
    ax.set_title("Training history (dotted: best epoch, best.pt)")
    save_figure(fig, path)


def graph_label(name: str, width: int = 16) -> str:
    """A node's label: at most two lines of ``width`` characters, cut with an ellipsis."""
    lines = textwrap.wrap(name, width) or [""]
    rest = " ".join(lines[1:])
    if len(rest) > width:
        rest = rest[: width - 1].rstrip() + "\u2026"
    return "\n".join([lines[0], rest] if rest else lines[:1])


def strongest_edges(
    probs: np.ndarray,
    ids: Sequence[str],
    names: Mapping[str, str] | None = None,
    n: int = STRONGEST_EDGES,
) -> list[dict[str, Any]]:
    """The ``n`` most probable prerequisite edges ``i -> j`` of ``probs`` (``[C, C]``, the
    diagonal ignored), each with both concepts' ids and names (empty where unnamed)."""
    p = np.array(probs, dtype=np.float64)
    np.fill_diagonal(p, -np.inf)
    flat = np.argsort(-p, axis=None, kind="stable")
    flat = flat[np.isfinite(p.flat[flat])][: max(n, 0)]  # no diagonal, no NaN
    names = names or {}
    out = []
    for i, j in zip(*np.unravel_index(flat, p.shape), strict=True):
        a, b = str(ids[i]), str(ids[j])
        out.append(
            {
                "prerequisite": a,
                "prerequisite_name": names.get(a, ""),
                "dependent": b,
                "dependent_name": names.get(b, ""),
                "probability": float(p[i, j]),
            }
        )
    return out


def plot_prerequisite_graph(
    probs: np.ndarray, ids: Sequence[str], path: Path, names: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Draw the learned prerequisite graph (its :data:`MAX_GRAPH_NODES` best-connected
    concepts) with each concept labelled by its name where ``names`` (by id) has one, else
    its id; returns what was drawn and the :func:`strongest_edges`."""
    c = probs.shape[0]
    strong = probs > 0.5
    degree = strong.sum(0) + strong.sum(1)
    weight = probs.sum(0) + probs.sum(1)
    keep = np.lexsort((-weight, -degree))[:MAX_GRAPH_NODES] if c > MAX_GRAPH_NODES else np.arange(c)
    sub = probs[np.ix_(keep, keep)]
    threshold, note = 0.5, "edges with probability > 0.5"
    if not (sub > 0.5).any() and len(keep) > 1:
        flat = np.sort(sub.ravel())[::-1]
        threshold = float(flat[min(len(keep), len(flat)) - 1]) - 1e-12
        note = "no edge above 0.5; the strongest shown"
    pos, edges, layout = graph_layout(sub, threshold)
    if len(edges) > MAX_GRAPH_EDGES:
        edges = sorted(edges, key=lambda e: -sub[e])[:MAX_GRAPH_EDGES]
        note += f" (the {MAX_GRAPH_EDGES} strongest)"
    size = 6 + 0.12 * len(keep)
    fig = _figure(size, size * 0.8)
    ax = fig.add_subplot()
    for i, j in edges:
        pr = float(sub[i, j])
        ax.annotate(
            "",
            xy=pos[j],
            xytext=pos[i],
            arrowprops={
                "arrowstyle": "-|>",
                "lw": 0.4 + 3.6 * max(pr - 0.5, 0.0) / 0.5,
                "color": "C0",
                "alpha": 0.35 + 0.6 * pr,
                "shrinkA": 7,
                "shrinkB": 7,
                # curved, so that i -> j and j -> i are two distinct arcs
                "connectionstyle": "arc3,rad=0.12",
            },
        )
    ax.scatter(pos[:, 0], pos[:, 1], s=120, color="C1", zorder=3, edgecolor="k", lw=0.5)
    for k, v in enumerate(keep):
        ax.annotate(
            graph_label((names or {}).get(str(ids[v])) or str(ids[v])),
            pos[k],
            textcoords="offset points",
            xytext=(0, 8),
            ha="center",
            fontsize=7,
        )
    ax.set_axis_off()
    ax.margins(0.12)
    shown = f"{len(keep)} of {c} concepts" if len(keep) < c else f"{c} concepts"
    ax.set_title(
        f"Prerequisite graph: {shown}, {note}; arrow = prerequisite -> dependent, "
        f"width = probability; {layout}",
        fontsize=9,
        wrap=True,
    )
    save_figure(fig, path)
    return {
        "concepts": int(c),
        "shown": int(len(keep)),
        "edges_above_half": int(strong.sum()),
        "edges_drawn": len(edges),
        "layout": layout,
        "strongest": strongest_edges(probs, ids, names),
    }


def plot_traits(
    traits: dict[str, np.ndarray], summary: dict[str, dict[str, float]], path: Path
) -> None:
    """Histograms of the learner traits, each titled with its median (``summary``)."""
    fig = _figure(8, 6)
    axes = fig.subplots(2, 2).ravel()
    desc = {
        "alpha": "forgetting rate alpha (per day)",
        "mu": "mean level mu",
        "sigma": "volatility sigma",
        "gamma": "transfer gamma",
    }
    for ax, k in zip(axes, TRAITS, strict=True):
        v = traits[k][np.isfinite(traits[k])]
        ax.hist(v, bins=max(5, min(30, len(v) // 3 or 5)), color="C2", alpha=0.8)
        ax.set_title(f"{desc[k]}: median {summary[k]['median']:.3g}", fontsize=9)
        ax.set_ylabel("learners")
    fig.suptitle(f"Learner traits after the last answer ({len(traits['mu']):,} learners)")
    save_figure(fig, path)


def plot_comparison(
    results: Sequence[dict[str, Any]], path: Path | str, labels: Sequence[str] | None = None
) -> Path:
    """One figure comparing evaluated runs (``evaluate_run`` results): grouped bars of test
    AUC/ACC, AUC by steps ahead per run when multi-step was computed, and the calibration
    curves overlaid."""
    if labels is None:
        names = [Path(r["run"]).name for r in results]
        if len(set(names)) < len(names):
            names = [str(r["run"]) for r in results]
        labels = [
            n if n == r["model"] else f"{n} ({r['model']})"
            for n, r in zip(names, results, strict=True)
        ]
    multi = [r for r in results if r.get("multi_step", {}).get("by_steps_ahead")]
    panels = 3 if multi else 2
    fig = _figure(5 * panels, 4.5)
    axes = fig.subplots(1, panels)
    ax = axes[0]
    width = 0.8 / max(len(results), 1)
    for i, (r, lab) in enumerate(zip(results, labels, strict=True)):
        vals = [r["test"].get("auc", np.nan), r["test"].get("acc", np.nan)]
        x = np.arange(2) - 0.4 + width * (i + 0.5)
        bars = ax.bar(x, vals, width=width, label=lab, color=f"C{i % 10}")
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(np.arange(2), ["AUC", "ACC"])
    lo = min([r["test"].get(k, 1.0) for r in results for k in ("auc", "acc")] + [1.0])
    ax.set_ylim(max(0.0, (lo if not math.isnan(lo) else 0.5) - 0.1), 1.0)
    ax.set_title("Next-step test metrics")
    ax.legend(fontsize=7, loc="lower right")
    if multi:
        ax = axes[1]
        for i, (r, lab) in enumerate(zip(results, labels, strict=True)):
            per = r.get("multi_step", {}).get("by_steps_ahead")
            if not per:
                continue
            ks = sorted(per, key=int)
            ax.plot(
                [int(k) for k in ks],
                [per[k].get("auc", np.nan) for k in ks],
                marker="o",
                ms=3,
                label=lab,
                color=f"C{i % 10}",
            )
        ax.set_xlabel("steps ahead")
        ax.set_ylabel("AUC")
        ax.set_title("Multi-step AUC by steps ahead")
        ax.legend(fontsize=7)
    ax = axes[-1]
    for i, (r, lab) in enumerate(zip(results, labels, strict=True)):
        if r.get("calibration"):
            _draw_calibration(ax, r["calibration"], label=lab, counts=False)
            ax.get_lines()[-1].set_color(f"C{i % 10}")
    ax.set_title("Calibration")
    ax.legend(fontsize=7, loc="upper left")
    return save_figure(fig, path)


# ---------------------------------------------------------------------- the report
def write_report(
    run_dir: Path | str,
    out_dir: Path | str,
    *,
    data: Path | str | None = None,
    device: str = "auto",
    max_position: int = 200,
    checkpoint: str = "best.pt",
    progress: bool | Progress = False,
) -> Path:
    """Write the plots, ``report.json`` and ``index.html`` of a run into ``out_dir``;
    returns the HTML's path. Raises FileNotFoundError for a missing run directory or
    ``run.json``, :class:`~kt_models.base.CheckpointError` for a missing/bad checkpoint and
    ValueError when there is no learner to report on. ``progress``: True for bars on stderr,
    or a :class:`~data_loaders.progress.Progress`."""
    out_dir = Path(out_dir)
    dev = pick_device(device)
    lr = load_run(run_dir, data=data, device=dev, checkpoint=checkpoint)
    a = analyse_run(lr, dev, max_position=max_position, progress=progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures, graph_drawn = _draw_figures(a, out_dir)
    run = a.run.record
    numbers: dict[str, Any] = {"model": run["model"], "run": str(a.run.dir), "metrics": a.metrics}
    numbers["calibration"] = {"ece": a.metrics.get("ece"), "bins": a.calibration}
    numbers["auc_by_position"] = a.auc_by_position
    numbers["learning_curves"] = a.learning_curves
    if graph_drawn is not None:
        numbers["prerequisite_graph"] = graph_drawn
    if a.trait_summary is not None:
        numbers["traits"] = a.trait_summary
    numbers["data"] = a.summary
    text = json.dumps(json_safe(numbers), indent=2) + "\n"
    _atomic_write(out_dir / "report.json", text.encode())
    page = _html(run, a.run.dir, figures, a.metrics, a.results, numbers, a.summary)
    _atomic_write(out_dir / "index.html", page.encode())
    return out_dir / "index.html"


def _draw_figures(
    a: RunAnalysis, out_dir: Path
) -> tuple[list[tuple[str, str, str]], dict[str, Any] | None]:
    """Draw every figure of the report: (file, title, caption) of each in page order, and
    what the prerequisite graph's drawing shows (None without a graph)."""
    shown: list[tuple[str, str, str]] = []
    graph_drawn = None
    plot_calibration(a.calibration, a.metrics, out_dir / "calibration.png")
    shown.append(
        (
            "calibration.png",
            "Calibration",
            "Mean predicted vs observed success rate per probability bin (10 equal-width bins; "
            "bars: answers per bin). ECE: answer-weighted mean gap.",
        )
    )
    plot_auc_by_position(a.auc_by_position, a.metrics.get("auc"), out_dir / "auc_by_position.png")
    shown.append(
        (
            "auc_by_position.png",
            "AUC by sequence position",
            "AUC of the predictions grouped by how many of the learner's answers they see "
            "(n: predictions per bucket; buckets with one answer class are skipped).",
        )
    )
    plot_learning_curves(a.learning_curves, out_dir / "learning_curves.png")
    shown.append(
        (
            "learning_curves.png",
            "Learning curves",
            "Error rate by opportunity (the learner's k-th answer on the concept), observed "
            "(solid) and predicted (dashed), for the most practised concepts; opportunities "
            "with fewer than 5 scored answers are left out.",
        )
    )
    if a.history:
        plot_training(a.history, out_dir / "training.png")
        shown.append(
            ("training.png", "Training history", "Training loss and validation AUC per epoch.")
        )
    if a.graph is not None:
        ids = a.run.model.vocab.concepts
        path = out_dir / "prerequisite_graph.png"
        graph_drawn = plot_prerequisite_graph(a.graph, ids, path, a.concept_names)
        shown.append(
            (
                "prerequisite_graph.png",
                "Prerequisite graph",
                "Learned edge probabilities P(i is a prerequisite of j); edges above 0.5, "
                "width by probability.",
            )
        )
    if a.traits is not None and a.trait_summary is not None:
        plot_traits(a.traits, a.trait_summary, out_dir / "traits.png")
        shown.append(
            (
                "traits.png",
                "Learner traits",
                "Posterior-mean traits of each reported learner after their last answer.",
            )
        )
    return shown, graph_drawn


# ---------------------------------------------------------------------- HTML
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 1.5em 0; } img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; } pre { background: #f6f6f6; padding: 0.8em; }
"""


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.4f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{e(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(
    run: dict[str, Any],
    run_dir: Path,
    figures: list[tuple[str, str, str]],
    computed: dict[str, float],
    results: dict[str, Any] | None,
    numbers: dict[str, Any],
    summary: dict[str, Any],
) -> str:
    e = html.escape
    keys = ("n", "auc", "acc", "rmse", "logloss", "ece")
    header = ["evaluation", "answers", "AUC", "ACC", "RMSE", "log-loss", "ECE"]
    if results is not None:
        rows = [["next step (results.json)", *[results["test"].get(k) for k in keys]]]
        ms = results.get("multi_step")
        if ms:
            rows.append([f"{ms.get('horizon')}-step (results.json)", *[ms.get(k) for k in keys]])
        source = "from the run's results.json (tutor evaluate)"
    else:
        rows = [["next step (computed)", *[computed.get(k) for k in keys]]]
        source = "computed for this report (no results.json for this dataset)"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Report: {e(run['model'])} {e(run_dir.name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{e(run['model'])} run <code>{e(str(run_dir))}</code></h1>",
        f"<p>Generated {e(datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC'))}.</p>",
        f"<h2>Metrics</h2><p>{e(source)}.</p>",
        _table(header, rows),
    ]
    for file, title, caption in figures:
        parts.append(
            f'<figure><h2>{e(title)}</h2><img src="{e(file)}" alt="{e(title)}">'
            f"<figcaption>{e(caption)}</figcaption></figure>"
        )
    graph = numbers.get("prerequisite_graph")
    if graph and graph.get("strongest"):
        parts.append("<h2>Strongest prerequisite edges</h2>")

        def concept(cid: str, name: str) -> str:
            return f"{name} ({cid})" if name else cid

        parts.append(
            _table(
                ["prerequisite", "dependent", "probability"],
                [
                    [
                        concept(r["prerequisite"], r["prerequisite_name"]),
                        concept(r["dependent"], r["dependent_name"]),
                        r["probability"],
                    ]
                    for r in graph["strongest"]
                ],
            )
        )
    parts.append("<h2>AUC by position</h2>")
    parts.append(
        _table(
            ["answers seen", "predictions", "AUC"],
            [[r["label"], r["n"], r["auc"]] for r in numbers["auc_by_position"]],
        )
    )
    parts.append("<h2>Data</h2>")
    parts.append(_table(["", "value"], [[k, v] for k, v in summary.items()]))
    parts.append("<h2>Configuration</h2>")
    conf = {
        k: run.get(k)
        for k in (
            "model",
            "model_config",
            "train_config",
            "split",
            "time_unit",
            "device",
            "torch",
            "world_size",
        )
    }
    parts.append(f"<pre>{e(json.dumps(conf, indent=2))}</pre>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


__all__ = [
    "graph_layout",
    "plot_comparison",
    "plot_prerequisite_graph",
    "strongest_edges",
    "write_report",
]
