"""Simulated learners for policy evaluation: interactive learners, named world settings and
calibration of the simulator to real data.

Builds on :mod:`data_loaders.simulate` (the seeded world: prerequisite DAG, items with
difficulty, learners who learn, forget, guess and slip). What this module adds:

* :class:`WorldExtras` / :class:`SimWorld`: three knobs the base world keeps fixed, so that
  settings can differ in how much prerequisites and prior knowledge matter:

  - ``prereq_floor``: the share of learning that still happens while a concept's
    prerequisites are not mastered (the base world's 0.2): the learning update's support is
    ``floor + (1 - floor) * min(prerequisite mastery)``; 0 means nothing is learned on a
    concept whose prerequisites are unknown (strong prerequisites);
  - ``prior_shift``: added to every learner's prior-mastery logit (calibration);
  - ``difficulty_low`` / ``difficulty_high``: the items' difficulty range (the base world's
    U(0.1, 0.75) rescaled linearly, so the same seed gives the same ranking of items);
  - ``item_reach`` (off by default): in the base world an item's difficulty does not change
    what is learned from it (only whether it is answered correctly, which halves or not the
    gain). With a reach ``r`` the gain is also multiplied by
    ``sigmoid(steepness * (m_K + r - d))``: an item far beyond the learner's mastery (``d``
    more than ``r`` above ``m_K``) teaches little, one within reach teaches fully. This is
    the zone-of-proximal-development assumption behind target-difficulty policies, so it is
    a separate knob, and the results say which settings use it.

* :meth:`SimWorld.cohort`: new learners of the same world (same graph and items), drawn from
  another seed with the world's trait distributions; training logs and evaluation cohorts
  never share learners.
* :class:`SimLearner`: one learner of a cohort as an object a policy can drive: given an item
  and a time it answers (forgetting first, then the answer, then learning) and it reports its
  true mastery at any time without changing it. The truth is only visible to the evaluator.
* :data:`SETTINGS`: named settings (``default``, ``prerequisites``: strong prerequisites,
  ``forgetting``: strong forgetting, the same two with ``-zpd`` where items beyond reach
  teach little, ``calibrated``: fitted to ASSISTments 2009).
* Calibration (:func:`real_stats`, :func:`simulated_stats`, :func:`calibrate`,
  :func:`junyi_graph_stats`): summary statistics of a real four-line dataset (ASSISTments
  2009 as AKT distributes it: correct rate, sequence lengths, learning curves by opportunity)
  and of simulated logs, and a seeded search over guess, slip, learning rate and prior shift
  that makes the simulated statistics match the real ones. The real logs have no clock, so
  forgetting cannot be fitted from them; the Junyi exercise table gives a real prerequisite
  graph whose shape (prerequisites per concept) is compared with the simulated DAG.
"""

from __future__ import annotations

import copy
import csv
import gzip
import io
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from data_loaders.errors import IngestError
from data_loaders.simulate import (
    LearnerState,
    SimulatedLog,
    SimulatedPopulation,
    SimulationParams,
    draw_learner_traits,
)

DAY_MS = 86_400_000


class SimulationError(ValueError):
    """Bad simulator input (unknown setting, out-of-range parameter, unreadable data)."""


@dataclass(frozen=True)
class WorldExtras:
    """The knobs :class:`SimWorld` adds to :class:`SimulationParams` (see the module doc); the
    defaults are the base world's, so ``WorldExtras()`` changes nothing."""

    #: share of learning that happens while the prerequisites are not mastered (0: none)
    prereq_floor: float = 0.2
    #: added to every learner's prior-mastery logit
    prior_shift: float = 0.0
    #: the items' difficulty range (the base world's U(0.1, 0.75) rescaled)
    difficulty_low: float = 0.1
    difficulty_high: float = 0.75
    #: how far beyond the learner's mastery an item still teaches fully (None: off)
    item_reach: float | None = None

    def validate(self) -> None:
        if not 0.0 <= self.prereq_floor <= 1.0:
            raise SimulationError(f"prereq_floor must be in [0, 1], got {self.prereq_floor}")
        if not 0.0 <= self.difficulty_low < self.difficulty_high <= 1.0:
            raise SimulationError(
                "difficulty range must satisfy 0 <= difficulty_low < difficulty_high <= 1, "
                f"got {self.difficulty_low}, {self.difficulty_high}"
            )
        if self.item_reach is not None and not 0.0 <= self.item_reach <= 1.0:
            raise SimulationError(f"item_reach must be in [0, 1], got {self.item_reach}")
        if not math.isfinite(self.prior_shift) or abs(self.prior_shift) > 6:
            raise SimulationError(f"prior_shift must be in [-6, 6], got {self.prior_shift}")


