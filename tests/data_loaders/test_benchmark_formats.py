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


TAB_HEADER = "user_id\titem_id\ttimestamp\tcorrect\tskill_id\n"


def write_tabular(tmp_path: Path, rows: list[str], name: str = "log.tsv") -> Path:
    p = tmp_path / "tab" / name
    p.parent.mkdir(exist_ok=True)
    p.write_text(TAB_HEADER + "".join(r + "\n" for r in rows))
    return p


def test_tabular_timestamp_out_of_range_is_a_rejected_row(tmp_path, ingest_to):
    p = write_tabular(
        tmp_path,
        [
            "u\t1\t99999999999999999999\t1\t7",  # overflows int64: was an OverflowError
            "u\t2\t1600000000000\t0\t7",
            "u\t3\t-1000\t1\t7",  # before 1970
            "u\t4\t7258118400000\t1\t7",  # 2200-01-01: the first value out of the window
            "u\t5\t7258118399999\t1\t7",  # the last value in it
        ],
    )
    ds = ingest_to("tabular", p)
    rej = ds.rejected().to_pylist()
    assert [(r["line"], r["reason"]) for r in rej] == [
        (2, "timestamp out of range"),
        (4, "timestamp out of range"),
        (5, "timestamp out of range"),
    ]
    assert "timestamp='99999999999999999999'" in rej[0]["detail"]
    assert "1970-01-01..2200-01-01" in rej[0]["detail"]
    assert rej[0]["raw"] == "u\t1\t99999999999999999999\t1\t7"  # the row is kept with its reason
    kept = ds.interactions().to_pylist()
    assert [r["item_id"] for r in kept] == ["2", "5"]
    assert kept[0]["timestamp"].year == 2020 and kept[1]["timestamp"].year == 2199
    assert ds.manifest["counts"]["rows_read"] == 5


def test_tabular_nan_and_inf_numbers_are_rejected_rows_not_nulls(tmp_path, ingest_to):
    p = write_tabular(
        tmp_path,
        [
            "u\t1\tnan\t1\t7",
            "u\t2\t1e400\t1\t7",  # inf as a float
            "u\t3\t1600000000000\t0\t7",
            "u\t4\t1600000000000.5\t1\t7",
            "u\t5\tsoon\t1\t7",
            "u\t6\t1600000000001.0\t1\t7",  # a whole number written as a decimal: accepted
            "u\t7\t\t1\t7",  # no timestamp: none, not an error
            "u\t8\t1600000000002\tnan\t7",
            "u\t9\t1600000000003\t1e400\t7",
        ],
    )
    ds = ingest_to("tabular", p)
    rej = {r["line"]: r for r in ds.rejected().to_pylist()}
    assert {k: v["reason"] for k, v in rej.items()} == {
        2: "bad timestamp",
        3: "bad timestamp",
        5: "bad timestamp",
        6: "bad timestamp",
        9: "correct not 0 or 1",
        10: "correct not 0 or 1",
    }
    assert "timestamp='nan'" in rej[2]["detail"] and "timestamp='1e400'" in rej[3]["detail"]
    assert rej[9]["detail"] == "correct='nan'" and rej[10]["detail"] == "correct='1e400'"
    kept = {r["item_id"]: r["timestamp"] for r in ds.interactions().to_pylist()}
    assert set(kept) == {"3", "6", "7"}
    assert kept["7"] is None and kept["6"] is not None


def test_tabular_rejected_rows_keep_their_real_line_numbers(tmp_path, ingest_to):
    p = tmp_path / "lines.tsv"
    p.write_bytes(
        TAB_HEADER.encode()
        + b"u\t1\t0\t1\t7\r\n"  # line 2
        + b"\r\n"  # line 3: blank
        + b"u\t2\n"  # line 4: wrong number of fields
        + b"u\t3\t0\t2\t7\n"  # line 5: bad answer
        + b"\n"  # line 6: blank
        + b"u\t4\tnan\t0\t7\n"  # line 7
        + b"u\t5\t0\t0\t7"  # line 8, no final newline
    )
    ds = ingest_to("tabular", p)
    assert [(r["line"], r["reason"]) for r in ds.rejected().to_pylist()] == [
        (4, "wrong number of fields"),
        (5, "correct not 0 or 1"),
        (7, "bad timestamp"),
    ]
    assert [r["item_id"] for r in ds.interactions().to_pylist()] == ["1", "5"]


