"""The raw ASSISTments loaders on hand-written fixtures (tests/fixtures/assistments/README.md).

Every expectation below is computed by hand from the fixture files.
"""

from __future__ import annotations

import gzip
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from data_loaders import IngestError, inputs
from data_loaders import assistments as asm
from data_loaders.assistments_columns import row_hash

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "assistments"
SB2009 = FIX / "skill_builder_2009.csv"
LATIN1 = FIX / "skill_builder_2009_latin1.csv"
A2012 = FIX / "assistments_2012.csv"
A2015 = FIX / "skill_builders_2015.csv"
A2017 = FIX / "assistments_2017.csv"


def histories(ds: Any, *cols: str) -> dict[str, list[tuple]]:
    """Each learner's interactions in seq order, as tuples of ``cols``."""
    rows = ds.interactions().to_pylist()
    out: dict[str, list[tuple]] = {}
    for r in sorted(rows, key=lambda r: (r["user_id"], r["seq"])):
        out.setdefault(r["user_id"], []).append(tuple(r[c] for c in cols))
    seqs: dict[str, list[int]] = {}
    for r in rows:
        seqs.setdefault(r["user_id"], []).append(r["seq"])
    for user, s in seqs.items():  # seq is 0, 1, 2, ... per learner
        assert sorted(s) == list(range(len(s))), user
    return out


def rejected(ds: Any) -> list[tuple[int, str, str | None]]:
    return [(r["line"], r["reason"], r["detail"]) for r in ds.rejected().to_pylist()]


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


# ------------------------------------------------------------------------------ 2009
EXPECTED_2009 = {
    "70001": [
        ("51424", ["1"], 0, 32454, 2),
        ("51426", ["1"], 1, 8000, 1),
        ("51430", ["1"], 1, 14500, 1),
        ("51435", ["1"], 1, None, 1),  # ms_first_response -7: elapsed unknown
        ("62011", ["10", "11", "12"], 0, 22000, 3),  # one answer listed once per skill
    ],
    "70002": [("70001", [], 1, 5000, 1), ("70002", ["17"], 0, 41000, 2)],
    "70003": [("51424", ["1"], 1, 11000, 1), ("62011", ["10", "11"], 1, 16000, 1)],
    "70004": [("51424", ["1"], 0, 27000, 1)],
}
REJECTED_2009 = [
    (9, "exact duplicate of an earlier row", "same as line 4"),
    (12, "correct not 0 or 1", "correct='2'"),
    (14, "bad order_id", "order_id=''"),
    (16, "empty user_id", None),
    (17, "empty problem_id", None),
    (20, "wrong number of fields", "expected 30 fields, got 4"),
    (23, "wrong number of fields", "expected 30 fields, got 7"),  # truncated last line
]
COLS_2009 = ("item_id", "concept_ids", "correct", "elapsed_ms", "attempt")


def test_2009_interactions_in_order_id_order_merged_and_deduplicated(ingest_to):
    ds = ingest_to("assistments-2009", SB2009)
    assert histories(ds, *COLS_2009) == EXPECTED_2009
    t = ds.interactions()
    assert t.column("timestamp").null_count == t.num_rows  # the release has no clock
    m = ds.manifest
    assert m["counts"]["rows_read"] == 22
    assert m["counts"]["interactions"] == 10
    assert m["counts"]["learners"] == 4
    assert m["counts"]["duplicates_dropped"] == 1
    assert m["counts"]["multi_skill_rows_merged"] == 3
    assert m["skipped_by_reason"] == {"scaffolding (original=0)": 2}
    assert m["rejected_by_reason"] == {
        "bad order_id": 1,
        "correct not 0 or 1": 1,
        "empty problem_id": 1,
        "empty user_id": 1,
        "exact duplicate of an earlier row": 1,
        "wrong number of fields": 2,
    }
    assert "1 rows" in m["notes"]["elapsed_ms_nulled"]
    # every row read is accounted for
    c = m["counts"]
    skipped = sum(m["skipped_by_reason"].values())
    assert c["interactions"] + c["rejected"] + skipped + c["multi_skill_rows_merged"] == 22


