"""EdNet loaders: KT1 answers (fast and line-by-line paths), KT2-KT4 actions, bad inputs."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import shutil
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from data_loaders import IngestError
from tests.conftest import FIXTURES, shared

ED = FIXTURES / "ednet"
QUESTIONS = ED / "contents" / "questions.csv"
ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------- helpers
def read_lines(path: Path) -> list[str]:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.decode("utf-8").splitlines()


def answer_key() -> dict[str, tuple[str, list[str], str]]:
    """question -> (correct_answer, tags, bundle), read with the csv module."""
    with QUESTIONS.open(newline="") as fh:
        return {
            r["question_id"]: (
                r["correct_answer"],
                [t for t in r["tags"].split(";") if t != "-1"],
                r["bundle_id"],
            )
            for r in csv.DictReader(fh)
        }


def expected_kt1(directory: Path) -> dict[str, list[tuple]]:
    """Every learner's answers computed independently: (item, correct, tags, ts, elapsed)."""
    key = answer_key()
    out: dict[str, list[tuple]] = {}
    for path in sorted(directory.iterdir()):
        if not path.name.startswith("u"):
            continue
        user = path.name.split(".")[0]
        rows = []
        for line, raw in enumerate(read_lines(path)[1:], start=2):
            ts, _sid, q, ans, el = raw.split(",")
            ok, tags, _ = key[q]
            rows.append((int(ts), line, (q, int(ans == ok), tags, int(ts), int(el))))
        out[user] = [r[2] for r in sorted(rows)]
    return out


def by_user(table: pa.Table) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    for r in table.sort_by([("user_id", "ascending"), ("seq", "ascending")]).to_pylist():
        ts = int(r["timestamp"].timestamp() * 1000) if r["timestamp"] is not None else None
        out.setdefault(r["user_id"], []).append(
            (r["item_id"], r["correct"], r["concept_ids"], ts, r["elapsed_ms"])
        )
    return out


def canonical(table: pa.Table) -> pa.Table:
    return table.sort_by([("user_id", "ascending"), ("seq", "ascending")])


# ---------------------------------------------------------------------- KT1
def test_kt1_rows_match_an_independent_computation(ingest_to):
    ds = ingest_to("ednet-kt1", ED / "kt1")
    info = ds.info()
    assert info["learners"] == 4
    assert info["interactions"] == 100 + 79 + 8 + 5 == 192
    assert info["rows_read"] == 192
    assert info["rejected"] == 0
    assert by_user(ds.interactions()) == expected_kt1(ED / "kt1")
    assert ds.manifest["notes"]["answer_key"].endswith("questions.csv")


def test_kt1_values_types_and_order(ingest_to):
    t = ingest_to("ednet-kt1", ED / "kt1").interactions()
    assert t.schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    assert t.column("source").to_pylist()[0] == "ednet-kt1"
    first = canonical(t).to_pylist()[0]  # u1's first row: q5012, answered b, key a
    assert (first["user_id"], first["item_id"], first["correct"]) == ("u1", "q5012", 0)
    assert first["elapsed_ms"] == 38000
    assert int(first["timestamp"].timestamp() * 1000) == 1565096190868
    assert first["concept_ids"] == ["74"]
    for user in set(t.column("user_id").to_pylist()):
        rows = canonical(t.filter(pc.equal(t.column("user_id"), user)))
        assert rows.column("seq").to_pylist() == list(range(rows.num_rows))
        stamps = rows.column("timestamp").to_pylist()
        assert stamps == sorted(stamps)
    # a bundle's questions share a timestamp: their order is the file order
    u1273 = [r for r in by_user(t)["u1273"] if r[3] == 1562917397991]
    assert [r[0] for r in u1273] == ["q6937", "q6939"]


def test_kt1_empty_answers_are_incorrect_and_untagged_questions_have_no_concepts(ingest_to):
    ds = ingest_to("ednet-kt1", ED / "kt1")
    rows = by_user(ds.interactions())["u1273"]
    empty = [r for r in rows if r[0] in ("q7762", "q7761")]  # the two rows with no answer
    assert len(empty) == 2 and [r[1] for r in empty] == [0, 0]
    assert ds.manifest["notes"]["empty_user_answer"]["rows"] == 2
    untagged = {q for q, (_, tags, _) in answer_key().items() if not tags}
    hits = [r for r in rows if r[0] in untagged]
    assert hits and all(r[2] == [] for r in hits)


