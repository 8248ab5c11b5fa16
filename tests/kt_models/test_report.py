"""Offline reports (``kt_models.report``, ``tutor report``, ``tutor evaluate --plot``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from kt_models.base import load_checkpoint, prediction_mask
from kt_models.data import load_sequences, make_batch, split_learners
from kt_models.evaluate import (
    auc_by_position,
    curve_counts,
    learning_curves,
    opportunity_index,
    position_buckets,
)
from kt_models.predictions import Answers, next_step_answers
from kt_models.report import (
    graph_label,
    graph_layout,
    plot_prerequisite_graph,
    strongest_edges,
    write_report,
)
from kt_models.train import TrainConfig, train
from tutor.cli import app

from .conftest import write_skill_dataset

PNG = b"\x89PNG\r\n\x1a\n"
COMMON = {"calibration.png", "auc_by_position.png", "learning_curves.png", "training.png"}
PSIKT_ONLY = {"prerequisite_graph.png", "traits.png"}
runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report")
    data = write_skill_dataset(root / "data", learners=50, length=(15, 30))
    out = {}
    for name, overrides in (("dkt", {"hidden": 16}), ("psikt", {"hidden": 16, "emb_dim": 8})):
        cfg = TrainConfig(epochs=2, threads=1, seed=3)
        train(name, data, root / name, model_overrides=overrides, config=cfg, progress=False,
              log=lambda _m: None)  # fmt: skip
        out[name] = root / name
    return out


def _check_pngs(out: Path, names: set[str]) -> None:
    for name in names:
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 1000, name


def test_reports_of_dkt_and_psikt(runs, tmp_path):
    pages = {}
    for name, run in runs.items():
        page = write_report(run, tmp_path / name, device="cpu")
        assert page == tmp_path / name / "index.html"
        pages[name] = page.read_text()
        pngs = {p.name for p in (tmp_path / name).glob("*.png")}
        expected = COMMON | (PSIKT_ONLY if name == "psikt" else set())
        assert pngs == expected
        _check_pngs(tmp_path / name, expected)
        for png in expected:
            assert f'src="{png}"' in pages[name]
        assert "http://" not in pages[name] and "https://" not in pages[name]
        assert not list((tmp_path / name).glob(".*.tmp"))  # atomic writes leave nothing
    for png in PSIKT_ONLY:
        assert png not in pages["dkt"]
    rep = json.loads((tmp_path / "psikt" / "report.json").read_text())
    assert set(rep["traits"]) == {"alpha", "mu", "sigma", "gamma"}
    assert rep["traits"]["alpha"]["min"] > 0 and 0 < rep["traits"]["gamma"]["max"] < 1
    assert rep["prerequisite_graph"]["concepts"] == 4
    assert "traits" not in json.loads((tmp_path / "dkt" / "report.json").read_text())


def test_metrics_match_evaluate_and_auc_by_position(runs, tmp_path):
    run = runs["dkt"]
    r = runner.invoke(app, ["evaluate", str(run), "--multi-step", "3", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    write_report(run, tmp_path, device="cpu")
    rep = json.loads((tmp_path / "report.json").read_text())
    res = json.loads((run / "results.json").read_text())
    assert rep["metrics"]["auc"] == pytest.approx(res["test"]["auc"], abs=1e-6)
    assert rep["metrics"]["n"] == res["test"]["n"]
    assert "results.json" in (tmp_path / "index.html").read_text()
    # one bucket recomputed directly: every test learner alone through the forward
    info = json.loads((run / "run.json").read_text())
    model, _ = load_checkpoint(run / "best.pt")
    seqs, _ = load_sequences(info["data"], vocab=model.vocab)
    test = split_learners(seqs, seed=3, fold=0).test
    ys, ps = [], []
    with torch.no_grad():
        for u in test:
            b = make_batch(seqs, np.array([u]))
            p = torch.sigmoid(model(b))[0].numpy()
            pos = np.flatnonzero(prediction_mask(b)[0].numpy())
            sel = pos[(pos >= 6) & (pos <= 10)]
            ys.append(b.correct[0].numpy()[sel])
            ps.append(p[sel])
    y, p = np.concatenate(ys), np.concatenate(ps)
    bucket = next(x for x in rep["auc_by_position"] if x["label"] == "6-10")
    assert bucket["n"] == len(y) > 0
    assert bucket["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-6)
    assert sum(x["n"] for x in rep["auc_by_position"]) == rep["metrics"]["n"]


def test_position_buckets_and_one_class_skipped():
    assert [(lo, hi) for lo, hi in position_buckets(200)] == [
        (1, 5), (6, 10), (11, 20), (21, 50), (51, 100), (101, 200), (201, None),
    ]  # fmt: skip
    assert position_buckets(30)[-2:] == [(21, 30), (31, None)]
    y = np.array([1, 1, 0, 1, 0, 1])
    p = np.array([0.9, 0.8, 0.3, 0.6, 0.4, 0.7])
    pos = np.array([1, 2, 3, 6, 7, 300])
    rows = {r["label"]: r for r in auc_by_position(y, p, pos)}
    assert rows["1-5"]["auc"] == 1.0 and rows["1-5"]["n"] == 3
    assert rows[">200"]["n"] == 1 and rows[">200"]["auc"] is None  # one class: skipped
    assert rows["11-20"]["n"] == 0 and rows["11-20"]["auc"] is None


def test_opportunity_index_equals_reference_loop():
    rng = np.random.default_rng(1)
    learner = np.sort(rng.integers(0, 5, 200))
    concept = rng.integers(0, 4, 200)
    seen: dict[tuple[int, int], int] = {}
    ref = []
    for u, c in zip(learner.tolist(), concept.tolist(), strict=True):
        seen[(u, c)] = seen.get((u, c), 0) + 1
        ref.append(seen[(u, c)])
    assert opportunity_index(learner, concept).tolist() == ref
    # tiny hand example; rows need not be grouped by learner
    assert opportunity_index(np.array([0, 1, 0, 0, 1]), np.array([2, 2, 2, 3, 2])).tolist() == [
        1, 1, 2, 1, 2,
    ]  # fmt: skip


def test_learning_curves_count_multi_concept_answers():
    # items: 1 -> concept 1, 2 -> concepts 1 and 2
    q = np.array([[0, 0], [1, 0], [1, 2]])
    a = Answers(
        learner=np.array([0, 0, 0, 1, 1]),
        position=np.array([0, 1, 2, 0, 1]),
        item=np.array([1, 2, 1, 2, 1]),
        y=np.array([0.0, 1.0, 1.0, 0.0, 1.0]),
        p=np.array([np.nan, 0.6, 0.8, np.nan, 0.5]),
    )
    named = {"A": "Adding fractions"}
    curves = {c["concept"]: c for c in learning_curves(a, q, ["A", "B"], min_count=1, names=named)}
    assert curves["A"]["name"] == "Adding fractions" and curves["B"]["name"] == ""
    # concept A: learner 0 opportunities 1, 2, 3; learner 1: 1, 2 (first answers unscored:
    # opportunity 1 has no prediction, so no point)
    assert curves["A"]["answers"] == 5
    assert curves["A"]["opportunity"] == [2, 3]
    assert curves["A"]["observed_error"] == [0.0, 0.0]
    assert curves["A"]["predicted_error"] == pytest.approx([(0.4 + 0.5) / 2, 0.2])
    # concept B, opportunity 1: both learners' answers observed, one of them predicted
    assert curves["B"]["opportunity"] == [1] and curves["B"]["n"] == [2]
    assert curves["B"]["observed_error"] == [0.5]
    assert curves["B"]["predicted_error"] == pytest.approx([0.4])


def test_curve_counts_observed_over_all_answers_predicted_over_the_scored():
    cc = curve_counts(
        np.array([0, 0, 1, 0]),
        np.array([1, 2, 1, 3]),
        np.array([0, 1, 1, 1]),
        np.array([np.nan, 0.75, 0.5, 0.9]),
        n_concepts=2,
        max_opportunity=2,
    )
    assert cc.n.tolist() == [[1, 1], [1, 0]]  # opportunity 3 is beyond the maximum
    assert cc.wrong.tolist() == [[1, 0], [0, 0]]
    assert cc.n_pred.tolist() == [[0, 1], [1, 0]]
    assert cc.pred_wrong == pytest.approx(np.array([[0.0, 0.25], [0.5, 0.0]]))


def test_next_step_answers_align_with_rows(runs):
    model, _ = load_checkpoint(runs["dkt"] / "best.pt")
    info = json.loads((runs["dkt"] / "run.json").read_text())
    seqs, _ = load_sequences(info["data"], vocab=model.vocab)
    users = np.array([3, 0, 5])
    a = next_step_answers(model, seqs, users, torch.device("cpu"))
    sub = seqs.subset(users)
    assert np.array_equal(a.item, sub.item) and np.isnan(a.p[a.position == 0]).all()
    assert a.scored.sum() == sub.n_interactions - 3


def test_cli_report_and_evaluate_plot(runs, tmp_path):
    out = tmp_path / "rep"
    r = runner.invoke(app, ["report", str(runs["psikt"]), "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert str(out / "index.html") in r.output
    _check_pngs(out, COMMON | PSIKT_ONLY)
    plot = tmp_path / "cmp" / "compare.png"
    r = runner.invoke(
        app,
        ["evaluate", str(runs["dkt"]), str(runs["psikt"]), "--multi-step", "3", "--plot",
         str(plot)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    _check_pngs(plot.parent, {"compare.png"})


def test_cli_report_errors(runs, tmp_path):
    missing = tmp_path / "no-such-run"
    r = runner.invoke(app, ["report", str(missing), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "no-such-run" in r.output and "not found" in r.output
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text((runs["dkt"] / "run.json").read_text())
    r = runner.invoke(app, ["report", str(broken), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "best.pt" in r.output and "checkpoint not found" in r.output


def test_graph_layout_and_large_graph(tmp_path):
    dag = np.zeros((4, 4))
    dag[0, 1] = dag[1, 2] = dag[0, 3] = 0.9
    pos, edges, layout = graph_layout(dag)
    assert layout.startswith("layered") and sorted(edges) == [(0, 1), (0, 3), (1, 2)]
    assert pos[0, 0] == 0 and pos[1, 0] == 1 and pos[2, 0] == 2 and pos[3, 0] == 1
    dag[2, 0] = 0.8  # a cycle: circle
    assert graph_layout(dag)[2].startswith("circle")
    rng = np.random.default_rng(0)
    big = rng.random((60, 60)) * 0.45
    big[np.triu_indices(60, 1)] += 0.5 * (rng.random(60 * 59 // 2) < 0.05)
    np.fill_diagonal(big, 0)
    info = plot_prerequisite_graph(big, [f"k{i}" for i in range(60)], tmp_path / "g.png")
    assert info["concepts"] == 60 and info["shown"] == 40 and info["layout"].startswith("layered")
    _check_pngs(tmp_path, {"g.png"})


def test_the_report_names_concepts_the_dataset_names(runs, tmp_path):
    """Learning curves and the prerequisite graph's edges carry the dataset's concept names
    (the ids where it has none, or where the dataset is gone)."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from kt_models.evaluate import dataset_concept_names

    info = json.loads((runs["dkt"] / "run.json").read_text())
    data = tmp_path / "named"
    shutil.copytree(info["data"], data)
    table = pq.read_table(data / "concepts.parquet")
    ids = table.column("concept_id").to_pylist()
    names = [f"Skill {c.upper()}" if c != "c0" else None for c in ids]
    pq.write_table(
        table.set_column(1, "name", pa.array(names, pa.string())), data / "concepts.parquet"
    )
    assert dataset_concept_names(data) == {c: f"Skill {c.upper()}" for c in ids if c != "c0"}
    assert dataset_concept_names(tmp_path / "gone") == {}
    run = tmp_path / "run"
    shutil.copytree(runs["dkt"], run)
    (run / "run.json").write_text(json.dumps({**info, "data": str(data)}))
    write_report(run, tmp_path / "out", device="cpu")
    curves = json.loads((tmp_path / "out" / "report.json").read_text())["learning_curves"]
    assert curves and all(
        c["name"] == ("" if c["concept"] == "c0" else f"Skill {c['concept'].upper()}")
        for c in curves
    )
    # PSI-KT's prerequisite graph: its strongest edges listed by name (and id), on the page
    psi = tmp_path / "psi"
    shutil.copytree(runs["psikt"], psi)
    psi_info = json.loads((psi / "run.json").read_text())
    (psi / "run.json").write_text(json.dumps({**psi_info, "data": str(data)}))
    page = write_report(psi, tmp_path / "psi_out", device="cpu").read_text()
    edges = json.loads((tmp_path / "psi_out" / "report.json").read_text())["prerequisite_graph"]
    strongest = edges["strongest"]
    assert len(strongest) == 12  # 4 concepts: every ordered pair
    assert [e["probability"] for e in strongest] == sorted(
        (e["probability"] for e in strongest), reverse=True
    )
    for e in strongest:
        for end in ("prerequisite", "dependent"):
            cid = e[end]
            assert e[f"{end}_name"] == ("" if cid == "c0" else f"Skill {cid.upper()}")
    assert "Strongest prerequisite edges" in page
    top = strongest[0]
    label = top["prerequisite_name"] or top["prerequisite"]
    assert f"<td>{label}" in page


def test_graph_labels_and_strongest_edges():
    assert graph_label("c12") == "c12"
    assert graph_label("Circle Graph") == "Circle Graph"
    assert graph_label("Addition and Subtraction Integers") == "Addition and\nSubtraction Int\u2026"
    assert graph_label("Ordering Positive Numbers") == "Ordering\nPositive Numbers"
    probs = np.array([[0.9, 0.2, 0.7], [0.1, 0.9, 0.6], [0.3, 0.8, 0.9]])
    top = strongest_edges(probs, ["a", "b", "c"], {"b": "Beta"}, n=3)
    assert [(e["prerequisite"], e["dependent"]) for e in top] == [
        ("c", "b"),
        ("a", "c"),
        ("b", "c"),
    ]
    assert top[0]["dependent_name"] == "Beta" and top[0]["prerequisite_name"] == ""
    assert top[0]["probability"] == pytest.approx(0.8)
    assert len(strongest_edges(probs, ["a", "b", "c"])) == 6  # the diagonal is no edge
    probs[0, 1] = np.nan
    assert len(strongest_edges(probs, ["a", "b", "c"])) == 5  # nor is a NaN
    assert strongest_edges(probs, ["a", "b", "c"], n=-1) == []