def test_2009_rejected_rows_name_line_reason_and_raw_text(ingest_to):
    ds = ingest_to("assistments-2009", SB2009)
    assert rejected(ds) == REJECTED_2009
    raw = {r["line"]: r["raw"] for r in ds.rejected().to_pylist()}
    assert raw[20] == "33000303,277618,70003,33140"
    assert raw[23] == "33000402,277618,70004,33140,51426,1,1"
    lines = SB2009.read_text().splitlines()
    assert raw[12] == lines[11]  # rebuilt from the parsed fields
    assert {r["file"] for r in ds.rejected().to_pylist()} == {str(SB2009)}


def test_2009_concepts_and_items(ingest_to):
    ds = ingest_to("assistments-2009", SB2009)
    concepts = {r["concept_id"]: r["name"] for r in ds.concepts().to_pylist()}
    assert concepts == {
        "1": "Box and Whisker",
        "10": "Proportion",
        "11": "Ratio",
        "12": "Scale Factor",
        "17": "Equation Solving Two or Fewer Steps",
    }
    items = {r["item_id"]: r["concept_ids"] for r in ds.items().to_pylist()}
    assert items["62011"] == ["10", "11", "12"]
    assert items["70001"] == []
    assert len(items) == 7


def test_2009_keep_expanded_keeps_one_row_per_skill(ingest_to):
    ds = ingest_to("assistments-2009", SB2009, keep_expanded=True)
    h = histories(ds, "item_id", "concept_ids")
    assert h["70001"][-3:] == [("62011", ["10"]), ("62011", ["11"]), ("62011", ["12"])]
    assert h["70003"] == [("51424", ["1"]), ("62011", ["10"]), ("62011", ["11"])]
    assert ds.manifest["counts"]["interactions"] == 13
    assert ds.manifest["counts"]["multi_skill_rows_merged"] == 0
    assert ds.manifest["notes"]["multi_skill"] == "expanded"


def test_2009_original_only_false_keeps_scaffolding(ingest_to):
    ds = ingest_to("assistments-2009", SB2009, options={"original_only": "false"})
    h = histories(ds, "item_id", "correct")
    assert [i for i, _ in h["70001"]] == ["51424", "51425", "51426", "51430", "51435", "62011"]
    assert h["70003"] == [("51424", 1), ("62011", 1), ("51427", 0)]
    assert ds.manifest["counts"]["interactions"] == 12
    assert ds.manifest["skipped_by_reason"] == {}


def test_2009_keep_duplicates(ingest_to):
    ds = ingest_to("assistments-2009", SB2009, keep_duplicates=True, keep_expanded=True)
    h = histories(ds, "item_id")
    assert [i for (i,) in h["70001"]] == [
        "51424",
        "51426",
        "51426",  # line 9, the exact duplicate of line 4
        "51430",
        "51435",
        "62011",
        "62011",
        "62011",
    ]
    assert ds.manifest["counts"]["duplicates_dropped"] == 0
    assert ds.manifest["counts"]["interactions"] == 14
    # with merging on, the kept duplicate is a second answer, not another skill of line 4
    ds = ingest_to("assistments-2009", SB2009, keep_duplicates=True)
    h = histories(ds, *COLS_2009)
    assert h["70001"][1] == h["70001"][2] == EXPECTED_2009["70001"][1]
    assert {
        u: [r for i, r in enumerate(rows) if not (u == "70001" and i == 2)] for u, rows in h.items()
    } == EXPECTED_2009
    assert ds.manifest["counts"]["multi_skill_rows_merged"] == 3