def test_kt1_items_and_concepts_come_from_questions_csv(ingest_to):
    ds = ingest_to("ednet-kt1", ED / "kt1")
    key = answer_key()
    items = ds.items()
    assert items.num_rows == len(key)
    assert {"bundle_id", "part", "correct_answer", "explanation_id", "deployed_at"} <= set(
        items.column_names
    )
    assert items.schema.field("part").type == pa.int8()
    row = items.filter(pc.equal(items.column("item_id"), "q1")).to_pylist()[0]
    assert (row["bundle_id"], row["correct_answer"], row["part"]) == ("b1", "b", 1)
    assert row["concept_ids"] == ["1", "2", "179", "181"]
    concepts = ds.concepts()
    assert set(concepts.column("concept_id").to_pylist()) == {
        t for _, tags, _ in key.values() for t in tags
    }
    assert concepts.column("name").null_count == concepts.num_rows


def test_kt1_zip_with_gzip_member_equals_directory(ingest_to, tmp_path):
    archive = tmp_path / "kt1.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted((ED / "kt1").iterdir()):
            zf.write(p, f"KT1/{p.name}")
        zf.write(QUESTIONS, "contents/questions.csv")
    from_dir = ingest_to("ednet-kt1", ED / "kt1").interactions()
    from_zip = ingest_to("ednet-kt1", archive).interactions()
    assert from_zip.num_rows == 192
    assert canonical(from_zip).equals(canonical(from_dir))


def test_kt1_single_file_finds_contents_beside_its_directory(ingest_to):
    ds = ingest_to("ednet-kt1", ED / "kt1" / "u412749.csv.gz")
    assert ds.info()["interactions"] == 5
    assert set(ds.interactions().column("user_id").to_pylist()) == {"u412749"}


@pytest.mark.parametrize("directory", ["kt1", "bad/damaged"])
def test_kt1_fast_path_equals_line_by_line_path(ingest_to, directory):
    fast = ingest_to("ednet-kt1", ED / directory, concepts=QUESTIONS)
    slow = ingest_to("ednet-kt1", ED / directory, concepts=QUESTIONS, options={"fast": False})
    assert canonical(fast.interactions()).equals(canonical(slow.interactions()))
    assert fast.rejected().equals(slow.rejected())
    assert fast.manifest["counts"] == slow.manifest["counts"]
    assert fast.manifest["notes"] == slow.manifest["notes"]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("short", [(12, 5, "unknown question"), (37, 8, "wrong number of fields")]),
        ("cr", [(12, 5, "unknown question"), (20, 4, "unparsable row")]),
    ],
)
def test_kt1_fast_path_splits_a_batch_around_bad_files(ingest_to, tmp_path, damage, expected):
    """60 files parsed in batches; only files the one parse cannot vouch for go line by line.

    u12 parses cleanly but names an unknown question (rejected by the fast path itself).
    'short': u37 has a short row (the parse fails). 'cr': u20 has a lone CR (two rows on one
    line, for pyarrow) and u21 a blank line: together they keep the batch's row count right
    while every later line number would be off.
    """
    src = read_lines(ED / "kt1" / "u1.csv")
    data = tmp_path / "many"
    data.mkdir()
    for i in range(60):
        lines = [src[0]] + src[1 + i % 50 : 1 + i % 50 + 40]
        if i == 12:
            lines[4] = lines[4].replace(lines[4].split(",")[2], "q999999")
        if damage == "short" and i == 37:
            lines[7] = "1565096339668,4,q4829"
        if damage == "cr" and i == 20:
            lines[3] = lines[3] + "\r" + lines[4]
            del lines[4]
        if damage == "cr" and i == 21:
            lines.insert(6, "")
        (data / f"u{i}.csv").write_text("\n".join(lines) + ("\n" if i % 3 else ""))
    fast = ingest_to("ednet-kt1", data, concepts=QUESTIONS, options={"chunk_mb": 1})
    slow = ingest_to("ednet-kt1", data, concepts=QUESTIONS, options={"fast": False})
    lost = 3 if damage == "cr" else 2  # u20's line held two answers
    assert fast.info()["interactions"] == 60 * 40 - lost
    assert canonical(fast.interactions()).equals(canonical(slow.interactions()))
    rejected = fast.rejected().to_pylist()
    assert [(r["file"], r["line"], r["reason"]) for r in rejected] == [
        (str(data / f"u{i}.csv"), line, reason) for i, line, reason in expected
    ]
    assert rejected == slow.rejected().to_pylist()
    assert len(by_user(fast.interactions())["u21"]) == 40


