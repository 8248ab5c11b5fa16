"""The simulated-learner generator and the 'simulate' format."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest

from data_loaders import IngestError
from data_loaders.simulate import SimulatedPopulation, SimulationParams, generate

# buckets=2: a small dataset in 32 partitions spends most of its time opening files
SMALL = {"learners": "60", "answers": "40", "concepts": "6", "items_per_concept": "5"}


def test_same_seed_same_dataset(ingest_to):
    a = ingest_to("simulate", "-", options={**SMALL, "seed": "3"}, buckets=2)
    b = ingest_to("simulate", "-", options={**SMALL, "seed": "3"}, buckets=2)
    c = ingest_to("simulate", "-", options={**SMALL, "seed": "4"}, buckets=2)
    assert a.interactions().equals(b.interactions())
    assert a.items().equals(b.items())
    assert a.manifest["notes"] == b.manifest["notes"]
    assert not a.interactions().equals(c.interactions())
    assert (
        a.manifest["notes"]["simulation"]["prerequisites"]
        != c.manifest["notes"]["simulation"]["prerequisites"]
        or a.manifest["counts"]["interactions"] != c.manifest["counts"]["interactions"]
    )


def test_default_dataset_shape(ingest_to):
    ds = ingest_to("simulate", "-", buckets=2)
    info = ds.info()
    m = ds.manifest
    assert info["learners"] == 200
    # Gamma(2) answers per learner with mean 80: the total is within a few percent of 16000
    assert 0.85 * 16000 < info["interactions"] < 1.15 * 16000
    assert m["counts"]["rows_read"] == info["interactions"]
    assert m["counts"]["rejected"] == 0
    assert 0.45 < info["correct_rate"] < 0.8
    assert info["items"] == 120 and info["concepts"] == 12
    assert info["time_span"]["rows_with_timestamp"] == info["interactions"]
    assert info["time_span"]["first"].startswith("2026-01-")

    t = ds.interactions()
    assert set(t.column("user_id").unique().to_pylist()) == {f"u{i}" for i in range(1, 201)}
    el = t.column("elapsed_ms").to_numpy()
    assert el.min() > 0 and 5_000 < np.median(el) < 60_000
    # every learner's answers are in time order and numbered from 0
    df = t.select(["user_id", "seq", "timestamp"]).to_pandas()
    assert (df.groupby("user_id")["timestamp"].diff().dropna() > pd.Timedelta(0)).all()
    assert (df.groupby("user_id").cumcount() == df["seq"]).all()


def test_ground_truth_in_dataset(ingest_to):
    ds = ingest_to("simulate", "-", options={**SMALL, "seed": "1"}, buckets=2)
    note = ds.manifest["notes"]["simulation"]
    pop = SimulatedPopulation(
        SimulationParams(learners=60, answers=40, concepts=6, items_per_concept=5), seed=1
    )
    assert note["prerequisites"] == [[str(a), str(b)] for a, b in pop.prerequisites]
    assert note["params"]["concepts"] == 6 and note["seed"] == 1
    for pre, post in note["prerequisites"]:
        assert int(pre) < int(post)  # a DAG in curriculum order
    assert len(note["prerequisites"]) >= 1
    concepts = ds.concepts().to_pylist()
    assert concepts[3] == {"concept_id": "3", "name": "concept 3"}
    items = {r["item_id"]: r for r in ds.items().to_pylist()}
    assert len(items) == 30
    assert items["q1"]["concept_ids"][0] == "0" and items["q30"]["concept_ids"][0] == "5"
    diffs = np.array([items[f"q{i + 1}"]["difficulty"] for i in range(30)])
    np.testing.assert_allclose(diffs, pop.item_difficulty)
    # a second concept is always a prerequisite of the first or an earlier concept
    for r in items.values():
        if len(r["concept_ids"]) == 2:
            assert int(r["concept_ids"][1]) < int(r["concept_ids"][0])


def test_mastery_learning_is_visible():
    pop, log = generate(SimulationParams(learners=400), seed=0)
    concept = pop.item_concepts[log.item, 0]
    df = pd.DataFrame(
        {"key": log.learner.astype(np.int64) * 1000 + concept, "y": log.correct, "m": log.mastery}
    )
    df["opp"] = df.groupby("key").cumcount()
    curve = df.groupby("opp")["y"].mean()
    # success on a concept rises with practice, averaged over learners
    assert curve.iloc[0] + 0.15 < curve.iloc[6]
    assert curve.iloc[0] < curve.iloc[2] < curve.iloc[5]
    # and the latent mastery behind it too
    mcurve = df.groupby("opp")["m"].mean()
    assert mcurve.iloc[0] < mcurve.iloc[3] < mcurve.iloc[8]
    # the model's probability explains the answers
    assert abs(float(log.p_correct.mean()) - float(log.correct.mean())) < 0.02


def test_prerequisites_slow_learning():
    pop = SimulatedPopulation(SimulationParams(learners=2, concepts=6), seed=5)
    post = next(p for _, p in pop.prerequisites)
    item = post * pop.params.items_per_concept
    learners = np.array([0, 1])
    state = pop.initial_state()
    pres = np.flatnonzero(pop.prereq_matrix[post])
    state.mastery[0, pres] = 0.0  # learner 0 lacks the prerequisites
    state.mastery[1, pres] = 1.0
    state.mastery[:, post] = 0.1
    pop.learn(state, learners, np.array([item, item]), np.array([1, 1]))
    gain = state.mastery[:, post] - 0.1
    rate = pop.learning_rate
    assert gain[0] / rate[0] < gain[1] / rate[1] / 3


def test_forgetting_decays_towards_the_prior():
    pop = SimulatedPopulation(SimulationParams(learners=3), seed=2)
    state = pop.initial_state()
    state.mastery[:] = 1.0
    learners = np.arange(3)
    half = (pop.half_life_days * 86_400_000).astype(np.int64)
    pop.forget(state, learners, state.clock + half)
    expected = pop.prior + (1.0 - pop.prior) * 0.5
    np.testing.assert_allclose(state.mastery, expected, rtol=1e-6)


def test_respond_is_vectorised_and_seeded():
    pop = SimulatedPopulation(SimulationParams(learners=50), seed=0)
    learners = np.arange(50)
    items = np.zeros(50, dtype=np.int64)
    at = pop.start_ms + 1000
    s1, s2 = pop.initial_state(), pop.initial_state()
    c1, p1, _ = pop.respond(s1, learners, items, at, np.random.default_rng(9))
    c2, p2, _ = pop.respond(s2, learners, items, at, np.random.default_rng(9))
    assert np.array_equal(c1, c2) and np.array_equal(p1, p2)
    assert ((p1 > 0.25) & (p1 < 0.9)).all()  # guess 0.25, slip 0.1
    assert (s1.mastery[:, 0] > pop.prior[:, 0]).all()  # practice raised concept 0


def test_generate_is_deterministic():
    a = SimulatedPopulation(SimulationParams(learners=30), seed=7).generate()
    b = SimulatedPopulation(SimulationParams(learners=30), seed=7).generate()
    for f in ("learner", "item", "correct", "timestamp_ms", "elapsed_ms", "p_correct"):
        assert np.array_equal(getattr(a, f), getattr(b, f))


def test_bad_options(ingest_to):
    with pytest.raises(IngestError, match="learners must be at least 1"):
        ingest_to("simulate", "-", options={"learners": "0"}, buckets=2)
    with pytest.raises(IngestError, match="start"):
        ingest_to("simulate", "-", options={"start": "next monday"}, buckets=2)
    with pytest.raises(IngestError, match="expects int"):
        ingest_to("simulate", "-", options={"answers": "many"}, buckets=2)


def test_start_option(ingest_to):
    ds = ingest_to("simulate", "-", options={**SMALL, "start": "2030-06-01"}, buckets=2)
    first = ds.info()["time_span"]["first"]
    assert first.startswith("2030-06-0")


def test_kt1_files(ingest_to, tmp_path):
    kt1 = tmp_path / "kt1"
    ds = ingest_to("simulate", "-", options={**SMALL, "kt1_dir": str(kt1)}, buckets=2)
    files = sorted(p.name for p in kt1.iterdir())
    assert "questions.csv" in files and len(files) == 61
    q = pd.read_csv(kt1 / "questions.csv")
    assert list(q.columns) == [
        "question_id",
        "bundle_id",
        "explanation_id",
        "correct_answer",
        "part",
        "tags",
        "deployed_at",
    ]
    key = dict(zip(q["question_id"], q["correct_answer"], strict=True))
    u1 = pd.read_csv(kt1 / "u1.csv")
    assert list(u1.columns) == [
        "timestamp",
        "solving_id",
        "question_id",
        "user_answer",
        "elapsed_time",
    ]
    t = ds.interactions()
    mine = t.filter(pc.equal(t.column("user_id"), "u1")).to_pylist()
    assert len(mine) == len(u1)
    assert list(u1["solving_id"]) == list(range(1, len(u1) + 1))
    assert [r["item_id"] for r in mine] == list(u1["question_id"])
    ts_ms = [int(r["timestamp"].timestamp() * 1000 + 0.5) for r in mine]
    assert ts_ms == list(u1["timestamp"])
    assert [r["elapsed_ms"] for r in mine] == list(u1["elapsed_time"])
    correct = [
        int(a == key[qid]) for a, qid in zip(u1["user_answer"], u1["question_id"], strict=True)
    ]
    assert correct == [r["correct"] for r in mine]


def test_kt1_files_ingest_with_ednet_loader(ingest_to, tmp_path):
    if importlib.util.find_spec("data_loaders.ednet") is None:
        pytest.skip("data_loaders.ednet is not there yet")
    try:
        import data_loaders.ednet  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on another module's state
        pytest.skip(f"data_loaders.ednet cannot be imported: {exc}")
    kt1 = tmp_path / "kt1"
    sim = ingest_to("simulate", "-", options={**SMALL, "kt1_dir": str(kt1)}, buckets=2)
    ed = ingest_to("ednet-kt1", kt1, buckets=2)
    assert ed.manifest["counts"]["rejected"] == 0
    cols = ["user_id", "seq", "item_id", "concept_ids", "correct", "timestamp", "elapsed_ms"]
    order = [("user_id", "ascending"), ("seq", "ascending")]
    a = sim.interactions().select(cols).sort_by(order)
    b = ed.interactions().select(cols).sort_by(order)
    assert a.num_rows == b.num_rows == sim.manifest["counts"]["interactions"]
    for col in cols:
        assert a.column(col).equals(b.column(col)), col
