"""The xAPI loader on hand-written statements (see fixtures/xapi/README.md for every case)."""

from __future__ import annotations

import gzip
import json
import zipfile
from datetime import UTC, datetime

import pyarrow.compute as pc
import pytest

from data_loaders import IngestError
from data_loaders.xapi import actor_id, parse_duration_ms, parse_timestamp_ms, verb_name
from tests.conftest import FIXTURES

X = FIXTURES / "xapi"
ALICE = "lms.example.org|alice"
BOB = "bob@example.org"
CAROL = "sha1:2359f75fc9dd3125ddc0b3b400796ed1c6000f5e"
Q = "https://lms.example.org/questions/"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def rows_of(ds, user: str) -> list[dict]:
    t = ds.interactions()
    return t.filter(pc.equal(t.column("user_id"), user)).to_pylist()


def test_jsonl_answers_per_learner(ingest_to):
    ds = ingest_to("xapi", X / "statements.jsonl")
    counts = ds.manifest["counts"]
    assert counts["rows_read"] == 22  # 23 lines, one blank
    assert counts["interactions"] == 10
    assert counts["learners"] == 3
    assert counts["correct"] == 6

    alice = rows_of(ds, ALICE)
    # ordered by timestamp: line 12 (08:00) comes before line 1 (09:00)
    assert [(r["item_id"], r["correct"]) for r in alice] == [
        (Q + "q4", 0),
        (Q + "q1", 1),
        (Q + "q2", 0),
        (Q + "q3", 1),
        (Q + "q5", 1),
    ]
    assert [r["seq"] for r in alice] == [0, 1, 2, 3, 4]
    assert [r["timestamp"] for r in alice] == [
        utc(2026, 1, 5, 8, 0),
        utc(2026, 1, 5, 9, 0),
        utc(2026, 1, 5, 9, 0, 5),  # 10:00:05+01:00
        utc(2026, 1, 5, 9, 30),  # no timestamp: 'stored'
        utc(2026, 1, 5, 12, 0),  # no offset: read as UTC
    ]
    assert [r["elapsed_ms"] for r in alice] == [None, 63500, 12000, None, None]
    assert [r["concept_ids"] for r in alice] == [
        [],
        ["fractions"],  # a string
        ["fractions", "decimals"],  # a list
        [],
        [],
    ]

    bob = rows_of(ds, BOB)
    assert [(r["item_id"], r["correct"]) for r in bob] == [
        (Q + "q1", 1),
        (Q + "q3", 1),  # completed, score.scaled 1.0
        (Q + "q4", 0),  # completed, score.scaled 0.6 < 1.0
        (Q + "q2", 0),  # dod-isd 'answered' verb
    ]
    assert bob[0]["timestamp"] == utc(2026, 1, 6, 8, 30, 0, 250000)
    assert bob[0]["elapsed_ms"] == 750
    # activity definition first, then context, without repeats
    assert bob[0]["concept_ids"] == ["fractions", "algebra"]
    assert bob[3]["timestamp"] == utc(2026, 1, 6, 14, 0)  # 09:00-05:00
    assert bob[3]["elapsed_ms"] == 120000
    assert bob[3]["concept_ids"] == ["7"]

    carol = rows_of(ds, CAROL)
    assert [(r["item_id"], r["correct"], r["elapsed_ms"]) for r in carol] == [
        (Q + "q5", 1, None)  # the unreadable duration leaves elapsed_ms null
    ]
    assert ds.manifest["notes"]["xapi_bad_durations"]["count"] == 1
    assert ds.manifest["notes"]["xapi"]["timestamps_without_offset_read_as_utc"] == 1


def test_jsonl_rejected_with_lines_and_reasons(ingest_to):
    ds = ingest_to("xapi", X / "statements.jsonl")
    rej = ds.rejected().to_pylist()
    assert [(r["line"], r["reason"]) for r in rej] == [
        (7, "exact duplicate of an earlier row"),
        (8, "invalid JSON"),
        (9, "missing object"),
        (10, "bad timestamp"),
        (16, "no success or score"),
        (17, "bad success"),
        (18, "actor without identifier"),
        (23, "missing actor"),  # after the blank line 22
    ]
    assert rej[0]["detail"] == "same as line 1"  # the replay has the id in upper case
    assert rej[1]["raw"].startswith('{"id": "a1b2c3d4-0000-4000-8000-000000000008"')
    assert "2026-13-45T25:00:00Z" in rej[3]["detail"]
    assert all(r["file"].endswith("statements.jsonl") for r in rej)
    assert ds.manifest["rejected_by_reason"]["invalid JSON"] == 1
    assert ds.manifest["counts"]["duplicates_dropped"] == 1