def test_kt1_bad_rows_are_rejected_with_file_line_and_raw(ingest_to):
    ds = ingest_to("ednet-kt1", ED / "bad" / "damaged", concepts=QUESTIONS)
    rejected = ds.rejected().to_pylist()
    assert [(Path(r["file"]).name, r["line"], r["reason"]) for r in rejected] == [
        ("u1.csv", 5, "wrong number of fields"),
        ("u1.csv", 8, "unknown question"),
        ("u1.csv", 10, "bad timestamp"),
        ("u1.csv", 14, "missing timestamp"),
        ("u1.csv", 22, "wrong number of fields"),  # the truncated last line
    ]
    assert rejected[1]["raw"] == "1565096501746,7,q999999,a,35000"
    assert "q999999" in rejected[1]["detail"]
    assert rejected[4]["raw"] == "1565097095356,21,q35"
    info = ds.info()
    # u1: 20 data rows (one blank line is not a row), 5 rejected; u256948 8; u412749 5 (CRLF)
    assert info["rows_read"] == 20 + 8 + 5
    assert info["interactions"] == 15 + 8 + 5
    assert info["rejected_by_reason"] == {
        "bad timestamp": 1,
        "missing timestamp": 1,
        "unknown question": 1,
        "wrong number of fields": 2,
    }
    crlf = by_user(ds.interactions())["u412749"]
    assert crlf == by_user(ingest_to("ednet-kt1", ED / "kt1").interactions())["u412749"]
    assert ds.manifest["notes"]["empty_user_answer"]["rows"] == 1


def test_kt1_utf8_bom_and_crlf_are_accepted(ingest_to, tmp_path):
    lines = read_lines(ED / "kt1" / "u412749.csv.gz")
    d = tmp_path / "bom"
    d.mkdir()
    (d / "u412749.csv").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode())
    for fast in (True, False):
        ds = ingest_to("ednet-kt1", d, concepts=QUESTIONS, options={"fast": fast})
        plain = ingest_to("ednet-kt1", ED / "kt1").interactions()
        assert by_user(ds.interactions())["u412749"] == by_user(plain)["u412749"]


def test_kt1_without_questions_csv_explains_how_to_pass_it(ingest_to, tmp_path):
    data = tmp_path / "alone" / "KT1"
    shutil.copytree(ED / "kt1", data)
    with pytest.raises(IngestError, match="questions.csv") as err:
        ingest_to("ednet-kt1", data)
    assert "--concepts" in str(err.value)
    ds = ingest_to("ednet-kt1", data, concepts=QUESTIONS.parent)  # a directory works too
    assert ds.info()["interactions"] == 192


def test_kt1_missing_column_names_column_and_file(ingest_to):
    with pytest.raises(IngestError) as err:
        ingest_to("ednet-kt1", ED / "bad" / "missing_column", concepts=QUESTIONS)
    assert err.value.field == "user_answer"
    assert err.value.file.endswith("missing_column/u1.csv")


def test_kt1_questions_csv_without_answer_key_is_an_error(ingest_to, tmp_path):
    bad = tmp_path / "questions.csv"
    bad.write_text("question_id,bundle_id,tags\nq1,b1,1;2\n")
    with pytest.raises(IngestError, match="correct_answer"):
        ingest_to("ednet-kt1", ED / "kt1", concepts=bad)


def test_kt1_non_utf8_names_the_line_unless_the_encoding_is_given(ingest_to):
    with pytest.raises(IngestError, match="utf-8") as err:
        ingest_to("ednet-kt1", ED / "bad" / "not_utf8", concepts=QUESTIONS)
    assert err.value.line == 4
    ds = ingest_to("ednet-kt1", ED / "bad" / "not_utf8", concepts=QUESTIONS, encoding="latin-1")
    assert ds.info()["interactions"] == 5
    assert by_user(ds.interactions())["u1"][2][1] == 0  # 'é' is not the right answer


@pytest.mark.parametrize("fast", [True, False])
def test_kt1_non_utf8_in_an_unused_column_is_still_an_error(ingest_to, tmp_path, fast):
    lines = read_lines(ED / "kt1" / "u256948.csv")
    d = tmp_path / "sid"
    d.mkdir()
    data = "\n".join(lines).encode().split(b"\n")
    data[2] = data[2].replace(b",2,", b",\xe92,")  # line 3: solving_id
    (d / "u256948.csv").write_bytes(b"\n".join(data) + b"\n")
    with pytest.raises(IngestError, match="utf-8") as err:
        ingest_to("ednet-kt1", d, concepts=QUESTIONS, options={"fast": fast})
    assert err.value.line == 3


