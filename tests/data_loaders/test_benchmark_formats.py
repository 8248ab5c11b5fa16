"""The research benchmark formats, on fixtures cut from ../shared/data (see fixtures/README)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pyarrow.compute as pc
import pytest

from data_loaders import IngestError
from tests.conftest import FIXTURES, shared

B = FIXTURES / "benchmark"


def rows_of(ds, user: str) -> list[dict]:
    t = ds.interactions()
    t = t.filter(pc.equal(t.column("user_id"), user))
    return t.to_pylist()


def test_three_line_dkvmn_counts_and_order(ingest_to):
    ds = ingest_to("three-line", B / "three_line")
    info = ds.info()
    # train: 5 records (18 + 466 + ...), test: 2 records; lengths from the header lines
    lens = [
        int(x) for x in (B / "three_line/assist2015_train.csv").read_text().split("\n")[0::3] if x
    ]
    lens += [
        int(x) for x in (B / "three_line/assist2015_test.csv").read_text().split("\n")[0::3] if x
    ]
    assert info["learners"] == 7
    assert info["interactions"] == sum(lens)
    first = rows_of(ds, "assist2015_train:1")
    assert [r["seq"] for r in first] == list(range(18))
    assert [r["concept_ids"] for r in first[:3]] == [["1"], ["1"], ["2"]]
    assert [r["correct"] for r in first[:4]] == [0, 0, 0, 1]
    assert {r["split"] for r in first} == {"train"}
    assert info["splits"] == {"test": sum(lens[5:]), "train": sum(lens[:5])}


def test_three_line_trailing_commas_dkt_builder(ingest_to):
    ds = ingest_to("three-line", B / "dkt_builder")
    t = ds.interactions()
    # first record: "1 / 7, / 1,"; second: 7 answers of skill 82
    first = rows_of(ds, "builder_train:1")
    assert [(r["item_id"], r["correct"]) for r in first] == [("7", 1)]
    assert ds.manifest["counts"]["rejected"] == 0
    assert t.num_rows == ds.manifest["counts"]["rows_read"]


def test_three_line_item_ids_option(ingest_to):
    ds = ingest_to("three-line", B / "three_line", options={"id_kind": "item"})
    row = rows_of(ds, "assist2015_train:1")[0]
    assert row["item_id"] == "1" and row["concept_ids"] == []


def test_four_line_merges_multi_skill_repeats(ingest_to):
    ds = ingest_to("four-line", B / "four_line")
    first = rows_of(ds, "82295")
    # 1366/1424/1413 are each answered once but listed under skills 7 and 9
    assert [r["item_id"] for r in first] == ["1366", "1424", "1413", "2985", "2976", "2993", "2975"]
    assert [r["concept_ids"] for r in first[:4]] == [["7", "9"], ["7", "9"], ["7", "9"], ["15"]]
    assert [r["correct"] for r in first] == [1, 0, 1, 0, 1, 1, 1]
    assert [r["split"] for r in first] == ["train"] * 7
    assert [r["fold"] for r in first] == [1] * 7
    m = ds.manifest
    assert m["notes"]["multi_skill"] == "merged"
    assert (
        m["counts"]["rows_read"]
        == m["counts"]["interactions"] + m["counts"]["multi_skill_rows_merged"]
    )


def test_four_line_keep_expanded(ingest_to):
    ds = ingest_to("four-line", B / "four_line", keep_expanded=True)
    first = rows_of(ds, "82295")
    assert len(first) == 10
    assert [r["concept_ids"] for r in first[:2]] == [["7"], ["9"]]
    assert ds.manifest["notes"]["multi_skill"] == "expanded"
    assert ds.manifest["counts"]["multi_skill_rows_merged"] == 0


def test_pykt_keeps_folds(ingest_to):
    ds = ingest_to("pykt", B / "pykt")
    info = ds.info()
    assert info["learners"] == 6 + 3
    first = rows_of(ds, "16894")
    assert len(first) == 21
    assert first[0]["fold"] == 0 and first[0]["split"] == "train"
    assert [r["correct"] for r in first[:4]] == [0, 1, 0, 1]
    test_user = rows_of(ds, "6256")
    assert [(r["concept_ids"], r["correct"], r["fold"], r["split"]) for r in test_user] == [
        (["54"], 1, -1, "test"),
        (["54"], 1, -1, "test"),
        (["54"], 1, -1, "test"),
        (["3"], 1, -1, "test"),
        (["3"], 0, -1, "test"),
    ]
    assert set(info["folds"]) == {"-1", "0"}


def test_pykt_missing_column(tmp_path, ingest_to):
    bad = tmp_path / "bad.csv"
    bad.write_text('fold,uid,concepts\n0,1,"1,2"\n')
    with pytest.raises(IngestError, match="missing required column 'responses'") as e:
        ingest_to("pykt", bad)
    assert "bad.csv" in str(e.value)


def test_tabular_with_q_matrix(ingest_to):
    ds = ingest_to("tabular", B / "tabular")
    t = ds.interactions()
    assert t.num_rows == 120 + 40
    user0 = rows_of(ds, "0")
    # user 0, item 12661: q_mat row 12661 lists its skills; the file's timestamp 0 is no clock
    assert user0[0]["item_id"] == "12661"
    assert user0[0]["timestamp"] is None
    assert user0[0]["concept_ids"] and all(c.isdigit() for c in user0[0]["concept_ids"])
    assert ds.manifest["notes"]["concepts_from"].startswith("q_mat.npz")
    no_q = ingest_to("tabular", B / "tabular", options={"q_matrix": "false"})
    assert rows_of(no_q, "0")[0]["concept_ids"] == ["143"]


def test_dkt_synthetic_concepts_from_info(ingest_to):
    ds = ingest_to("dkt-synthetic", B / "dkt_synthetic")
    t = ds.interactions()
    assert t.num_rows == 20 * 50
    info_concepts = [
        line.split("\t")[2]
        for line in (B / "dkt_synthetic/info/naive_c5_q50_s4000_v0_info.txt")
        .read_text()
        .split("\n")
        if line
    ]
    first = rows_of(ds, "naive_c5_q50_s4000_v0:1")
    assert [r["item_id"] for r in first] == [str(i) for i in range(50)]
    assert [r["concept_ids"][0] for r in first] == info_concepts
    assert ds.info()["concepts"] == 5


def test_truncated_last_record_is_rejected(tmp_path, ingest_to):
    src = (B / "three_line/assist2015_train.csv").read_text().splitlines()
    (tmp_path / "cut").mkdir()
    # drop the answers line of the last record
    (tmp_path / "cut/data.csv").write_text("\n".join(src[:-1]) + "\n")
    ds = ingest_to("three-line", tmp_path / "cut")
    rej = ds.rejected().to_pylist()
    assert len(rej) == 1
    assert rej[0]["reason"] == "truncated record"
    assert rej[0]["line"] == len(src) - 2
    assert ds.info()["learners"] == 4


def test_bad_answer_and_length_mismatch_rejected(tmp_path, ingest_to):
    f = tmp_path / "x.csv"
    f.write_text("3\n1,2,3\n0,1,1\n2\n4,5\n0,2\n3\n1,2\n1,1\n2\n7,7\n1,0\n")
    ds = ingest_to("three-line", f)
    rej = {(r["line"], r["reason"]) for r in ds.rejected().to_pylist()}
    assert rej == {(6, "answer not 0 or 1"), (7, "length mismatch")}
    assert ds.info()["interactions"] == 5
    assert ds.manifest["counts"]["rows_read"] == 3 + 2 + 2 + 2


def test_gzip_detected_by_content(tmp_path, ingest_to):
    data = (B / "three_line/assist2015_test.csv").read_bytes()
    f = tmp_path / "no_extension"
    f.write_bytes(gzip.compress(data))
    ds = ingest_to("three-line", f)
    plain = ingest_to("three-line", B / "three_line/assist2015_test.csv")
    assert ds.info()["interactions"] == plain.info()["interactions"]


def test_zip_input(tmp_path, ingest_to):
    archive = shutil.make_archive(str(tmp_path / "akt"), "zip", B / "four_line")
    ds = ingest_to("four-line", Path(archive))
    assert ds.info()["learners"] == 4


# ---------------------------------------------------------------- real files, when present
@pytest.mark.slow
def test_real_akt_assist2009_counts(ingest_to):
    ds = ingest_to("four-line", shared("assist2009/akt_assist2009_pid"))
    info = ds.info()
    assert (info["learners"], info["rows_read"], info["items"], info["concepts"]) == (
        4151,
        325637,
        16891,
        110,
    )
    assert info["interactions"] == 274590
    assert info["multi_skill_rows_merged"] == 51047
    expanded = ingest_to("four-line", shared("assist2009/akt_assist2009_pid"), keep_expanded=True)
    assert expanded.info()["interactions"] == 325637


@pytest.mark.slow
def test_real_assist2015_dkvmn_counts(ingest_to):
    ds = ingest_to("three-line", shared("assist2015/dkvmn"))
    assert ds.info()["interactions"] == 683801