def test_gzip_and_directory_inputs_give_the_same_dataset(ingest_to, tmp_path):
    plain = ingest_to("assistments-2009", SB2009)
    gz = tmp_path / "skill_builder_data.csv.gz"
    gz.write_bytes(gzip.compress(SB2009.read_bytes()))
    renamed = tmp_path / "gz_without_suffix.csv"  # compression is found from the bytes
    renamed.write_bytes(gz.read_bytes())
    folder = tmp_path / "release"
    folder.mkdir()
    shutil.copy(SB2009, folder / "skill_builder_data.csv")
    (folder / "README.md").write_text("not data\n")
    want = histories(plain, *COLS_2009)
    for path in (gz, renamed, folder):
        ds = ingest_to("assistments-2009", path)
        assert histories(ds, *COLS_2009) == want, path
        assert [r[:2] for r in rejected(ds)] == [r[:2] for r in REJECTED_2009]
        assert ds.manifest["counts"]["input_files"] == 1


def test_small_blocks_and_chunks_give_the_same_result(ingest_to, monkeypatch):
    """Line numbers and rows do not depend on where the CSV reader cuts its blocks."""
    monkeypatch.setattr(asm, "BLOCK_SIZE", 600)
    monkeypatch.setattr(inputs, "STREAM_CHUNK", 5)
    ds = ingest_to("assistments-2009", SB2009)
    assert histories(ds, *COLS_2009) == EXPECTED_2009
    assert rejected(ds) == REJECTED_2009


def test_missing_required_column_names_file_and_column(ingest_to, tmp_path):
    lines = SB2009.read_text().splitlines()
    header = lines[0].split(",")
    drop = header.index("correct")
    bad = tmp_path / "no_correct.csv"
    bad.write_text(
        "\n".join(",".join(f for i, f in enumerate(ln.split(",")) if i != drop) for ln in lines[:5])
    )
    with pytest.raises(IngestError) as err:
        ingest_to("assistments-2009", bad)
    assert err.value.field == "correct"
    assert err.value.line == 1
    assert err.value.file == str(bad)
    assert "missing required column 'correct'" in str(err.value)
    assert not any(p.name.startswith("ds") for p in tmp_path.iterdir())  # nothing written


def test_non_utf8_input_fails_naming_the_line(ingest_to, tmp_path, monkeypatch):
    with pytest.raises(IngestError) as err:
        ingest_to("assistments-2009", LATIN1)
    assert err.value.file == str(LATIN1)
    assert err.value.line == 3  # the first byte that is not UTF-8: '°' (0xb0) on line 3
    assert "--encoding" in str(err.value)
    # the same when the bad byte is found in a later chunk of a gzipped stream
    monkeypatch.setattr(inputs, "STREAM_CHUNK", 3)
    gz = tmp_path / "latin1.csv.gz"
    gz.write_bytes(gzip.compress(LATIN1.read_bytes()))
    with pytest.raises(IngestError) as err:
        ingest_to("assistments-2009", gz)
    assert err.value.line == 3


def test_latin1_with_encoding_option(ingest_to):
    ds = ingest_to("assistments-2009", LATIN1, encoding="latin-1")
    concepts = {r["concept_id"]: r["name"] for r in ds.concepts().to_pylist()}
    assert concepts["51"] == "Café Prices (Decimals)"
    assert ds.manifest["counts"]["interactions"] == 4


def test_utf8_multibyte_split_across_chunks_and_bom(ingest_to, tmp_path, monkeypatch):
    monkeypatch.setattr(inputs, "STREAM_CHUNK", 1)  # every multi-byte character is split
    utf8 = tmp_path / "utf8.csv"
    utf8.write_bytes(b"\xef\xbb\xbf" + LATIN1.read_bytes().decode("latin-1").encode("utf-8"))
    ds = ingest_to("assistments-2009", utf8)
    concepts = {r["concept_id"]: r["name"] for r in ds.concepts().to_pylist()}
    assert concepts["51"] == "Café Prices (Decimals)"
    assert ds.manifest["counts"]["interactions"] == 4


def test_blank_lines_are_ignored_and_line_numbers_stay_physical(ingest_to, tmp_path):
    lines = A2015.read_text().splitlines()
    path = tmp_path / "blank.csv"
    path.write_text("\n".join(lines[:4] + [""] + lines[4:]))  # blank line 5
    ds = ingest_to("assistments-2015", path)
    assert ds.manifest["counts"]["rows_read"] == 13
    assert rejected(ds)[2] == (10, "exact duplicate of an earlier row", "same as line 9")
    assert [r[0] for r in rejected(ds)] == [6, 8, 10, 11, 12, 14, 15]