# ---------------------------------------------------------------------- KT2-KT4
def test_kt4_fixture_answers_events_and_accounting(ingest_to):
    ds = ingest_to("ednet-kt4", ED / "kt4")
    info = ds.info()
    rows = sum(len(read_lines(p)) - 1 for p in (ED / "kt4").iterdir())
    assert info["rows_read"] == rows == 150 + 34 + 5 + 43
    assert info["events"] == rows  # every action is kept, respond included
    assert info["rejected"] == 0
    assert info["interactions"] + sum(info["skipped_by_reason"].values()) == rows
    assert info["skipped_by_reason"]["response superseded by a later response"] == 9
    events = ds.events()
    assert set(pc.unique(events.column("action_type")).to_pylist()) >= {
        "enter",
        "respond",
        "submit",
        "quit",
        "pay",
        "play_audio",
    }
    pay = events.filter(pc.equal(events.column("action_type"), "pay")).to_pylist()[0]
    assert (pay["user_id"], pay["item_id"], pay["source"]) == ("u5", "p130", None)
    audio = events.filter(pc.equal(events.column("action_type"), "pause_audio"))
    assert audio.column("cursor_time").null_count == 0

    # u5's first bundle: five questions, changed answers, one submit
    key = answer_key()
    u5 = by_user(ds.interactions())["u5"]
    first = [r for r in u5 if r[3] == 1566532812904]
    # in the order of the final responses (lines 4, 6, 8, 9, 11)
    last_answer = {"q7242": "a", "q7244": "a", "q7245": "a", "q7246": "d", "q7243": "d"}
    assert [r[0] for r in first] == list(last_answer)
    for item, correct, tags, _ts, elapsed in first:
        assert correct == int(last_answer[item] == key[item][0])
        assert tags == key[item][1]
        assert elapsed == 1566532812904 - 1566532547478  # submit - enter of the bundle


def test_kt4_answers_match_kt1_for_the_same_learner(ingest_to):
    """KT4 u1 and KT1 u1 are the same learner: the first answers agree item by item."""
    kt4 = by_user(ingest_to("ednet-kt4", ED / "kt4").interactions())["u1"]
    kt1 = by_user(ingest_to("ednet-kt1", ED / "kt1").interactions())["u1"]
    assert len(kt4) == 21
    assert [(r[0], r[1], r[2]) for r in kt4] == [(r[0], r[1], r[2]) for r in kt1[:21]]