@dataclass(frozen=True)
class WorldSetting:
    """A named simulator setting: base parameters plus extras, with what it is meant to show."""

    name: str
    params: SimulationParams
    extras: WorldExtras
    description: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "params": self.params.to_dict(),
            "extras": asdict(self.extras),
        }


class SimWorld(SimulatedPopulation):
    """:class:`SimulatedPopulation` with the extras of :class:`WorldExtras`.

    With ``WorldExtras()`` it behaves exactly as the base population (same seed, same log).
    """

    def __init__(
        self,
        params: SimulationParams | None = None,
        seed: int = 0,
        extras: WorldExtras | None = None,
    ) -> None:
        self.extras = extras or WorldExtras()
        self.extras.validate()
        try:
            super().__init__(params, seed)
        except IngestError as exc:  # the base parameters' checks, as a simulator error
            raise SimulationError(str(exc)) from exc
        self._apply_extras()

    def _apply_extras(self) -> None:
        ex = self.extras
        if ex.prior_shift:
            logit = np.log(self.prior) - np.log1p(-self.prior)
            self.prior = 1.0 / (1.0 + np.exp(-(logit + ex.prior_shift)))
        if (ex.difficulty_low, ex.difficulty_high) != (0.1, 0.75):
            self.item_difficulty = ex.difficulty_low + (self.item_difficulty - 0.1) / 0.65 * (
                ex.difficulty_high - ex.difficulty_low
            )

    def learn(
        self, state: LearnerState, learners: np.ndarray, items: np.ndarray, correct: np.ndarray
    ) -> None:
        """The base learning update with ``prereq_floor`` in place of its fixed 0.2 and, with
        ``item_reach``, less learning from items beyond reach (see the module docstring)."""
        floor = self.extras.prereq_floor
        gain_scale = self.learning_rate[learners] * (0.5 + 0.5 * correct)
        if self.extras.item_reach is not None:
            m_k = self.item_mastery(state, learners, items)
            z = self.params.steepness * (m_k + self.extras.item_reach - self.item_difficulty[items])
            gain_scale = gain_scale / (1.0 + np.exp(-z))
        super().learn(state, learners, items, correct, gain_scale=gain_scale, prereq_floor=floor)

    def cohort(self, learners: int, seed: int) -> SimWorld:
        """``learners`` new learners of this world (same graph and items), drawn with the
        world's trait distributions from ``seed`` (a stream no world draws from)."""
        if learners < 1:
            raise SimulationError(f"a cohort needs at least 1 learner, got {learners}")
        new = copy.copy(self)
        new.params = replace(self.params, learners=int(learners))
        rng = np.random.default_rng([self.seed, 1_000 + int(seed)])
        traits = draw_learner_traits(new.params, rng, int(learners))
        for k, v in traits.items():
            setattr(new, k, v)
        new.prior = traits["prior"]
        if self.extras.prior_shift:
            logit = np.log(new.prior) - np.log1p(-new.prior)
            new.prior = 1.0 / (1.0 + np.exp(-(logit + self.extras.prior_shift)))
        return new

    def true_mastery(
        self, state: LearnerState, learners: np.ndarray, at_ms: np.ndarray
    ) -> np.ndarray:
        """Mastery of every concept of ``learners`` at ``at_ms`` (forgetting applied to a copy;
        the state does not change). Shape ``(len(learners), C)``."""
        learners = np.asarray(learners, dtype=np.int64)
        dt_days = np.maximum(np.asarray(at_ms) - state.clock[learners], 0) / DAY_MS
        f = np.exp(-math.log(2) * dt_days / self.half_life_days[learners])
        prior = self.prior[learners]
        return prior + (state.mastery[learners] - prior) * f[:, None]