def test_tabular_line_longer_than_the_limit_is_a_rejected_row(tmp_path, ingest_to):
    p = write_tabular(
        tmp_path, ["u\t1\t0\t1\t7", "u\t" + "9" * 5000 + "\t0\t1\t7", "u\t3\t0\t0\t7"]
    )
    ds = ingest_to("tabular", p, options={"max_line_bytes": "1000"})
    rej = ds.rejected().to_pylist()
    assert [(r["line"], r["reason"]) for r in rej] == [(3, "line too long")]
    assert "5,008 bytes, longer than the limit of 1,000 bytes" in rej[0]["detail"]
    assert [r["item_id"] for r in ds.interactions().to_pylist()] == ["1", "3"]
    # a row over pyarrow's 1 MiB block was an ingest-stopping "straddling object" error
    big = write_tabular(tmp_path, ["u\t1\t0\t1\t7", "u\t" + "9" * (2 << 20) + "\t0\t1\t7"], "b.tsv")
    ds = ingest_to("tabular", big)
    assert ds.manifest["rejected_by_reason"] == {"line too long": 1}
    with pytest.raises(IngestError, match="header line is .* longer than the limit") as exc:
        ingest_to("tabular", p, options={"max_line_bytes": "10"})
    assert exc.value.line == 1


def test_pykt_bad_timestamps_are_rejected_records(tmp_path, ingest_to):
    p = tmp_path / "pykt.csv"
    p.write_text(
        "fold,uid,concepts,responses,timestamps\n"
        '0,a,"1,2","1,0","1600000000000,1600000001000"\n'
        '0,b,"1,2","1,0","1600000000000,99999999999999999999"\n'
        '0,c,"1,2","1,0","nan,1600000001000"\n'
        '0,d,"1,2","1,0","1600000000000"\n'
    )
    ds = ingest_to("pykt", p)
    rej = ds.rejected().to_pylist()
    assert [(r["line"], r["reason"]) for r in rej] == [
        (3, "timestamp out of range"),
        (4, "bad timestamp"),
        (5, "length mismatch"),
    ]
    assert "position 2: timestamps='99999999999999999999'" in rej[0]["detail"]
    assert {r["user_id"] for r in ds.interactions().to_pylist()} == {"a"}


def test_four_line_record_with_an_overlong_line_is_rejected_and_the_rest_read(tmp_path, ingest_to):
    p = tmp_path / "pid.csv"
    ids = ",".join(["12345"] * 400)  # 2,399 bytes
    p.write_text(
        "1,u1\n1,2\n3,4\n1,1\n"  # lines 1-4
        f"400,u2\n{ids}\n{ids}\n" + ",".join(["1"] * 400) + "\n"  # lines 5-8
        "1,u3\n5\n6\n0\n"  # lines 9-12: still aligned after the long record
    )
    ds = ingest_to("four-line", p, options={"max_line_bytes": "2000"})
    rej = ds.rejected().to_pylist()
    assert [(r["line"], r["reason"]) for r in rej] == [(5, "line too long")]
    assert "record line 2 of 4: line is 2,399 bytes" in rej[0]["detail"]
    assert rej[0]["raw"].startswith("400,u2\n12345,12345")
    assert {r["user_id"] for r in ds.interactions().to_pylist()} == {"u1", "u3"}
    # the default limit (1 MiB) reads it
    assert ingest_to("four-line", p).manifest["counts"]["rejected"] == 0


def test_line_limit_applies_to_three_line_pykt_and_dkt_synthetic(tmp_path, ingest_to):
    three = tmp_path / "three.csv"
    three.write_text("2\n1,2\n0,1\n3\n" + "1," * 600 + "\n" + "0," * 600 + "\n")
    ds = ingest_to("three-line", three, options={"max_line_bytes": "1000"})
    assert [(r["line"], r["reason"]) for r in ds.rejected().to_pylist()] == [(4, "line too long")]
    pykt = tmp_path / "pykt.csv"
    pykt.write_text(
        'fold,uid,concepts,responses\n0,a,"1,2","1,0"\n0,b,"'
        + "1," * 600
        + '1","'
        + "0," * 600
        + '1"\n0,c,"3","1"\n'
    )
    ds = ingest_to("pykt", pykt, options={"max_line_bytes": "1000"})
    assert [(r["line"], r["reason"]) for r in ds.rejected().to_pylist()] == [(3, "line too long")]
    assert {r["user_id"] for r in ds.interactions().to_pylist()} == {"a", "c"}
    syn = tmp_path / "syn" / "naive.csv"
    syn.parent.mkdir()
    syn.write_text("0,1,1\n" + "1," * 600 + "1\n1,0,1\n")
    ds = ingest_to("dkt-synthetic", syn, options={"max_line_bytes": "1000"})
    assert [(r["line"], r["reason"]) for r in ds.rejected().to_pylist()] == [(2, "line too long")]
    with pytest.raises(IngestError, match="max_line_bytes"):
        ingest_to("three-line", three, options={"max_line_bytes": "0"})