def _write_kt(tmp_path: Path, header: str, rows: list[str]) -> Path:
    d = tmp_path / "actions"
    d.mkdir()
    (d / "questions.csv").write_text(
        "question_id,bundle_id,explanation_id,correct_answer,part,tags,deployed_at\n"
        "q1,b1,e1,a,3,1;2,1558093217098\n"
        "q2,b1,e1,b,3,3,1558093217099\n"
        "q3,b2,e2,d,5,-1,1558093217100\n"
    )
    (d / "u7.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return d


KT4_HEADER = "timestamp,action_type,item_id,cursor_time,source,user_answer,platform"
KT4_ROWS = [
    "1000,enter,b1,,sprint,,mobile",  # 2
    "1100,respond,q1,,sprint,a,mobile",  # 3 superseded
    "1200,respond,q2,,sprint,b,mobile",  # 4 answer q2 (right)
    "1300,erase_choice,q1,,sprint,c,mobile",  # 5
    "1400,respond,q1,,sprint,c,mobile",  # 6 answer q1 (wrong): the last response wins
    "1500,submit,b1,,sprint,,mobile",  # 7
    "1600,enter,e1,,sprint,,mobile",  # 8
    "1700,quit,e1,,sprint,,mobile",  # 9
    "2000,enter,b2,,sprint,,mobile",  # 10
    "2100,respond,q3,,sprint,a,mobile",  # 11 dropped: the bundle is entered again
    "2500,enter,b2,,sprint,,mobile",  # 12
    "2600,respond,q3,,sprint,d,mobile",  # 13 answer q3 (right)
    "2900,submit,b2,,sprint,,mobile",  # 14
    "3000,enter,b1,,sprint,,mobile",  # 15
    "3100,respond,q1,,sprint,a,mobile",  # 16 never submitted
]


def test_kt4_last_response_wins_at_the_submit(ingest_to, tmp_path):
    ds = ingest_to("ednet-kt4", _write_kt(tmp_path, KT4_HEADER, KT4_ROWS))
    rows = by_user(ds.interactions())["u7"]
    assert rows == [  # one submit's answers in the order of their final responses
        ("q2", 1, ["3"], 1500, 500),
        ("q1", 0, ["1", "2"], 1500, 500),
        ("q3", 1, [], 2900, 400),
    ]
    skipped = ds.info()["skipped_by_reason"]
    assert skipped["response superseded by a later response"] == 1
    assert skipped["response never submitted"] == 2
    assert skipped["erase_choice action (kept in events)"] == 1
    assert ds.info()["rows_read"] == len(KT4_ROWS) == 3 + sum(skipped.values())
    events = ds.events()
    assert events.num_rows == len(KT4_ROWS)
    assert events.column("action_type").to_pylist()[:3] == ["enter", "respond", "respond"]
    assert events.column("user_answer").to_pylist()[1:3] == ["a", "b"]


def test_kt4_rows_out_of_time_order_are_processed_in_time_order(ingest_to, tmp_path):
    rows = list(KT4_ROWS[:6])
    rows[1], rows[4] = rows[4], rows[1]  # the later response written first
    ds = ingest_to("ednet-kt4", _write_kt(tmp_path, KT4_HEADER, rows))
    assert by_user(ds.interactions())["u7"][0][:2] == ("q1", 0)


def test_kt2_files_have_no_cursor_time(ingest_to, tmp_path):
    header = "timestamp,action_type,item_id,source,user_answer,platform"
    rows = [",".join(r.split(",")[:3] + r.split(",")[4:]) for r in KT4_ROWS]
    d = _write_kt(tmp_path, header, rows)
    ds = ingest_to("ednet-kt2", d)
    assert ds.info()["interactions"] == 3
    assert ds.events().column("cursor_time").null_count == len(rows)
    assert ingest_to("ednet-kt3", d).info()["interactions"] == 3
    with pytest.raises(IngestError) as err:
        ingest_to("ednet-kt4", d)
    assert err.value.field == "cursor_time"


def test_kt4_bad_rows_are_rejected_and_the_rest_kept(ingest_to):
    ds = ingest_to("ednet-kt4", ED / "bad" / "kt4", concepts=QUESTIONS)
    rejected = ds.rejected().to_pylist()
    assert [(r["line"], r["reason"]) for r in rejected] == [
        (3, "unknown question"),
        (6, "bad timestamp"),
        (10, "wrong number of fields"),
    ]
    info = ds.info()
    assert info["interactions"] == 1  # q266; q377 is never submitted (the file ends)
    assert info["rows_read"] == 12
    assert info["events"] == 10  # the unknown-question response is still an action
    assert info["rows_read"] == 1 + 3 + sum(info["skipped_by_reason"].values())


def test_kt4_without_bundle_column_is_an_error(ingest_to, tmp_path):
    d = _write_kt(tmp_path, KT4_HEADER, KT4_ROWS)
    (d / "questions.csv").write_text("question_id,correct_answer,tags\nq1,a,1\n")
    with pytest.raises(IngestError, match="bundle_id"):
        ingest_to("ednet-kt4", d)


# ---------------------------------------------------------------------- benchmark script
def test_benchmark_generator_makes_kt1_files(ingest_to, tmp_path):
    spec = importlib.util.spec_from_file_location(
        "ingest_speed", ROOT / "benchmarks" / "ingest_speed.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    data = bench.generate(tmp_path / "gen", rows=3000, users=40, seed=1)
    assert len(list(data.glob("u*.csv"))) == 40
    info = ingest_to("ednet-kt1", data).info()
    assert (info["interactions"], info["learners"], info["rejected"]) == (3000, 40, 0)
    assert 0.6 < info["correct_rate"] < 0.8
    assert bench.phase_baseline(data)["rows"] == 3000


# ---------------------------------------------------------------------- shared data
@pytest.mark.slow
def test_shared_kt1_u1_with_contents_questions(ingest_to):
    u1 = shared("ednet/KT1_raw/u1.csv")
    questions = shared("ednet/contents/questions.csv.gz")
    info = ingest_to("ednet-kt1", u1, concepts=questions).info()
    assert info["interactions"] == 1082
    assert info["correct_rate"] == 0.6959
    assert info["items"] == 13169
