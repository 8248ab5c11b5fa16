"""The dataset writer: atomicity, determinism, partitioning, cleaning and bad input."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_loaders import (
    INTERACTIONS,
    Dataset,
    DatasetError,
    DatasetWriter,
    IngestError,
    UnknownFormatError,
    WriterOptions,
    ingest,
)
from data_loaders import writer as writer_module
from data_loaders.staging import remove_stale_staging
from tests.conftest import FIXTURES

B = FIXTURES / "benchmark"


def chunk(users, items, correct, lines, **extra) -> pa.Table:
    n = len(users)
    cols = {
        "user_id": pa.array(users, pa.string()),
        "item_id": pa.array(items, pa.string()),
        "correct": pa.array(np.asarray(correct, dtype=np.int8)),
        "_file": pa.array(np.zeros(n, dtype=np.int32)),
        "_line": pa.array(np.asarray(lines, dtype=np.int64)),
    }
    for k, v in extra.items():
        cols[k] = v if isinstance(v, pa.Array) else pa.array(v)
    return pa.table(cols)


def file_hashes(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*.parquet"))
    }


def test_writer_orders_numbers_and_partitions(tmp_path):
    out = tmp_path / "ds"
    with DatasetWriter(out, format_name="test", options=WriterOptions(buckets=4)) as w:
        w.register_file("input.csv")
        w.count_read(6)
        # rows arrive out of order; _order sets the order within each learner
        w.add_interactions(
            chunk(
                ["b", "a", "a"],
                ["i2", "i1", "i3"],
                [1, 0, 1],
                [2, 3, 4],
                _order=pa.array([5, 20, 10], pa.int64()),
            )
        )
        w.add_interactions(
            chunk(
                ["a", "b", "c"],
                ["i4", "i5", "i6"],
                [1, 1, 0],
                [5, 6, 7],
                _order=pa.array([1, 2, 3], pa.int64()),
            )
        )
    ds = Dataset.open(out)
    t = ds.interactions()
    assert t.schema.equals(INTERACTIONS, check_metadata=False)
    rows = sorted(t.to_pylist(), key=lambda r: (r["user_id"], r["seq"]))
    assert [(r["user_id"], r["item_id"], r["seq"]) for r in rows] == [
        ("a", "i4", 0),
        ("a", "i3", 1),
        ("a", "i1", 2),
        ("b", "i5", 0),
        ("b", "i2", 1),
        ("c", "i6", 0),
    ]
    assert {r["source"] for r in rows} == {"test"}
    # every learner lives in exactly the partition its CRC-32 names
    for part in ds.partitions:
        bucket = int(part.stem.split("-")[1])
        users = set(pq.read_table(part).column("user_id").to_pylist())
        assert all(zlib.crc32(u.encode()) % 4 == bucket for u in users)
    m = ds.manifest
    assert m["counts"]["interactions"] == 6 and m["counts"]["learners"] == 3
    assert m["bucket_function"].startswith("crc32")


def test_duplicates_rejected_with_line_of_original(tmp_path):
    out = tmp_path / "ds"
    with DatasetWriter(out, format_name="t") as w:
        w.register_file("in.csv")
        w.add_interactions(
            chunk(
                ["a", "a", "a"],
                ["x", "x", "y"],
                [1, 1, 0],
                [2, 3, 4],
                _dup=pa.array([7, 7, 8], pa.uint64()),
            )
        )
    ds = Dataset.open(out)
    assert ds.interactions().num_rows == 2
    rej = ds.rejected().to_pylist()
    assert rej == [
        {
            "file": "in.csv",
            "line": 3,
            "reason": "exact duplicate of an earlier row",
            "detail": "same as line 2",
            "raw": None,
        }
    ]
    assert ds.manifest["rejected_by_reason"] == {"exact duplicate of an earlier row": 1}


def test_keep_duplicates_option(tmp_path):
    out = tmp_path / "ds"
    with DatasetWriter(out, format_name="t", options=WriterOptions(drop_duplicates=False)) as w:
        w.register_file("in.csv")
        w.add_interactions(
            chunk(["a", "a"], ["x", "x"], [1, 1], [2, 3], _dup=pa.array([7, 7], pa.uint64()))
        )
    assert Dataset.open(out).interactions().num_rows == 2


def test_merge_unions_concepts_only_for_adjacent_rows(tmp_path):
    out = tmp_path / "ds"
    concepts = pa.array([["s1"], ["s2"], ["s1"], ["s3"]], pa.list_(pa.string()))
    with DatasetWriter(out, format_name="t") as w:
        w.register_file("in.csv")
        w.add_interactions(
            chunk(
                ["a"] * 4,
                ["p", "p", "q", "p"],
                [1, 1, 0, 1],
                [2, 3, 4, 5],
                concept_ids=concepts,
                _merge=pa.array([1, 1, 2, 1], pa.int64()),
            )
        )
    rows = Dataset.open(out).interactions().to_pylist()
    assert [(r["item_id"], r["concept_ids"], r["seq"]) for r in rows] == [
        ("p", ["s1", "s2"], 0),
        ("q", ["s1"], 1),
        ("p", ["s3"], 2),
    ]


def test_bad_loader_output_is_refused(tmp_path):
    with (
        pytest.raises(IngestError, match="other than 0 or 1"),
        DatasetWriter(tmp_path / "ds", format_name="t") as w,
    ):
        w.register_file("in.csv")
        w.add_interactions(chunk(["a"], ["x"], [2], [2]))
    assert not (tmp_path / "ds").exists()
    assert list(tmp_path.iterdir()) == []  # the temporary sibling is gone too


def test_atomic_failure_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "ds"

    def boom(directory, catalogue, pairs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(writer_module, "write_items", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        ingest("three-line", B / "three_line", out)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "ds"
    ingest("three-line", B / "three_line/assist2015_test.csv", out)
    before = file_hashes(out)
    with pytest.raises(IngestError, match="--overwrite"):
        ingest("three-line", B / "three_line", out)
    assert file_hashes(out) == before  # untouched
    ingest("three-line", B / "three_line", out, overwrite=True)
    assert Dataset.open(out).info()["learners"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_deterministic_bytes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    ingest("four-line", B / "four_line", a)
    ingest("four-line", B / "four_line", b)
    assert file_hashes(a) == file_hashes(b)
    assert len(file_hashes(a)) >= 4


def test_unknown_format_lists_known(tmp_path):
    with pytest.raises(UnknownFormatError, match="known formats: .*three-line"):
        ingest("csv-ish", B / "three_line", tmp_path / "ds")


def test_unknown_option_is_refused(tmp_path):
    with pytest.raises(IngestError, match="has no option 'colour'"):
        ingest("three-line", B / "three_line", tmp_path / "ds", options={"colour": "red"})


def test_empty_input(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(IngestError, match="no interactions"):
        ingest("three-line", empty, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_missing_input(tmp_path):
    with pytest.raises(IngestError, match="input not found"):
        ingest("three-line", tmp_path / "nope", tmp_path / "ds")


def test_non_utf8_names_file_and_line(tmp_path):
    f = tmp_path / "latin.csv"
    f.write_bytes(b"2\n1,2\n0,1\n1,caf\xe9\n")
    with pytest.raises(IngestError, match=r"latin\.csv, line 4: not valid utf-8"):
        ingest("three-line", f, tmp_path / "ds")
    # with the right encoding it reads, and the bad header is a rejected row, not a crash
    ingest("three-line", f, tmp_path / "ds", encoding="latin-1")
    ds = Dataset.open(tmp_path / "ds")
    assert ds.info()["interactions"] == 2


def test_corrupt_gzip(tmp_path):
    f = tmp_path / "x.csv.gz"
    f.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(IngestError, match=r"x.csv.gz(, line 1)?: corrupt or truncated gzip"):
        ingest("three-line", f, tmp_path / "ds")


def test_dataset_open_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        Dataset.open(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(DatasetError, match="no manifest.json"):
        Dataset.open(tmp_path / "half")


def _staging(parent: Path, name: str = "ds") -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def test_killed_writer_staging_is_removed_by_the_next_ingest(tmp_path):
    out = tmp_path / "ds"
    script = (
        "import sys, time\n"
        "from data_loaders import DatasetWriter\n"
        "w = DatasetWriter(__import__('pathlib').Path(sys.argv[1]), format_name='t')\n"
        "(w.tmp / '_spill' / 'partial.arrow').write_bytes(b'x' * 1000)\n"
        "print('staged', flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(out)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"staged"
        # while the writer lives, another run leaves its staging directory alone
        ingest("three-line", B / "three_line", tmp_path / "other")
        ingest("three-line", B / "three_line", out)
        leftovers = _staging(tmp_path)
        assert len(leftovers) == 2 and any(n.endswith(".lock") for n in leftovers)
        shutil.rmtree(out)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(_staging(tmp_path)) == 2  # SIGKILL: nothing cleaned up after it
    ingest("three-line", B / "three_line", out)
    assert _staging(tmp_path) == []
    assert Dataset.open(out).info()["learners"] == 7


def test_stale_staging_rule_by_lock_and_age(tmp_path):
    out = tmp_path / "ds"
    old, fresh = tmp_path / ".ds.tmp-0123456789ab", tmp_path / ".ds.tmp-abcdef012345"
    replaced = tmp_path / ".ds.old-0123456789ab"
    others = [
        tmp_path / ".ds.tmp-notmine",  # not the writer's pattern
        tmp_path / ".dsx.tmp-0123456789ab",  # another output's
        tmp_path / ".ds.tmp-x.tmp-0123456789ab",  # output 'ds.tmp-x''s
    ]
    for d in [old, fresh, replaced, *others]:
        (d / "_spill").mkdir(parents=True)
        (d / "_spill" / "00000.arrow").write_bytes(b"x")
    hours_ago = time.time() - 2 * 3600
    for d in [old, replaced, *others]:
        for p in [d / "_spill" / "00000.arrow", d / "_spill", d]:
            os.utime(p, (hours_ago, hours_ago))
    # a new writer removes its output's leftovers: no lock file and unchanged for an hour
    with DatasetWriter(out, format_name="t") as live:
        assert not old.exists() and not replaced.exists()
        assert fresh.is_dir()  # changed a moment ago
        assert all(d.is_dir() for d in others)
        # a live writer's staging (its lock held) is kept, however old
        for p in [live.tmp / "_spill", live.tmp]:
            os.utime(p, (hours_ago, hours_ago))
        assert remove_stale_staging(out, now=time.time() + 10 * 3600) == [fresh]
        assert live.tmp.is_dir() and all(d.is_dir() for d in others)
        live.register_file("in.csv")
        live.add_interactions(chunk(["a"], ["x"], [1], [2]))
    assert out.is_dir() and not live.tmp.exists()
    assert _staging(tmp_path) == [".ds.tmp-notmine", ".ds.tmp-x.tmp-0123456789ab"]


def test_a_dataset_moved_aside_by_a_killed_writer_is_put_back(tmp_path):
    """Killed between moving the old dataset aside and putting the new one in place: the
    next writer's clean-up restores the old dataset instead of deleting the only copy."""
    out = tmp_path / "ds"
    token = "0123456789ab"
    old = tmp_path / f".ds.old-{token}"
    old.mkdir()
    (old / "manifest.json").write_text("{}")
    tmp = tmp_path / f".ds.tmp-{token}"
    tmp.mkdir()
    (tmp / "manifest.json").write_text("{}")
    (tmp_path / f".ds.tmp-{token}.lock").write_text("")  # nobody holds its lock
    remove_stale_staging(out)
    assert (out / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
