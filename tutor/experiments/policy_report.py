"""The outcomes of a policy evaluation: per-learner results, confidence intervals, the verdict
against the baselines, and what is written (tables, plots, ``results.json``, the summary).

:func:`tutor.experiments.policy_eval.run_policy` returns a :class:`PolicyRun` per policy and
cohort; :func:`summarise` pools one policy's runs over seeds into a :class:`PolicySummary`
(means with 95% intervals over learners and seeds); a :class:`SettingResult` holds one
setting's summaries and says whether our best policy beats each baseline
(:meth:`SettingResult.verdict`, with the paired difference over the same learners).
:func:`write_outputs` writes ``<setting>/table.md``, ``results.json`` and ``mastery.png``;
:func:`write_summary` gathers every setting's verdict into ``summary.md``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .policy_setup import EvalConfig, PolicyEvalError, parse_policy
from .simulate import WorldSetting


# ---------------------------------------------------------------------- runs
@dataclass
class PolicyRun:
    """Per-learner outcomes of one policy on one cohort."""

    policy: str
    seed: int
    curve: np.ndarray  # (L, N) mean true mastery after each question
    all_mastered: np.ndarray  # (L, N) bool: every concept mastered after each question
    final: np.ndarray  # (L,) mean true mastery after the last question
    retention: np.ndarray  # (L,) a week (retention_days) later
    success: np.ndarray  # (L,) share of correct answers
    questions_to_all: np.ndarray  # (L,) first question count with all mastered, or nan
    choices: np.ndarray  # (L, N) items chosen
    fallbacks: int = 0
    seconds: float = 0.0


# ---------------------------------------------------------------------- statistics
def mean_ci(x: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the normal-approximation confidence interval of the mean
    (``x`` pools learners over seeds; every learner is an independent draw)."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    z = {0.95: 1.959964}.get(level, 1.959964)
    half = z * x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else float("nan")
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


def share_ci(flags: np.ndarray) -> tuple[float, float, float]:
    """(share, low, high): Wilson's 95% interval of a proportion."""
    n = len(flags)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    p, z = float(np.mean(flags)), 1.959964
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return p, centre - half, centre + half


@dataclass
class PolicySummary:
    """One policy's outcomes pooled over seeds: (mean, low, high) of each, and the curves."""

    policy: str
    final: tuple[float, float, float]
    retention: tuple[float, float, float]
    success: tuple[float, float, float]
    share_all_mastered: tuple[float, float, float]
    questions_to_all: tuple[float, float, float]  # among learners who mastered everything
    curve_mean: list[float]
    curve_all_mastered: list[float]
    n_learners: int
    fallbacks: int
    seconds: float


def summarise(runs: list[PolicyRun]) -> PolicySummary:
    """Pool one policy's runs over seeds."""
    final = np.concatenate([r.final for r in runs])
    qta = np.concatenate([r.questions_to_all for r in runs])
    curve = np.concatenate([r.curve for r in runs])
    allm = np.concatenate([r.all_mastered for r in runs])
    return PolicySummary(
        policy=runs[0].policy,
        final=mean_ci(final),
        retention=mean_ci(np.concatenate([r.retention for r in runs])),
        success=mean_ci(np.concatenate([r.success for r in runs])),
        share_all_mastered=share_ci(np.isfinite(qta)),
        questions_to_all=mean_ci(qta),
        curve_mean=curve.mean(axis=0).tolist(),
        curve_all_mastered=allm.mean(axis=0).tolist(),
        n_learners=len(final),
        fallbacks=sum(r.fallbacks for r in runs),
        seconds=sum(r.seconds for r in runs),
    )


def paired_difference(a: list[PolicyRun], b: list[PolicyRun]) -> tuple[float, float, float]:
    """Mean and 95% CI of (a - b) final true mastery over the same learners (paired)."""
    da = np.concatenate([r.final for r in sorted(a, key=lambda r: r.seed)])
    db = np.concatenate([r.final for r in sorted(b, key=lambda r: r.seed)])
    return mean_ci(da - db)