def test_jsonl_skipped_verbs_and_voiding(ingest_to):
    ds = ingest_to("xapi", X / "statements.jsonl")
    assert ds.manifest["skipped_by_reason"] == {
        "verb attempted": 1,
        "verb experienced": 1,
        "verb voided": 1,  # line 13, the voiding statement
        "voided": 1,  # line 14, the statement it voids
    }
    m = ds.manifest["counts"]
    skipped = sum(ds.manifest["skipped_by_reason"].values())
    assert m["interactions"] + m["rejected"] + skipped == m["rows_read"]
    # carol's voided answer to q2 is not there
    assert [r["item_id"] for r in rows_of(ds, CAROL)] == [Q + "q5"]


def test_voiding_can_be_turned_off(ingest_to):
    ds = ingest_to("xapi", X / "statements.jsonl", options={"apply_voiding": "false"})
    assert [r["item_id"] for r in rows_of(ds, CAROL)] == [Q + "q2", Q + "q5"]
    assert "voided" not in ds.manifest["skipped_by_reason"]


def test_items_table_names(ingest_to):
    ds = ingest_to("xapi", X / "statements.jsonl")
    items = {r["item_id"]: r for r in ds.items().to_pylist()}
    assert items[Q + "q1"]["name"] == "Add 1/2 + 1/4"
    assert items[Q + "q1"]["interaction_type"] == "choice"
    assert items[Q + "q2"]["name"] == "Convertir 0,5"  # no English: first language given
    assert items[Q + "q1"]["concept_ids"] == ["fractions", "algebra"]
    concepts = set(ds.concepts().column("concept_id").to_pylist())
    assert concepts == {"fractions", "decimals", "algebra", "7"}


def test_options_verbs_threshold_extension(ingest_to):
    ds = ingest_to(
        "xapi",
        X / "statements.jsonl",
        options={"verbs": "answered", "score_threshold": "0.5"},
    )
    assert ds.manifest["skipped_by_reason"]["verb completed"] == 2
    assert [r["item_id"] for r in rows_of(ds, BOB)] == [Q + "q1", Q + "q2"]

    ds = ingest_to("xapi", X / "statements.jsonl", options={"score_threshold": "0.5"})
    bob = rows_of(ds, BOB)
    assert [r["correct"] for r in bob] == [1, 1, 1, 0]  # 0.6 >= 0.5


def test_full_iri_verb_option(ingest_to):
    ds = ingest_to(
        "xapi",
        X / "statements.jsonl",
        options={
            "verbs": "https://w3id.org/xapi/dod-isd/verbs/answered,completed",
            "concept_extension": "https://example.org/none",
        },
    )
    bob = rows_of(ds, BOB)
    assert [r["item_id"] for r in bob] == [Q + "q3", Q + "q4", Q + "q2"]
    assert all(r["concept_ids"] == [] for r in bob)
    # lines 1, 2, 4, 7, 11, 12, 14-17, 21: valid statements, no longer answers (16 and 17 are
    # not rejected: their result is only checked on answers)
    assert ds.manifest["skipped_by_reason"]["verb answered"] == 11
    assert ds.manifest["rejected_by_reason"] == {
        "actor without identifier": 1,
        "bad timestamp": 1,
        "invalid JSON": 1,
        "missing actor": 1,
        "missing object": 1,
    }


def test_gzip_copy_gives_the_same_rows(ingest_to):
    plain = ingest_to("xapi", X / "statements.jsonl").interactions()
    gz = ingest_to("xapi", X / "statements.jsonl.gz").interactions()
    assert plain.drop_columns(["source"]).equals(gz.drop_columns(["source"]))


def test_json_array_with_real_line_numbers(ingest_to):
    ds = ingest_to("xapi", X / "statements_array.json")
    frank = rows_of(ds, "school.example.edu/lms|frank")
    assert [(r["item_id"], r["correct"], r["timestamp"]) for r in frank] == [
        ("https://school.example.edu/items/8", 1, utc(2026, 2, 1, 7, 59)),  # raw 4 of max 4
        ("https://school.example.edu/items/7", 1, utc(2026, 2, 1, 8, 0)),  # 10:00+02:00
    ]
    assert frank[1]["elapsed_ms"] == 30000
    assert frank[0]["concept_ids"] == ["geometry"]
    rej = ds.rejected().to_pylist()
    assert [(r["line"], r["reason"]) for r in rej] == [(10, "missing object")]