class SimLearner:
    """One simulated learner, driven one item at a time (see the module docstring).

    ``uniforms`` (optional) are the learner's pre-drawn random numbers, one per answer: giving
    the same numbers to every policy makes the comparison paired (common random numbers: the
    same learner is as lucky at answer k under every policy).
    """

    def __init__(
        self,
        world: SimWorld,
        state: LearnerState,
        index: int,
        rng: np.random.Generator,
        uniforms: np.ndarray | None = None,
    ) -> None:
        if not 0 <= index < world.n_learners:
            raise SimulationError(f"learner {index} is not in a cohort of {world.n_learners}")
        self.world, self.state, self.index, self.rng = world, state, int(index), rng
        self._uniforms = uniforms
        self.n_answers = 0

    @property
    def clock_ms(self) -> int:
        """The time of the learner's last update (ms since the epoch)."""
        return int(self.state.clock[self.index])

    def _check(self, item: int, at_ms: int) -> None:
        if not 0 <= int(item) < self.world.n_items:
            raise SimulationError(f"item {item} is not one of the {self.world.n_items} items")
        if int(at_ms) < self.clock_ms:
            raise SimulationError(
                f"answer at {at_ms} is earlier than the learner's clock {self.clock_ms}"
            )

    def p_correct(self, item: int, at_ms: int) -> float:
        """P(correct) if the learner answered ``item`` at ``at_ms`` (nothing changes)."""
        self._check(item, at_ms)
        tmp = LearnerState(
            mastery=self.world.true_mastery(self.state, [self.index], [at_ms]),
            clock=np.array([at_ms], dtype=np.int64),
        )
        return float(self.world.p_correct(tmp, np.array([0]), np.array([int(item)]))[0])

    def answer(self, item: int, at_ms: int) -> int:
        """Answer ``item`` at ``at_ms``: forget up to then, draw the answer, learn. 0 or 1."""
        self._check(item, at_ms)
        w, i = self.world, np.array([self.index])
        it = np.array([int(item)])
        w.forget(self.state, i, np.array([int(at_ms)], dtype=np.int64))
        p = float(w.p_correct(self.state, i, it)[0])
        if self._uniforms is not None and self.n_answers < len(self._uniforms):
            u = float(self._uniforms[self.n_answers])
        else:
            u = float(self.rng.random())
        correct = int(u < p)
        w.learn(self.state, i, it, np.array([correct], dtype=np.int8))
        self.n_answers += 1
        return correct

    def true_mastery(self, at_ms: int | None = None) -> np.ndarray:
        """True mastery of every concept at ``at_ms`` (default: the learner's clock)."""
        t = self.clock_ms if at_ms is None else int(at_ms)
        return self.world.true_mastery(self.state, [self.index], [t])[0]


# ---------------------------------------------------------------------- settings
def _setting(name: str, description: str, extras: WorldExtras, **params: Any) -> WorldSetting:
    return WorldSetting(name, SimulationParams(**params), extras, description)


SETTINGS: dict[str, WorldSetting] = {
    s.name: s
    for s in (
        _setting(
            "default",
            "the base world of data_loaders/simulate.py (prerequisite support floor 0.2, "
            "5-day median half-life)",
            WorldExtras(),
        ),
        _setting(
            "prerequisites",
            "strong prerequisites: nothing is learned on a concept whose prerequisites are "
            "unknown (floor 0), 40% of items also need a prerequisite, weak prior knowledge, "
            "slow forgetting (20-day median half-life)",
            WorldExtras(prereq_floor=0.0, prior_shift=-0.5),
            second_concept_rate=0.4,
            half_life_days=20.0,
        ),
        _setting(
            "forgetting",
            "strong forgetting: 1.5-day median half-life, the base prerequisite floor",
            WorldExtras(prereq_floor=0.2),
            half_life_days=1.5,
        ),
        _setting(
            "prerequisites-zpd",
            "the prerequisites setting where items beyond reach teach little (item_reach 0.2)",
            WorldExtras(prereq_floor=0.0, prior_shift=-0.5, item_reach=0.2),
            second_concept_rate=0.4,
            half_life_days=20.0,
        ),
        _setting(
            "forgetting-zpd",
            "the forgetting setting where items beyond reach teach little (item_reach 0.2)",
            WorldExtras(prereq_floor=0.2, item_reach=0.2),
            half_life_days=1.5,
        ),
    )
}