# ---------------------------------------------------------------------- one setting
@dataclass
class SettingResult:
    """Everything one setting's evaluation found: per-policy summaries and runs, the models'
    validation AUC, the HTTP check and the tuning cohort's scores."""

    setting: WorldSetting
    config: EvalConfig
    summaries: dict[str, PolicySummary]
    runs: dict[str, list[PolicyRun]] = field(repr=False, default_factory=dict)
    model_auc: dict[str, float] = field(default_factory=dict)
    http: dict[str, Any] | None = None
    #: tuning cohort results: policy name -> mean final true mastery
    tuning: dict[str, float] = field(default_factory=dict)

    def best_ours(self) -> str | None:
        """The recommender policy with the highest mean final true mastery (None: none ran)."""
        ours = [p for p in self.summaries if parse_policy(p)[0] == "service"]
        return max(ours, key=lambda p: self.summaries[p].final[0]) if ours else None

    def verdict(self) -> list[dict[str, Any]]:
        """Our best policy against each baseline: CIs overlap or not, and the paired gap."""
        best = self.best_ours()
        out: list[dict[str, Any]] = []
        if best is None:
            return out
        b = self.summaries[best].final
        for base in ("skill-builder", "lowest-mastery", "random", "textbook"):
            if base not in self.summaries:
                continue
            o = self.summaries[base].final
            diff = paired_difference(self.runs[best], self.runs[base])
            out.append(
                {
                    "best": best,
                    "baseline": base,
                    "best_final": b,
                    "baseline_final": o,
                    "non_overlapping_win": bool(b[1] > o[2]),
                    "paired_difference": diff,
                }
            )
        return out


# ---------------------------------------------------------------------- reports
def _fmt(ci: tuple[float, float, float], nd: int = 3) -> str:
    m, lo, hi = ci
    if not math.isfinite(m):
        return "n/a"
    if not math.isfinite(lo):
        return f"{m:.{nd}f}"
    return f"{m:.{nd}f} [{lo:.{nd}f}, {hi:.{nd}f}]"


def results_table(res: SettingResult) -> str:
    """The markdown table of one setting (every outcome with its 95% CI)."""
    cfg = res.config
    n_seeds = len(cfg.seeds)
    head = (
        f"### Setting `{res.setting.name}`: {res.setting.description}\n\n"
        f"{cfg.learners} learners x {n_seeds} seeds per policy, N = {cfg.questions} questions "
        f"in sessions of {cfg.session_length} (median gap {cfg.session_gap_days:g} days); "
        f"retention {cfg.retention_days:g} days after the last question; "
        f"'mastered' = true mastery >= {cfg.mastery_threshold:g}. "
        "95% CIs over learners and seeds. The recommender's settings unless tuned: target "
        f"{cfg.target:g}, mastery threshold {cfg.rec_mastery_threshold:g} on the "
        f"'{cfg.mastery_scale}' mastery scale, review threshold {cfg.review_threshold:g}.\n"
    )
    if res.model_auc:
        aucs = ", ".join(f"{m} {a:.3f}" for m, a in sorted(res.model_auc.items()))
        head += f"\nModels' validation AUC on the simulated training log: {aucs}.\n"
    lines = [
        head,
        "| policy | mean true mastery after N | retention after a week | success rate | "
        "all concepts mastered within N | questions to master all (those who did) | fallbacks |",
        "|---|---|---|---|---|---|---:|",
    ]
    order = sorted(res.summaries.values(), key=lambda s: -s.final[0])
    for s in order:
        lines.append(
            f"| {s.policy} | {_fmt(s.final)} | {_fmt(s.retention)} | {_fmt(s.success, 2)} | "
            f"{_fmt(s.share_all_mastered, 2)} | {_fmt(s.questions_to_all, 1)} | {s.fallbacks} |"
        )
    v = res.verdict()
    if v:
        lines += ["", f"Best of ours: **{v[0]['best']}**."]
        lines += [
            "",
            "| baseline | its mastery | ours - baseline (paired, 95% CI) | non-overlapping CIs? |",
            "|---|---|---|---|",
        ]
        for r in v:
            lines.append(
                f"| {r['baseline']} | {_fmt(r['baseline_final'])} | "
                f"{_fmt(r['paired_difference'])} | {'yes' if r['non_overlapping_win'] else 'no'} |"
            )
    if res.tuning:
        lines += [
            "",
            f"Tuning (separate cohort, seed {cfg.tune_seed}, {cfg.tune_learners} learners): "
            "mean true mastery after N of each recommender setting tried:",
            "",
            "| policy and settings | mean true mastery |",
            "|---|---:|",
        ]
        for name, v in sorted(res.tuning.items(), key=lambda kv: -kv[1]):
            lines.append(f"| {name} | {v:.3f} |")
    if res.http is not None:
        h = res.http
        lines += [
            "",
            f"HTTP path check ({h['policy']}, {h['learners']} learners x {h['questions']} "
            f"questions through FastAPI's TestClient): {h['same']}/{h['total']} choices identical "
            "to the in-process run.",
        ]
    return "\n".join(lines) + "\n"


