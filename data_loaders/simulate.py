"""Simulated learners: a ground-truth world for demos, tests and scale benchmarks.

The world (:class:`SimulatedPopulation`) is drawn from a seed and is fully deterministic:

* **Concepts** ``0 .. C-1`` in curriculum (topological) order, with a random prerequisite DAG:
  each concept after the first has 0, 1 or 2 prerequisites among the earlier concepts
  (probabilities 0.25 / 0.5 / 0.25).
* **Items** ``items_per_concept`` per concept; item ``i`` (0-based) has the primary concept
  ``i // items_per_concept``, and with probability ``second_concept_rate`` a second concept
  (one of the primary's prerequisites when it has any, otherwise another earlier concept).
  Difficulty ``d`` ~ U(0.1, 0.75) on the mastery scale.
* **Learners** with an ability ``a`` ~ N(0, 1), a learning rate ``eta`` (log-normal around
  0.2), a forgetting half-life (log-normal around 5 days) and an initial (prior) mastery per
  concept ``sigmoid(-1.6 + 0.8 a + 0.4 noise)``. Each learner gives a Gamma(2)-distributed
  number of answers with mean ``answers`` (at least 1).
* **Latent mastery** ``m[l, c]`` in [0, 1]. Between answers it decays exponentially towards
  the prior: ``m <- prior + (m - prior) * exp(-ln 2 * dt / half_life)``. After an answer on an
  item of concepts ``K``, for each ``c`` in ``K``:
  ``m <- m + eta * support * (1 - m) * (0.5 + 0.5 * correct)`` with
  ``support = 0.2 + 0.8 * min(mastery of c's prerequisites)`` (1 without prerequisites): one
  learns more from a correct answer, and little while the prerequisites are not mastered.
* **Answers**: ``P(correct) = guess + (1 - guess - slip) * sigmoid(steepness * (m_K - d))``
  where ``m_K`` is the lowest mastery among the item's concepts (the skills are conjunctive).
* **Item choice** (the default policy, the way a mastery-learning app assigns work): each
  learner works through the concepts in curriculum order; the app moves on after
  ``mastery_streak`` correct answers in a row or ``max_attempts_per_concept`` attempts. With
  probability ``review_rate`` the learner reviews an earlier concept instead, with probability
  ``explore_rate`` any concept; the item is drawn uniformly among the chosen concept's items.
  After the last concept every answer is a review.
* **Time**: sessions of 1 + Poisson(``session_length`` - 1) answers; ``elapsed_ms`` log-normal
  around 15 s + 30 s x difficulty; a pause of ~4 s between answers; gaps between sessions
  log-normal around 20 hours (1 hour to 21 days). Learners start at a random moment of the
  first week after ``start`` (UTC).

Typical use::

    pop = SimulatedPopulation(SimulationParams(learners=1000), seed=3)
    log = pop.generate()                 # SimulatedLog: flat arrays, learner-major
    pop.prerequisites                    # [(pre, post), ...] ground-truth edges
    log.p_correct, log.mastery           # the truth behind every answer

For other policies (e.g. evaluating a recommender), drive the model one answer at a time::

    state = pop.initial_state()
    rng = np.random.default_rng(7)
    correct, p, m = pop.respond(state, learners, items, at_ms, rng)

``respond`` applies forgetting up to ``at_ms``, draws the answers and applies learning, for any
set of distinct learners at once (vectorised).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from .base import Loader, Option
from .errors import IngestError

if TYPE_CHECKING:
    from .writer import DatasetWriter

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
CHUNK_ROWS = 100_000
_ANSWER_LETTERS = np.array(["a", "b", "c", "d"])


@dataclass(frozen=True)
class SimulationParams:
    """Size of the world and the constants of the learner model (see the module docstring)."""

    learners: int = 200
    concepts: int = 12
    items_per_concept: int = 10
    answers: int = 80  # mean answers per learner
    start: str = "2026-01-05"  # ISO date or date-time; without an offset, UTC
    guess: float = 0.25
    slip: float = 0.1
    steepness: float = 8.0
    learning_rate: float = 0.2  # median of the learners' learning rates
    half_life_days: float = 5.0  # median forgetting half-life
    second_concept_rate: float = 0.2
    mastery_streak: int = 3
    max_attempts_per_concept: int = 15
    review_rate: float = 0.15
    explore_rate: float = 0.05
    session_length: float = 12.0  # mean answers per session

    def validate(self) -> None:
        for name in ("learners", "concepts", "items_per_concept", "answers"):
            if getattr(self, name) < 1:
                raise IngestError(f"simulate: {name} must be at least 1, got {getattr(self, name)}")
        if not (self.guess >= 0 and self.slip >= 0 and self.guess + self.slip < 1):
            raise IngestError("simulate: guess and slip must be >= 0 with guess + slip < 1")
        if self.review_rate + self.explore_rate > 1:
            raise IngestError("simulate: review_rate + explore_rate must be at most 1")
        start_ms(self.start)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def start_ms(start: str) -> int:
    """``start`` (ISO date or date-time) in milliseconds since the epoch, UTC."""
    try:
        dt = datetime.fromisoformat(str(start).strip())
    except ValueError as exc:
        raise IngestError(f"simulate: start {start!r} is not an ISO 8601 date") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


@dataclass
class SimulatedLog:
    """Every simulated answer, learner-major (learner 0's answers in time order, then 1, ...).

    ``learner`` and ``item`` are 0-based indices; the loader names them ``u<learner+1>`` and
    ``q<item+1>``. ``p_correct`` and ``mastery`` (the lowest mastery among the item's concepts,
    after forgetting, before the answer) are the ground truth behind each answer.
    """

    learner: np.ndarray  # int32
    item: np.ndarray  # int32
    correct: np.ndarray  # int8
    timestamp_ms: np.ndarray  # int64, when the answer was submitted
    elapsed_ms: np.ndarray  # int64
    p_correct: np.ndarray  # float32
    mastery: np.ndarray  # float32

    def __len__(self) -> int:
        return len(self.learner)


@dataclass
class LearnerState:
    """Latent state of every learner: mastery per concept as of ``clock`` (ms, per learner)."""

    mastery: np.ndarray  # float64 (L, C)
    clock: np.ndarray  # int64 (L,)


class SimulatedPopulation:
    """A drawn world: prerequisite graph, items and learners (see the module docstring).

    Attributes (all ground truth, fixed by ``params`` and ``seed``):

    * ``prerequisites``: list of ``(pre, post)`` concept index pairs;
    * ``prereq_matrix``: bool ``(C, C)``, ``[post, pre]``;
    * ``item_concepts``: int ``(I, 2)``, primary concept and second concept or -1;
    * ``item_difficulty``: float ``(I,)``;
    * ``ability``, ``learning_rate``, ``half_life_days``: float ``(L,)``;
    * ``prior``: float ``(L, C)`` initial mastery; ``n_answers``: int ``(L,)``;
      ``start_ms``: int ``(L,)`` first moment of each learner.
    """

    def __init__(self, params: SimulationParams | None = None, seed: int = 0) -> None:
        self.params = params or SimulationParams()
        self.params.validate()
        self.seed = int(seed)
        p = self.params
        rng = np.random.default_rng([self.seed, 0])
        C, ipc, L = p.concepts, p.items_per_concept, p.learners

        # prerequisite DAG over concepts in curriculum order
        self.prereq_matrix = np.zeros((C, C), dtype=bool)
        edges: list[tuple[int, int]] = []
        for post in range(1, C):
            k = min(int(rng.choice(3, p=[0.25, 0.5, 0.25])), post)
            for pre in sorted(rng.choice(post, size=k, replace=False).tolist()):
                self.prereq_matrix[post, pre] = True
                edges.append((int(pre), post))
        self.prerequisites = edges

        # items
        n_items = C * ipc
        primary = np.repeat(np.arange(C), ipc)
        second = np.full(n_items, -1, dtype=np.int64)
        has_second = rng.random(n_items) < p.second_concept_rate
        pick = rng.random(n_items)
        for i in np.flatnonzero(has_second):
            c = primary[i]
            pres = np.flatnonzero(self.prereq_matrix[c])
            if len(pres):
                second[i] = pres[int(pick[i] * len(pres))]
            elif c > 0:
                second[i] = int(pick[i] * c)
        self.item_concepts = np.stack([primary, second], axis=1)
        self.item_difficulty = rng.uniform(0.1, 0.75, n_items)

        # learners
        traits = draw_learner_traits(p, rng, L)
        self.ability = traits["ability"]
        self.learning_rate = traits["learning_rate"]
        self.half_life_days = traits["half_life_days"]
        self.prior = traits["prior"]
        self.n_answers = traits["n_answers"]
        self.start_ms = traits["start_ms"]
        # prerequisite lookup for the learning update: padded (C, P) table, -1 = none
        width = max(1, int(self.prereq_matrix.sum(axis=1).max(initial=0)))
        self._prereq_table = np.full((C, width), -1, dtype=np.int64)
        for post in range(C):
            pres = np.flatnonzero(self.prereq_matrix[post])
            self._prereq_table[post, : len(pres)] = pres

    # ------------------------------------------------------------------ sizes
    @property
    def n_learners(self) -> int:
        return self.params.learners

    @property
    def n_concepts(self) -> int:
        return self.params.concepts

    @property
    def n_items(self) -> int:
        return len(self.item_difficulty)

    # ------------------------------------------------------------------ the learner model
    def initial_state(self) -> LearnerState:
        return LearnerState(mastery=self.prior.copy(), clock=self.start_ms.copy())

    def forget(self, state: LearnerState, learners: np.ndarray, at_ms: np.ndarray) -> None:
        """Decay the mastery of ``learners`` (distinct) from their clock to ``at_ms``."""
        dt_days = np.maximum(at_ms - state.clock[learners], 0) / DAY_MS
        f = np.exp(-math.log(2) * dt_days / self.half_life_days[learners])
        prior = self.prior[learners]
        state.mastery[learners] = prior + (state.mastery[learners] - prior) * f[:, None]
        state.clock[learners] = np.maximum(state.clock[learners], at_ms)

    def item_mastery(self, state: LearnerState, learners: np.ndarray, items: np.ndarray):
        """The lowest mastery among each item's concepts (no forgetting applied)."""
        c1, c2 = self.item_concepts[items, 0], self.item_concepts[items, 1]
        m = state.mastery[learners, c1]
        two = c2 >= 0
        if two.any():
            m = np.where(two, np.minimum(m, state.mastery[learners, np.maximum(c2, 0)]), m)
        return m

    def p_correct(self, state: LearnerState, learners: np.ndarray, items: np.ndarray):
        """P(correct) of each (learner, item) pair at the learners' current clock."""
        p = self.params
        m = self.item_mastery(state, learners, items)
        z = p.steepness * (m - self.item_difficulty[items])
        return p.guess + (1.0 - p.guess - p.slip) * _sigmoid(z)

    def learn(
        self,
        state: LearnerState,
        learners: np.ndarray,
        items: np.ndarray,
        correct: np.ndarray,
        *,
        gain_scale: np.ndarray | None = None,
        prereq_floor: float = 0.2,
    ) -> None:
        """Apply the learning update of one answer per (distinct) learner. ``gain_scale``
        replaces the per-answer gain ``eta * (0.5 + 0.5 * correct)`` and ``prereq_floor`` the
        learning left while prerequisites are unknown (variants of this world set them)."""
        if gain_scale is None:
            gain_scale = self.learning_rate[learners] * (0.5 + 0.5 * correct)
        for col in (0, 1):
            c = self.item_concepts[items, col]
            ok = c >= 0
            if not ok.any():
                continue
            ll, cc, gs = learners[ok], c[ok], gain_scale[ok]
            pres = self._prereq_table[cc]  # (k, P)
            pm = np.where(pres >= 0, state.mastery[ll[:, None], np.maximum(pres, 0)], np.inf)
            support = pm.min(axis=1)
            support = np.where(
                np.isinf(support), 1.0, prereq_floor + (1.0 - prereq_floor) * support
            )
            m = state.mastery[ll, cc]
            state.mastery[ll, cc] = m + gs * support * (1.0 - m)

    def respond(
        self,
        state: LearnerState,
        learners: np.ndarray,
        items: np.ndarray,
        at_ms: np.ndarray,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distinct ``learners`` answer ``items`` at ``at_ms``: (correct, p_correct, mastery).

        Applies forgetting up to ``at_ms``, draws the answers, then applies learning.
        """
        learners = np.asarray(learners, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        self.forget(state, learners, np.asarray(at_ms, dtype=np.int64))
        m = self.item_mastery(state, learners, items)
        p = self.p_correct(state, learners, items)
        correct = (rng.random(len(learners)) < p).astype(np.int8)
        self.learn(state, learners, items, correct)
        return correct, p, m

    # ------------------------------------------------------------------ generation
    def generate(self) -> SimulatedLog:
        """Run every learner through the default curriculum policy (deterministic)."""
        p = self.params
        rng = np.random.default_rng([self.seed, 1])
        L, C, ipc = p.learners, p.concepts, p.items_per_concept
        n = self.n_answers
        total = int(n.sum())
        offsets = np.concatenate([[0], np.cumsum(n)[:-1]])
        # learners sorted by answer count, descending: the active ones are a prefix
        order = np.argsort(-n, kind="stable")
        n_sorted = n[order]
        off_sorted = offsets[order]
        active_at = np.searchsorted(-n_sorted, -np.arange(int(n_sorted[0])), side="left")

        state = self.initial_state()
        clock = state.clock[order].copy()
        session_left = np.zeros(L, dtype=np.int64)
        cur = np.zeros(L, dtype=np.int64)  # current concept of the curriculum
        streak = np.zeros(L, dtype=np.int64)
        tries = np.zeros(L, dtype=np.int64)

        out_item = np.empty(total, dtype=np.int32)
        out_correct = np.empty(total, dtype=np.int8)
        out_ts = np.empty(total, dtype=np.int64)
        out_el = np.empty(total, dtype=np.int64)
        out_p = np.empty(total, dtype=np.float32)
        out_m = np.empty(total, dtype=np.float32)
        mean_extra = max(p.session_length - 1.0, 0.0)

        for step in range(int(n_sorted[0])):
            k = int(active_at[step])
            rows = order[:k]  # learner indices
            # sessions: a new one starts after a gap of hours to days
            new = session_left[:k] == 0
            n_new = int(new.sum())
            if n_new:
                session_left[:k][new] = 1 + rng.poisson(mean_extra, n_new)
                if step > 0:
                    gap = np.exp(rng.normal(math.log(20 * HOUR_MS), 0.9, n_new))
                    clock[:k][new] += np.clip(gap, HOUR_MS, 21 * DAY_MS).astype(np.int64)
            # the concept: curriculum, review or exploration
            u = rng.random(k)
            r = rng.random(k)
            c = cur[:k].copy()
            done = c >= C
            c[done] = (r[done] * C).astype(np.int64)
            review = (u < p.review_rate) & (cur[:k] > 0) & ~done
            c[review] = (r[review] * np.minimum(cur[:k][review], C)).astype(np.int64)
            explore = u >= 1.0 - p.explore_rate
            c[explore] = (r[explore] * C).astype(np.int64)
            on_track = ~done & ~review & ~explore
            items = c * ipc + rng.integers(0, ipc, k)
            # time
            d = self.item_difficulty[items]
            elapsed = np.rint(np.exp(rng.normal(np.log(15_000 + 30_000 * d), 0.5))).astype(np.int64)
            at = clock[:k] + elapsed
            correct, prob, mast = self.respond(state, rows, items, at, rng)
            # the app's mastery rule on the curriculum concept
            on = on_track
            streak[:k][on] = np.where(correct[on] == 1, streak[:k][on] + 1, 0)
            tries[:k][on] += 1
            move = on & (
                (streak[:k] >= p.mastery_streak) | (tries[:k] >= p.max_attempts_per_concept)
            )
            cur[:k][move] += 1
            streak[:k][move] = 0
            tries[:k][move] = 0
            clock[:k] = at + np.rint(rng.exponential(4000.0, k)).astype(np.int64)
            session_left[:k] -= 1

            pos = off_sorted[:k] + step
            out_item[pos] = items
            out_correct[pos] = correct
            out_ts[pos] = at
            out_el[pos] = elapsed
            out_p[pos] = prob
            out_m[pos] = mast

        learner = np.repeat(np.arange(L, dtype=np.int32), n)
        return SimulatedLog(
            learner=learner,
            item=out_item,
            correct=out_correct,
            timestamp_ms=out_ts,
            elapsed_ms=out_el,
            p_correct=out_p,
            mastery=out_m,
        )


def draw_learner_traits(
    params: SimulationParams, rng: np.random.Generator, n: int
) -> dict[str, np.ndarray]:
    """Draw ``n`` learners' traits (the distributions of the module docstring), in this order
    from ``rng``: ability, learning rate, half-life, prior mastery, answer count, start.

    :class:`SimulatedPopulation` draws its learners with it; other code can draw further
    learners of the same world from another generator (e.g. evaluation cohorts).
    """
    p, C = params, params.concepts
    ability = rng.standard_normal(n)
    learning_rate = np.clip(p.learning_rate * np.exp(0.4 * rng.standard_normal(n)), 0.02, 0.6)
    half_life_days = np.clip(p.half_life_days * np.exp(0.6 * rng.standard_normal(n)), 0.5, 60.0)
    prior = _sigmoid(-1.6 + 0.8 * ability[:, None] + 0.4 * rng.standard_normal((n, C)))
    n_answers = np.maximum(1, np.rint(rng.gamma(2.0, p.answers / 2.0, n))).astype(np.int64)
    start = start_ms(p.start) + rng.integers(0, 7 * DAY_MS, n)
    return {
        "ability": ability,
        "learning_rate": learning_rate,
        "half_life_days": half_life_days,
        "prior": prior,
        "n_answers": n_answers,
        "start_ms": start,
    }


def generate(
    params: SimulationParams | None = None, seed: int = 0
) -> tuple[SimulatedPopulation, SimulatedLog]:
    """Draw a world from ``params`` and ``seed`` and run it: (population, log)."""
    pop = SimulatedPopulation(params, seed)
    return pop, pop.generate()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# ---------------------------------------------------------------------- EdNet-KT1 output
def write_kt1(pop: SimulatedPopulation, log: SimulatedLog, out_dir: Path | str) -> None:
    """Write the log as EdNet KT1 files: ``u<n>.csv`` per learner and ``questions.csv``.

    KT1 columns: ``timestamp,solving_id,question_id,user_answer,elapsed_time``; correctness is
    ``user_answer == questions.correct_answer``. Each question is its own bundle, so
    ``solving_id`` counts a learner's answers from 1. The answer letters and correct options are
    drawn from the seed, so the files are deterministic too.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([pop.seed, 2])
    n_items = pop.n_items
    key = rng.integers(0, 4, n_items)
    concepts = pop.item_concepts
    deployed = start_ms(pop.params.start)
    q_lines = ["question_id,bundle_id,explanation_id,correct_answer,part,tags,deployed_at"]
    for i in range(n_items):
        tags = str(concepts[i, 0]) + (f";{concepts[i, 1]}" if concepts[i, 1] >= 0 else "")
        part = int(concepts[i, 0]) % 7 + 1
        q_lines.append(
            f"q{i + 1},b{i + 1},e{i + 1},{_ANSWER_LETTERS[key[i]]},{part},{tags},{deployed}"
        )
    (out / "questions.csv").write_text("\n".join(q_lines) + "\n")

    wrong_shift = rng.integers(1, 4, len(log))
    answer = np.where(log.correct == 1, key[log.item], (key[log.item] + wrong_shift) % 4)
    letters = _ANSWER_LETTERS[answer]
    bounds = np.concatenate([[0], np.cumsum(pop.n_answers)])
    ts = log.timestamp_ms.tolist()
    el = log.elapsed_ms.tolist()
    it = (log.item + 1).tolist()
    let = letters.tolist()
    header = "timestamp,solving_id,question_id,user_answer,elapsed_time\n"
    for learner in range(pop.n_learners):
        s, e = int(bounds[learner]), int(bounds[learner + 1])
        rows = [f"{ts[j]},{j - s + 1},q{it[j]},{let[j]},{el[j]}\n" for j in range(s, e)]
        (out / f"u{learner + 1}.csv").write_text(header + "".join(rows))


# ---------------------------------------------------------------------- the loader
class SimulateLoader(Loader):
    name = "simulate"
    summary = "generated learners with a known prerequisite graph (INPUT is ignored: '-')"
    options = (
        Option("learners", int, 200, "number of learners"),
        Option("concepts", int, 12, "number of concepts"),
        Option("items_per_concept", int, 10, "items per concept"),
        Option("answers", int, 80, "mean number of answers per learner"),
        Option("seed", int, 0, "random seed: the same seed gives the same dataset"),
        Option("start", str, "2026-01-05", "first day of the simulation (ISO date, UTC)"),
        Option("kt1_dir", str, "", "also write EdNet-KT1 files (u<id>.csv, questions.csv) here"),
    )

    def load(self) -> None:
        names = {f.name for f in fields(SimulationParams)}
        params = SimulationParams(**{k: v for k, v in self.opts.items() if k in names})
        pop = SimulatedPopulation(params, int(self.opts["seed"]))
        log = pop.generate()
        write_simulation(self.writer, pop, log)
        if self.opts.get("kt1_dir"):
            write_kt1(pop, log, self.opts["kt1_dir"])


def write_simulation(
    writer: DatasetWriter, pop: SimulatedPopulation, log: SimulatedLog, model: str = ""
) -> None:
    """Hand a simulated log to a dataset writer: interactions, items (with their true
    difficulty), concepts and the ``simulation`` note (seed, parameters, true prerequisite
    graph). ``model`` names the population class in the note (default: this module's)."""
    params = pop.params
    n = len(log)
    C = params.concepts
    concept_names = [str(c) for c in range(C)]
    writer.progress.start("simulating", n)

    file_idx = writer.register_file(f"simulate:seed={pop.seed}", None)
    users = pa.array([f"u{i + 1}" for i in range(params.learners)], pa.string())
    item_names = pa.array([f"q{i + 1}" for i in range(pop.n_items)], pa.string())
    item_lists = _concept_lists(pop.item_concepts, pa.array(concept_names, pa.string()))
    for s in range(0, n, CHUNK_ROWS):
        e = min(s + CHUNK_ROWS, n)
        item_idx = pa.array(log.item[s:e].astype(np.int32))
        table = pa.table(
            {
                "user_id": pa.DictionaryArray.from_arrays(
                    pa.array(log.learner[s:e].astype(np.int32)), users
                ),
                "item_id": pa.DictionaryArray.from_arrays(item_idx, item_names),
                "concept_ids": item_lists.take(item_idx),
                "correct": pa.array(log.correct[s:e]),
                "timestamp": pa.array(log.timestamp_ms[s:e]),
                "elapsed_ms": pa.array(log.elapsed_ms[s:e]),
                "_file": pa.array(np.full(e - s, file_idx, dtype=np.int32)),
                "_line": pa.array(np.arange(s + 1, e + 1, dtype=np.int64)),
                "_order": pa.array(log.timestamp_ms[s:e]),
            }
        )
        writer.add_interactions(table)
        writer.progress.advance(e - s)
    writer.count_read(n)

    writer.add_items(
        pa.table(
            {
                "item_id": item_names,
                "concept_ids": item_lists,
                "difficulty": pa.array(pop.item_difficulty, pa.float64()),
            }
        )
    )
    writer.add_concepts(concept_names, [f"concept {c}" for c in range(C)])
    writer.note(
        "simulation",
        {
            "model": model or "SimulatedPopulation (data_loaders/simulate.py)",
            "seed": pop.seed,
            "params": params.to_dict(),
            "prerequisites": [[str(a), str(b)] for a, b in pop.prerequisites],
            "user_ids": "u<learner + 1>",
            "item_ids": "q<item + 1>",
            "concept_ids": "0 .. concepts-1 (curriculum order)",
        },
    )


def _concept_lists(item_concepts: np.ndarray, names: pa.Array) -> pa.ListArray:
    """Each item's concept ids (primary first) as a list<string> array."""
    lens = 1 + (item_concepts[:, 1] >= 0).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    flat = item_concepts.ravel()
    flat = flat[flat >= 0]
    return pa.ListArray.from_arrays(pa.array(offsets), names.take(pa.array(flat)))