def load_setting(name: str, calibration: Path | str | None = None) -> WorldSetting:
    """A named setting, or ``calibrated`` from a calibration JSON (:func:`calibrate`'s output,
    default ``docs/simulate/calibration.json``)."""
    if name == "calibrated":
        path = Path(calibration or Path("docs/simulate/calibration.json"))
        if not path.is_file():
            raise SimulationError(
                f"{path}: no calibration file (run: tutor simulate calibrate --out {path.parent})"
            )
        data = json.loads(path.read_text())
        return setting_from_dict(data["setting"])
    if name not in SETTINGS:
        known = ", ".join([*SETTINGS, "calibrated"])
        raise SimulationError(f"unknown simulator setting {name!r}; known: {known}")
    return SETTINGS[name]


def setting_from_dict(d: dict[str, Any]) -> WorldSetting:
    """The inverse of :meth:`WorldSetting.to_dict` (unknown keys are refused)."""
    pnames = {f.name for f in fields(SimulationParams)}
    enames = {f.name for f in fields(WorldExtras)}
    bad = (set(d.get("params", {})) - pnames) | (set(d.get("extras", {})) - enames)
    if bad:
        raise SimulationError(f"unknown simulator parameters: {', '.join(sorted(bad))}")
    return WorldSetting(
        name=str(d.get("name", "custom")),
        params=SimulationParams(**d.get("params", {})),
        extras=WorldExtras(**d.get("extras", {})),
        description=str(d.get("description", "")),
    )


def make_world(setting: WorldSetting, *, learners: int | None = None, seed: int = 0) -> SimWorld:
    """The setting's world with ``learners`` learners (default: the setting's)."""
    params = setting.params if learners is None else replace(setting.params, learners=learners)
    return SimWorld(params, seed, setting.extras)


def write_dataset(
    world: SimWorld, log: SimulatedLog, out: Path | str, *, overwrite: bool = False
) -> dict[str, Any]:
    """Write a simulated log as a canonical dataset (what ``tutor ingest simulate`` writes,
    plus the extras in a ``simulation_extras`` note). Returns the manifest's counts."""
    from data_loaders.simulate import write_simulation
    from data_loaders.writer import DatasetWriter, WriterOptions

    with DatasetWriter(
        Path(out),
        format_name="simulate",
        options=WriterOptions(),
        loader_options={"seed": world.seed, **world.params.to_dict()},
        overwrite=overwrite,
    ) as writer:
        write_simulation(writer, world, log, model="SimWorld (tutor/experiments/simulate.py)")
        writer.note("simulation_extras", asdict(world.extras))
        writer.progress.finish()
        manifest = writer.close()
    return dict(manifest.counts)


# ---------------------------------------------------------------------- statistics
OPPORTUNITIES = 10