def plot_curves(res: SettingResult, path: Path) -> None:
    """Mean true mastery and share with every concept mastered, against questions asked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    order = sorted(res.summaries.values(), key=lambda s: -s.final[0])
    cmap = plt.get_cmap("tab20")
    for k, s in enumerate(order):
        kind = parse_policy(s.policy)[0]
        style = "-" if kind == "service" else "--"
        x = np.arange(1, len(s.curve_mean) + 1)
        axes[0].plot(x, s.curve_mean, style, color=cmap(k % 20), label=s.policy, lw=1.6)
        axes[1].plot(x, s.curve_all_mastered, style, color=cmap(k % 20), label=s.policy, lw=1.6)
    axes[0].set_ylabel("mean true mastery (all concepts)")
    axes[1].set_ylabel(f"share with every concept >= {res.config.mastery_threshold:g}")
    for ax in axes:
        ax.set_xlabel("questions asked")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(
        f"setting '{res.setting.name}': {res.config.learners * len(res.config.seeds)} learners "
        "per policy (dashed: baselines)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def result_json(res: SettingResult) -> dict[str, Any]:
    """Everything behind the table and plot (no per-learner arrays)."""
    cfg = asdict(res.config)
    return {
        "setting": res.setting.to_dict(),
        "config": cfg,
        "model_auc": res.model_auc,
        "summaries": {p: asdict(s) for p, s in res.summaries.items()},
        "verdict": res.verdict(),
        "http_check": res.http,
        "tuning": res.tuning,
    }


def write_outputs(res: SettingResult, out: Path) -> dict[str, Path]:
    """``table.md``, ``results.json`` and ``mastery.png`` under ``out/<setting>/``."""
    d = out / res.setting.name
    d.mkdir(parents=True, exist_ok=True)
    paths = {"table": d / "table.md", "json": d / "results.json", "plot": d / "mastery.png"}
    paths["table"].write_text(results_table(res))
    paths["json"].write_text(json.dumps(result_json(res), indent=2, default=float) + "\n")
    plot_curves(res, paths["plot"])
    return paths


def write_summary(out: Path) -> Path:
    """``out/summary.md``: one row per setting found under ``out`` (its ``results.json``):
    our best policy and its mean true mastery against each baseline's, with the verdict."""
    rows = []
    for f in sorted(out.glob("*/results.json")):
        data = json.loads(f.read_text())
        for v in data.get("verdict", []):
            rows.append((data["setting"]["name"], v))
    if not rows:
        raise PolicyEvalError(f"{out}: no */results.json to summarise (run tutor policy-eval)")
    lines = [
        "# Policy evaluation: summary",
        "",
        "Mean true mastery after N questions (95% CI over learners and seeds) of our best "
        "policy in each setting against each baseline; the paired difference uses the same "
        "learners under both policies. Written by `tutor policy-eval` "
        "(tutor/experiments/policy_eval.py).",
        "",
        "| setting | our best policy | its mastery | baseline | baseline's mastery | "
        "ours - baseline (paired) | non-overlapping win? |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in rows:
        lines.append(
            f"| {name} | {v['best']} | {_fmt(tuple(v['best_final']))} | {v['baseline']} | "
            f"{_fmt(tuple(v['baseline_final']))} | {_fmt(tuple(v['paired_difference']))} | "
            f"{'yes' if v['non_overlapping_win'] else 'no'} |"
        )
    path = out / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path