# ------------------------------------------------------------------------------ 2012
def test_2012_order_timestamps_and_rejections(ingest_to):
    ds = ingest_to("assistments-2012", A2012)
    h = histories(ds, "item_id", "concept_ids", "correct", "timestamp", "elapsed_ms", "attempt")
    ts = {u: [r[3] for r in rows] for u, rows in h.items()}
    assert [r[:3] + r[4:] for r in h["200001"]] == [
        ("211000", ["281"], 0, 45000, 2),
        ("211002", ["280"], 1, 3000, 1),  # same start time as 211001, lower problem_log_id
        ("211001", ["280"], 1, 12000, 1),
        ("211005", [], 1, 9500, 1),  # empty skill_id
    ]
    assert [int(t.timestamp() * 1000) for t in ts["200001"]] == [
        ms(2012, 9, 9, 20, 2, 37),
        ms(2012, 9, 9, 20, 5, 10),
        ms(2012, 9, 9, 20, 5, 10),
        ms(2012, 9, 10, 8, 3, 30) + 500,
    ]
    # 14:00+02:00 is 12:00 UTC, before the 14:00 (UTC) answer listed above it
    assert [r[:3] + r[4:] for r in h["200002"]] == [
        ("211006", ["282"], 1, 7000, 1),
        ("211000", ["281"], 1, None, 1),  # empty ms_first_response
    ]
    assert [int(t.timestamp() * 1000) for t in ts["200002"]] == [
        ms(2012, 9, 11, 12, 0, 0),
        ms(2012, 9, 11, 14, 0, 0),
    ]
    assert rejected(ds) == [
        (5, "correct not 0 or 1", "correct='0.25'"),
        (7, "bad timestamp", "start_time='2012-13-45 10:00:00.0'"),
        (10, "exact duplicate of an earlier row", "same as line 9"),
        (12, "bad timestamp", "start_time=''"),
        (13, "correct not 0 or 1", "correct='0.8'"),
    ]
    m = ds.manifest
    assert m["counts"]["rows_read"] == 12
    assert m["skipped_by_reason"] == {"scaffolding (original=0)": 1}
    concepts = {r["concept_id"]: r["name"] for r in ds.concepts().to_pylist()}
    assert concepts == {
        "280": "Addition and Subtraction Integers",
        "281": "Multiplication and Division Integers",
        "282": "Fraction Multiplication",
    }


def test_2012_binarize_maps_partial_credit(ingest_to):
    ds = ingest_to("assistments-2012", A2012, options={"binarize": "true"})
    h = histories(ds, "item_id", "correct")
    assert h["200001"] == [
        ("211000", 0),
        ("211002", 1),
        ("211001", 1),
        ("211003", 0),  # 0.25 -> 0
        ("211005", 1),
    ]
    assert h["200002"] == [("211006", 1), ("211000", 1), ("211007", 0)]  # 0.8 -> 0
    assert [r[1] for r in rejected(ds)] == [
        "bad timestamp",
        "exact duplicate of an earlier row",
        "bad timestamp",
    ]
    assert ds.manifest["notes"]["correct_binarized"].startswith("2 rows")


def test_2012_original_only_false(ingest_to):
    ds = ingest_to("assistments-2012", A2012, options={"original_only": False})
    h = histories(ds, "item_id")
    assert [i for (i,) in h["200001"]] == ["211000", "211002", "211001", "211004", "211005"]