@dataclass
class LogStats:
    """Summary statistics of a log (real or simulated), as compared by the calibration."""

    learners: int
    answers: int
    concepts: int
    correct_rate: float
    length_quantiles: dict[str, float]  # p10, p25, p50, p75, p90 and mean answers per learner
    #: error rate at a learner's k-th answer on a concept, k = 1..OPPORTUNITIES
    error_by_opportunity: list[float] = field(default_factory=list)
    #: correct rate of a learner's first and second half of answers
    correct_first_half: float = float("nan")
    correct_second_half: float = float("nan")
    #: share of answers on the same concept as the learner's previous answer
    same_concept_rate: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stats_from_sequences(seqs: Iterable[tuple[np.ndarray, np.ndarray]]) -> LogStats:
    """Statistics of per-learner (concept, correct) sequences in time order."""
    lengths, n_correct = [], 0
    err = np.zeros(OPPORTUNITIES)
    cnt = np.zeros(OPPORTUNITIES)
    concepts: set[int] = set()
    first, first_n, second, second_n, same, pairs = 0, 0, 0, 0, 0, 0
    for conc, corr in seqs:
        n = len(conc)
        if n == 0:
            continue
        lengths.append(n)
        n_correct += int(corr.sum())
        concepts.update(np.unique(conc).tolist())
        # opportunity of each answer on its concept: rank within the concept
        order = np.argsort(conc, kind="stable")
        sc = conc[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sc)) + 1]
        rank_sorted = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
        opp = np.empty(n, dtype=np.int64)
        opp[order] = rank_sorted
        keep = opp < OPPORTUNITIES
        np.add.at(err, opp[keep], 1 - corr[keep])
        np.add.at(cnt, opp[keep], 1)
        h = n // 2
        first += int(corr[:h].sum())
        first_n += h
        second += int(corr[h:].sum())
        second_n += n - h
        same += int((conc[1:] == conc[:-1]).sum())
        pairs += n - 1
    if not lengths:
        raise SimulationError("no answers to summarise")
    ln = np.array(lengths)
    q = {f"p{p}": float(np.percentile(ln, p)) for p in (10, 25, 50, 75, 90)}
    q["mean"] = float(ln.mean())
    return LogStats(
        learners=len(lengths),
        answers=int(ln.sum()),
        concepts=len(concepts),
        correct_rate=n_correct / float(ln.sum()),
        length_quantiles=q,
        error_by_opportunity=[
            float(e / c) if c else float("nan") for e, c in zip(err, cnt, strict=True)
        ],
        correct_first_half=first / first_n if first_n else float("nan"),
        correct_second_half=second / second_n if second_n else float("nan"),
        same_concept_rate=same / pairs if pairs else float("nan"),
    )


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8")
    return path.open(encoding="utf-8")