def test_statement_result_document(ingest_to):
    ds = ingest_to("xapi", X / "statement_result.json")
    rows = ds.interactions().to_pylist()
    assert [(r["user_id"], r["correct"]) for r in rows] == [("https://openid.example.org/gina", 0)]
    assert ds.manifest["skipped_by_reason"] == {"verb launched": 1}
    assert ds.manifest["notes"]["xapi_unfollowed_more_links"] == [
        f"{X / 'statement_result.json'}: /xapi/statements?more=page2"
    ]


def test_directory_dedupes_the_gz_copy(ingest_to):
    ds = ingest_to("xapi", X)
    m = ds.manifest["counts"]
    assert m["input_files"] == 4  # README.md is not a statement file
    # the .gz copy repeats every statement id of the .jsonl: all 11 of its answers are
    # duplicates, plus the replay on line 7 of the .jsonl
    assert m["duplicates_dropped"] == 12
    assert m["interactions"] == 10 + 2 + 1
    assert m["learners"] == 5


def test_zip_input(ingest_to, tmp_path):
    z = tmp_path / "export.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(X / "statements_array.json", "export/statements_array.json")
        zf.write(X / "statements.jsonl.gz", "export/statements.jsonl.gz")
    ds = ingest_to("xapi", z)
    assert ds.manifest["counts"]["interactions"] == 2 + 10
    assert ds.manifest["counts"]["input_files"] == 2


def test_truncated_gzip(ingest_to, tmp_path):
    data = (X / "statements.jsonl.gz").read_bytes()
    p = tmp_path / "cut.jsonl.gz"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(IngestError, match="corrupt or truncated gzip"):
        ingest_to("xapi", p)


def test_broken_array_rejects_the_rest(ingest_to, tmp_path):
    good = {
        "id": "d0000000-0000-4000-8000-000000000001",
        "actor": {"mbox": "mailto:hal@example.org"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/answered"},
        "object": {"id": "urn:item:1"},
        "result": {"success": True},
        "timestamp": "2026-03-01T00:00:00Z",
    }
    p = tmp_path / "broken.json"
    p.write_text("[\n" + json.dumps(good) + ",\n" + '{"id": "x", "actor": \n' + "]\n")
    ds = ingest_to("xapi", p)
    assert ds.manifest["counts"]["interactions"] == 1
    rej = ds.rejected().to_pylist()
    assert [(r["line"], r["reason"]) for r in rej] == [(3, "invalid JSON")]
    assert "rest of the file" in rej[0]["detail"]


def test_not_utf8_names_the_line(ingest_to, tmp_path):
    lines = (X / "statements.jsonl").read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"intro-fractions", b"intro-fractions-\xe9t\xe9")
    p = tmp_path / "latin1.jsonl.gz"
    p.write_bytes(gzip.compress(b"\n".join(lines)))
    with pytest.raises(IngestError) as exc:
        ingest_to("xapi", p)
    assert exc.value.line == 3
    assert "utf-8" in str(exc.value)
    # with the right encoding it reads
    ds = ingest_to("xapi", p, encoding="latin-1")
    assert ds.manifest["counts"]["interactions"] == 10