# ------------------------------------------------------------------------------ 2015
def test_2015_sequence_is_item_and_concept_in_log_id_order(ingest_to):
    ds = ingest_to("assistments-2015", A2015)
    h = histories(ds, "item_id", "concept_ids", "correct", "elapsed_ms", "attempt")
    assert h == {
        "50121": [
            ("5542", ["5542"], 0, None, None),
            ("5542", ["5542"], 1, None, None),
            ("5542", ["5542"], 1, None, None),
        ],
        "50964": [("7014", ["7014"], 0, None, None), ("5964", ["5964"], 1, None, None)],
        "51010": [("7014", ["7014"], 1, None, None)],  # correct "1.0" is 1
    }
    assert rejected(ds) == [
        (5, "correct not 0 or 1", "correct='0.25'"),
        (7, "wrong number of fields", "expected 4 fields, got 5"),
        # line numbers after a row the CSV reader skipped stay right
        (9, "exact duplicate of an earlier row", "same as line 8"),
        (10, "bad log_id", "log_id='abc'"),
        (11, "empty sequence_id", None),
        (13, "empty user_id", None),
        (14, "wrong number of fields", "expected 4 fields, got 3"),
    ]
    assert ds.manifest["counts"]["rows_read"] == 13
    assert ds.manifest["skipped_by_reason"] == {}


def test_2015_binarize_and_no_original_only_option(ingest_to):
    ds = ingest_to("assistments-2015", A2015, options={"binarize": "yes"})
    assert histories(ds, "item_id", "correct")["50121"][-1] == ("5964", 0)
    assert ds.manifest["counts"]["interactions"] == 7
    with pytest.raises(IngestError, match="no option 'original_only'"):
        ingest_to("assistments-2015", A2015, options={"original_only": "false"})


# ------------------------------------------------------------------------------ 2017
def test_2017_start_time_order_elapsed_and_skills(ingest_to):
    ds = ingest_to("assistments-2017", A2017)
    h = histories(ds, "item_id", "concept_ids", "correct", "timestamp", "elapsed_ms", "attempt")
    rows = {
        u: [(r[0], r[1], r[2], int(r[3].timestamp() * 1000), r[4], r[5]) for r in v]
        for u, v in h.items()
    }
    assert rows == {
        "8": [
            ("12", ["sum-of-interior-angles-more-than-3-sides"], 0, 1096470180000, 120000, 3),
            ("5", ["properties-of-geometric-figures"], 1, 1096470301000, 49000, 1),
            ("6", ["properties-of-geometric-figures"], 0, 1096470301000, 29000, 2),  # tie: line
            ("20", [], 1, 1096470400500, 7250, 1),  # noskill
        ],
        "35": [
            ("31", ["equation-solving"], 1, 1096550000000, 15000, 1),
            ("32", [], 0, 1096550100000, None, 2),  # timeTaken -1
        ],
    }
    assert rejected(ds) == [
        (8, "bad timestamp", "startTime='NA'"),
        (9, "correct not 0 or 1", "correct=''"),
        (10, "exact duplicate of an earlier row", "same as line 7"),
    ]
    assert ds.manifest["skipped_by_reason"] == {"scaffolding (original=0)": 1}
    names = {r["concept_id"]: r["name"] for r in ds.concepts().to_pylist()}
    assert names == {
        "equation-solving": "equation-solving",
        "properties-of-geometric-figures": "properties-of-geometric-figures",
        "sum-of-interior-angles-more-than-3-sides": "sum-of-interior-angles-more-than-3-sides",
    }


def test_2017_original_only_false(ingest_to):
    ds = ingest_to("assistments-2017", A2017, options={"original_only": "0"})
    h = histories(ds, "item_id")
    assert [i for (i,) in h["8"]] == ["12", "13", "5", "6", "20"]


# ------------------------------------------------------------------------------ helpers
def test_row_hash_is_per_value_and_order_sensitive():
    import pyarrow as pa

    a = pa.array(["ab", "ba", "ab", "", "x" * 300 + "ab", "x" * 300 + "ba"])
    b = pa.array(["1", "1", "1", "1", "1", "1"])
    h = row_hash([a, b])
    assert h[0] == h[2]
    assert len(set(h.tolist())) == 5
    assert row_hash([a.slice(2, 2), b.slice(2, 2)]).tolist() == [h[2], h[3]]
    assert row_hash([b, a])[0] != h[0]  # column order matters