def read_four_line(path: Path | str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-learner (concept, correct) sequences of AKT four-line files (``index,user`` /
    problems / skills / answers). ``path`` is a file or a directory (every ``*.csv[.gz]``).
    A learner's sequences split over several files are joined in file order; a multi-skill
    answer counts on its first skill (as its opportunity)."""
    path = Path(path)
    files = (
        sorted(p for p in path.iterdir() if p.name.endswith((".csv", ".csv.gz")))
        if path.is_dir()
        else [path]
    )
    if not files:
        raise SimulationError(f"{path}: no four-line .csv or .csv.gz files")
    by_user: dict[str, tuple[list[int], list[int]]] = {}
    for f in files:
        with _open_text(f) as fh:
            lines = [ln.strip() for ln in fh if ln.strip()]
        if len(lines) % 4:
            raise SimulationError(f"{f}: {len(lines)} lines is not a multiple of 4 (four-line)")
        for k in range(0, len(lines), 4):
            head = lines[k].split(",")
            user = head[-1] if len(head) > 1 else f"{f.name}:{k // 4}"
            try:
                skills = [int(x.split("_")[0]) for x in lines[k + 2].strip(",").split(",")]
                ans = [int(x) for x in lines[k + 3].strip(",").split(",")]
            except ValueError as exc:
                raise SimulationError(f"{f}: line {k + 3}: not a four-line record") from exc
            if len(skills) != len(ans):
                raise SimulationError(f"{f}: record {k // 4}: skills and answers differ")
            cs, an = by_user.setdefault(user, ([], []))
            cs.extend(skills)
            an.extend(ans)
    return [(np.array(c), np.array(a)) for c, a in by_user.values()]


def real_stats(path: Path | str) -> LogStats:
    """:class:`LogStats` of a real four-line dataset (see :func:`read_four_line`)."""
    return stats_from_sequences(read_four_line(path))


def simulated_stats(world: SimWorld, log: SimulatedLog | None = None) -> LogStats:
    """:class:`LogStats` of a simulated log (the world's default app policy when ``log`` is
    None); an answer's concept is its item's primary concept."""
    log = log if log is not None else world.generate()
    conc = world.item_concepts[log.item, 0]
    bounds = np.r_[0, np.cumsum(np.bincount(log.learner, minlength=world.n_learners))]
    seqs = (
        (conc[bounds[i] : bounds[i + 1]], log.correct[bounds[i] : bounds[i + 1]].astype(np.int64))
        for i in range(world.n_learners)
    )
    return stats_from_sequences(seqs)


def junyi_graph_stats(path: Path | str) -> dict[str, float]:
    """Shape of the Junyi exercise table's prerequisite graph: exercises, edges, share of
    exercises with 0, 1 and 2+ prerequisites, mean prerequisites and the longest chain."""
    path = Path(path)
    if not path.is_file():
        raise SimulationError(f"{path}: Junyi exercise table not found")
    with path.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "prerequisites" not in rows[0] or "name" not in rows[0]:
        raise SimulationError(f"{path}: expected columns name and prerequisites")
    names = {r["name"] for r in rows}
    parents = {
        r["name"]: [p for p in r["prerequisites"].split(",") if p.strip() and p in names]
        for r in rows
    }
    return graph_shape(parents)


def graph_shape(parents: dict[Any, list[Any]]) -> dict[str, float]:
    """Prerequisites per node (shares of 0, 1, 2+, mean) and the longest chain (nodes)."""
    k = np.array([len(v) for v in parents.values()])
    depth: dict[Any, int] = {}

    def d(n: Any, seen: frozenset = frozenset()) -> int:
        if n in depth:
            return depth[n]
        if n in seen:  # a cycle in the data: cut it
            return 0
        depth[n] = 1 + max((d(p, seen | {n}) for p in parents.get(n, [])), default=0)
        return depth[n]

    longest = max((d(n) for n in parents), default=0)
    return {
        "nodes": float(len(k)),
        "edges": float(k.sum()),
        "share_0_prereqs": float((k == 0).mean()),
        "share_1_prereq": float((k == 1).mean()),
        "share_2plus_prereqs": float((k >= 2).mean()),
        "mean_prereqs": float(k.mean()),
        "longest_chain": float(longest),
    }


def world_graph_stats(world: SimWorld) -> dict[str, float]:
    """:func:`graph_shape` of a simulated world's prerequisite DAG."""
    parents = {c: [] for c in range(world.n_concepts)}
    for a, b in world.prerequisites:
        parents[b].append(a)
    return graph_shape(parents)


# ---------------------------------------------------------------------- calibration
#: searched parameters and their ranges (guess, slip, learning rate, prior logit shift)
SEARCH_SPACE: dict[str, tuple[float, float]] = {
    "guess": (0.05, 0.4),
    "slip": (0.02, 0.25),
    "learning_rate": (0.05, 0.45),
    "prior_shift": (-1.5, 2.0),
}


def calibration_loss(sim: LogStats, real: LogStats) -> float:
    """Squared error of the learning curve (error by opportunity 1..10), plus the overall and
    half-by-half correct rates weighted 3x (they are single numbers against ten)."""
    a, b = np.array(sim.error_by_opportunity), np.array(real.error_by_opportunity)
    ok = np.isfinite(a) & np.isfinite(b)
    curve = float(((a[ok] - b[ok]) ** 2).sum())
    rates = (
        (sim.correct_rate - real.correct_rate) ** 2
        + (sim.correct_first_half - real.correct_first_half) ** 2
        + (sim.correct_second_half - real.correct_second_half) ** 2
    )
    return curve + 3.0 * rates


def _candidate(base: WorldSetting, values: dict[str, float], answers: int) -> WorldSetting:
    params = replace(
        base.params,
        guess=values["guess"],
        slip=values["slip"],
        learning_rate=values["learning_rate"],
        answers=answers,
    )
    extras = replace(base.extras, prior_shift=values["prior_shift"])
    return WorldSetting("calibrated", params, extras, "")


def calibrate(
    real: LogStats,
    *,
    base: WorldSetting | None = None,
    learners: int = 400,
    trials: int = 60,
    refine: int = 40,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[WorldSetting, LogStats, float]:
    """Fit the simulator to ``real``: mean answers per learner is set to the real mean; guess,
    slip, learning rate and prior shift are searched (``trials`` uniform draws over
    :data:`SEARCH_SPACE`, then ``refine`` Gaussian steps around the best, shrinking), each
    candidate scored by :func:`calibration_loss` on a simulated log of ``learners`` learners
    under the world's default app policy (a skill-builder rule like the ASSISTments data's).
    Returns (setting, its statistics, loss). Deterministic for a seed."""
    base = base or SETTINGS["default"]
    answers = max(1, round(real.length_quantiles["mean"]))
    rng = np.random.default_rng(seed)
    names = list(SEARCH_SPACE)
    lo = np.array([SEARCH_SPACE[n][0] for n in names])
    hi = np.array([SEARCH_SPACE[n][1] for n in names])
    total = trials + refine

    def score(x: np.ndarray) -> tuple[float, WorldSetting, LogStats]:
        vals = dict(zip(names, x.tolist(), strict=True))
        if vals["guess"] + vals["slip"] >= 0.95:
            return math.inf, base, real
        s = _candidate(base, vals, answers)
        st = simulated_stats(make_world(s, learners=learners, seed=seed))
        return calibration_loss(st, real), s, st

    best: tuple[float, WorldSetting, LogStats] | None = None
    best_x = (lo + hi) / 2
    for t in range(total):
        if t < trials:
            x = lo + rng.random(len(names)) * (hi - lo)
        else:
            width = 0.15 * (hi - lo) * (1.0 - (t - trials) / max(refine, 1)) + 0.01 * (hi - lo)
            x = np.clip(best_x + rng.standard_normal(len(names)) * width, lo, hi)
        cand = score(x)
        if best is None or cand[0] < best[0]:
            best, best_x = cand, x
        if progress is not None:
            progress(t + 1, total)
    assert best is not None
    loss, setting, st = best
    setting = WorldSetting(
        "calibrated",
        setting.params,
        setting.extras,
        "fitted to ASSISTments 2009 (AKT files): correct rate, learning curve, mean length",
    )
    return setting, st, loss


def comparison_table(
    real: LogStats,
    sim: LogStats,
    default: LogStats,
    junyi: dict[str, float] | None = None,
    sim_graph: dict[str, float] | None = None,
) -> str:
    """A markdown table: real vs calibrated vs uncalibrated (default) statistics."""
    rows: list[tuple[str, str, str, str]] = []

    def f(x: float, nd: int = 3) -> str:
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"

    rows.append(("learners", f"{real.learners:,}", f"{sim.learners:,}", f"{default.learners:,}"))
    rows.append(("answers", f"{real.answers:,}", f"{sim.answers:,}", f"{default.answers:,}"))
    rows.append(("concepts", str(real.concepts), str(sim.concepts), str(default.concepts)))
    rows.append(
        ("correct rate", f(real.correct_rate), f(sim.correct_rate), f(default.correct_rate))
    )
    rows.append(
        (
            "correct rate, first half of each learner",
            f(real.correct_first_half),
            f(sim.correct_first_half),
            f(default.correct_first_half),
        )
    )
    rows.append(
        (
            "correct rate, second half of each learner",
            f(real.correct_second_half),
            f(sim.correct_second_half),
            f(default.correct_second_half),
        )
    )
    for q in ("p10", "p25", "p50", "mean", "p75", "p90"):
        rows.append(
            (
                f"answers per learner, {q}",
                f(real.length_quantiles[q], 1),
                f(sim.length_quantiles[q], 1),
                f(default.length_quantiles[q], 1),
            )
        )
    for k in range(OPPORTUNITIES):
        rows.append(
            (
                f"error rate at opportunity {k + 1}",
                f(real.error_by_opportunity[k]),
                f(sim.error_by_opportunity[k]),
                f(default.error_by_opportunity[k]),
            )
        )
    rows.append(
        (
            "same concept as previous answer",
            f(real.same_concept_rate),
            f(sim.same_concept_rate),
            f(default.same_concept_rate),
        )
    )
    lines = [
        "| statistic | ASSISTments 2009 (real) | simulated, calibrated | simulated, default |",
        "|---|---:|---:|---:|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
    ]
    if junyi is not None and sim_graph is not None:
        lines += [
            "",
            "| prerequisite graph | Junyi exercise table (real) | simulated DAG |",
            "|---|---:|---:|",
        ]
        for k in junyi:
            nd = 0 if k in ("nodes", "edges", "longest_chain") else 3
            lines.append(f"| {k.replace('_', ' ')} | {f(junyi[k], nd)} | {f(sim_graph[k], nd)} |")
    return "\n".join(lines)