def test_no_statement_files(ingest_to, tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(IngestError, match="no statement files"):
        ingest_to("xapi", tmp_path)


def test_field_helpers():
    assert parse_duration_ms("PT1M3.5S") == 63500
    assert parse_duration_ms("PT0.75S") == 750
    assert parse_duration_ms("P1DT2H") == 26 * 3_600_000
    assert parse_duration_ms("PT1,5S") == 1500
    for bad in ("1 minute", "P", "PT", "P1DT", "-PT1S", 30):
        with pytest.raises(ValueError):
            parse_duration_ms(bad)
    assert parse_timestamp_ms("1970-01-01T00:00:01.5Z") == (1500, False)
    assert parse_timestamp_ms("1970-01-01T01:00:00+01:00") == (0, False)
    assert parse_timestamp_ms("1970-01-01T00:00:00") == (0, True)
    assert verb_name("http://adlnet.gov/expapi/verbs/answered") == "answered"
    assert verb_name("http://example.org/verbs#Answered/") == "answered"
    assert actor_id({"mbox": "mailto:a@b.org", "account": {"name": "x"}}) == "a@b.org"
    assert actor_id({"account": {"homePage": "http://h.org/lms/", "name": "7"}}) == "h.org/lms|7"
    assert actor_id({"objectType": "Group", "member": []}) is None


def _answer(n: int) -> dict:
    return {
        "id": f"e0000000-0000-4000-8000-{n:012d}",
        "actor": {"mbox": "mailto:ivy@example.org"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/answered"},
        "object": {"id": f"urn:item:{n}"},
        "result": {"success": True},
        "timestamp": f"2026-03-01T00:00:0{n}Z",
    }


def test_deeply_nested_statement_is_a_rejected_record_not_a_recursion_error(ingest_to, tmp_path):
    deep = "[" * 100_000  # was a RecursionError traceback
    lines = tmp_path / "deep.jsonl"
    lines.write_text(
        json.dumps(_answer(1))
        + "\n"
        + deep
        + "\n"
        + '{"a": '
        + "[" * 150
        + "]" * 150
        + "}\n"  # parseable, but deeper than the limit
        + json.dumps(_answer(2))
        + "\n"
    )
    ds = ingest_to("xapi", lines)
    rej = ds.rejected().to_pylist()
    assert [(r["line"], r["reason"]) for r in rej] == [
        (2, "nested too deep"),
        (3, "nested too deep"),
    ]
    assert "nested deeper than 100 levels" in rej[0]["detail"]
    assert len(rej[0]["raw"]) == 2000
    assert ds.manifest["counts"]["interactions"] == 2
    # brackets inside strings do not count
    quoted = dict(_answer(3), extra={"note": "[" * 500})
    ok = tmp_path / "ok.jsonl"
    ok.write_text(json.dumps(quoted) + "\n")
    assert ingest_to("xapi", ok).manifest["counts"]["rejected"] == 0


def test_deeply_nested_document_is_a_rejected_record(ingest_to, tmp_path):
    arr = tmp_path / "deep_array.json"
    arr.write_text(
        "[\n"
        + json.dumps(_answer(1))
        + ",\n"
        + '{"x": '
        + "[" * 200
        + "]" * 200
        + "},\n"
        + json.dumps(_answer(2))
        + ",\n"
        + "[" * 100_000
        + "\n]\n"
    )
    ds = ingest_to("xapi", arr)
    rej = ds.rejected().to_pylist()
    assert [(r["line"], r["reason"]) for r in rej] == [
        (3, "nested too deep"),
        (5, "nested too deep"),
    ]
    assert "rest of the file" in rej[1]["detail"]
    assert ds.manifest["counts"]["interactions"] == 2
    only = tmp_path / "only.json"
    only.write_text("[" * 100_000)
    with pytest.raises(IngestError, match="nested too deep: 1"):
        ingest_to("xapi", only)
    result = tmp_path / "result.json"
    result.write_text('{"statements": [' + json.dumps(_answer(1)) + ", " + "[" * 100_000 + "]}")
    ds = ingest_to("xapi", result)
    assert ds.manifest["counts"]["interactions"] == 1
    assert ds.manifest["rejected_by_reason"] == {"nested too deep": 1}


def test_xapi_line_longer_than_the_limit_is_a_rejected_record(ingest_to, tmp_path):
    big = dict(_answer(2), extra="x" * 5000)
    p = tmp_path / "long.jsonl"
    p.write_text(json.dumps(_answer(1)) + "\n" + json.dumps(big) + "\n" + json.dumps(_answer(3)))
    ds = ingest_to("xapi", p, options={"max_line_bytes": "4096"})
    rej = ds.rejected().to_pylist()
    assert [(r["line"], r["reason"]) for r in rej] == [(2, "line too long")]
    assert "longer than the limit of 4,096 bytes" in rej[0]["detail"]
    assert ds.manifest["counts"]["interactions"] == 2
    doc = tmp_path / "long.json"
    doc.write_text(json.dumps([_answer(1), big]))
    ds = ingest_to("xapi", doc, options={"max_line_bytes": "4096"})
    assert ds.manifest["rejected_by_reason"] == {"line too long": 1}
    assert "statement is" in ds.rejected().to_pylist()[0]["detail"]
    assert ingest_to("xapi", p).manifest["counts"]["rejected"] == 0  # 1 MiB by default
