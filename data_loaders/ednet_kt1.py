"""EdNet KT1: per-learner answer logs (``timestamp, solving_id, question_id, user_answer,
elapsed_time``).

The rules every EdNet format shares (learner ids, questions.csv, correctness, rejected rows)
are in :mod:`.ednet`. KT1 in particular:

* One interaction per row: ``item_id`` = question_id, ``timestamp`` = timestamp (ms),
  ``elapsed_ms`` = elapsed_time; ``solving_id`` is not kept. A learner's answers are ordered
  by timestamp, ties (the questions of one bundle share it) by line. Text values are taken
  as they are, not trimmed (a question id with spaces is an unknown question).
* Speed: files whose header is exactly the KT1 header are read whole, their header lines cut
  off, and ~``chunk_mb`` MB of them joined and parsed with one ``pyarrow.csv.read_csv`` call.
  Per-file row counts come from counting newlines; the parse is trusted only when its row
  count equals the newline count and every ``\\r`` is part of ``\\r\\n`` (then row *i* is
  line *i*: a row never spans less than one line). Otherwise (a bad row, a blank line,
  non-UTF-8 bytes, a non-integer field) the batch is split in halves and each half retried,
  down to single files, which are parsed line by line with exact line numbers (the same path
  as ``-o fast=false`` and as files with another header). The whole batch must also be
  valid UTF-8 (pyarrow checks only the columns it converts). Learner ids are a dictionary
  array, so per-file work is a few bytes operations. Files are read one group ahead on a
  thread (reads and gunzip overlap the parsing), in the writer's bucket order (files are
  still registered, numbered and listed in path order), so each parsed batch reaches the
  writer as a few single-bucket slices that it appends without re-sorting. Memory is
  bounded by ``chunk_mb``, not by the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .base import Option
from .ednet import EdNetLoader
from .ednet_files import BOM, count_lines, is_utf8, line_aligned, parse_ints, raw_lines, valid_utf8
from .inputs import check_utf8
from .partitions import bucket_of

KT1_COLUMNS = ("timestamp", "solving_id", "question_id", "user_answer", "elapsed_time")
KT1_HEADER = ",".join(KT1_COLUMNS).encode()
KT1_REQUIRED = ("timestamp", "question_id", "user_answer")
_KT1_USED = ("timestamp", "question_id", "user_answer", "elapsed_time")


@dataclass
class _Piece:
    """One learner file of a batch."""

    file: int  # writer's file index
    name: str
    stem: str
    bucket: int  # the writer's partition of this learner
    data: bytes
    start: int  # offset of the first data line
    rows: int


class EdNetKT1Loader(EdNetLoader):
    name = "ednet-kt1"
    summary = "EdNet KT1 per-learner answer files u<id>.csv + EdNet-Contents questions.csv"
    options = (
        Option("fast", bool, True, "parse many files per pyarrow call (false: file by file)"),
        Option("chunk_mb", int, 32, "MB of CSV text parsed per batch on the fast path"),
    )

    def load(self) -> None:
        self.q, inputs = self._setup()
        self._empty = 0
        self._slow: list[tuple[_Piece, pa.Table, np.ndarray]] = []
        self._slow_rows = 0
        fast = bool(self.opts.get("fast", True))
        limit = max(1, int(self.opts.get("chunk_mb", 32))) << 20
        transcode = not is_utf8(self.ctx.encoding)
        files = inputs.files
        # register in path order (file indices, manifest), read in the writer's bucket order
        # so that each chunk reaches the writer as a few single-bucket slices
        indices = [self.writer.register_file(f.name, f.size) for f in files]
        buckets = bucket_of([f.stem for f in files], self.writer.options.buckets)
        try:
            batch: list[_Piece] = []
            batch_bytes = 0
            advanced = 0
            order = np.argsort(buckets, kind="stable").tolist()
            for i, data in inputs.read_many(order):
                f, idx, bucket = files[i], indices[i], int(buckets[i])
                size = f.size
                if transcode:
                    data = check_utf8(data, f.name, self.ctx.encoding)
                nl = data.find(b"\n")
                head = data[: nl if nl >= 0 else len(data)]
                if head.startswith(BOM):
                    head = head[3:]
                if not fast or head.rstrip(b"\r") != KT1_HEADER:
                    self._slow_piece(_Piece(idx, f.name, f.stem, bucket, data, 0, 0))
                    continue
                start = nl + 1 if nl >= 0 else len(data)
                rows = count_lines(data, start)
                if rows:
                    batch.append(_Piece(idx, f.name, f.stem, bucket, data, start, rows))
                    batch_bytes += len(data) - start
                advanced += size
                if batch_bytes >= limit:
                    self._fast(batch)
                    batch, batch_bytes = [], 0
                    self.writer.progress.advance(advanced)
                    advanced = 0
            if batch:
                self._fast(batch)
            self._flush_slow()
            self.writer.progress.advance(advanced)
        finally:
            inputs.close()
        self._note_empty_answers(self._empty)

    # -- fast path: many files, one parse --------------------------------------------------
    def _fast(self, pieces: list[_Piece]) -> None:
        parts: list[Any] = []
        for p in pieces:
            parts.append(memoryview(p.data)[p.start :])
            if p.data[-1:] != b"\n":
                parts.append(b"\n")
        buf = b"".join(parts)
        del parts
        expected = sum(p.rows for p in pieces)
        table = None
        # pyarrow checks UTF-8 only in the columns it converts (not solving_id): check it all
        if line_aligned(buf) and (buf.isascii() or valid_utf8(buf)):
            try:
                table = pacsv.read_csv(
                    pa.py_buffer(buf),
                    read_options=pacsv.ReadOptions(
                        column_names=list(KT1_COLUMNS), block_size=4 << 20
                    ),
                    convert_options=pacsv.ConvertOptions(
                        column_types={
                            "timestamp": pa.int64(),
                            "question_id": pa.string(),
                            "user_answer": pa.string(),
                            "elapsed_time": pa.int64(),
                        },
                        include_columns=list(_KT1_USED),
                        strings_can_be_null=False,
                    ),
                )
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                table = None
        del buf
        if table is None or table.num_rows != expected:
            if len(pieces) == 1:
                self._slow_piece(pieces[0])
            else:
                mid = len(pieces) // 2
                self._fast(pieces[:mid])
                self._fast(pieces[mid:])
            return
        self.writer.count_read(expected)
        counts = np.fromiter((p.rows for p in pieces), dtype=np.int64, count=len(pieces))
        starts = np.cumsum(counts) - counts
        lines = np.arange(expected, dtype=np.int64) - np.repeat(starts, counts) + 2
        self._emit(pieces, counts, table, lines)

    # -- slow path: one file, exact lines ---------------------------------------------------
    def _slow_piece(self, p: _Piece) -> None:
        read = self._parse(p.data, p.name, "utf-8", KT1_REQUIRED, "an EdNet KT1 file")
        if read is None:
            return
        parsed, ts, bad_ts = read
        t, bad = parsed.table, list(parsed.bad)
        n = t.num_rows
        if "elapsed_time" in t.column_names:
            el, bad_el = parse_ints(t.column("elapsed_time"))
        else:
            el, bad_el = pa.nulls(n, pa.int64()), np.zeros(n, dtype=bool)
        drop = bad_ts | bad_el
        if drop.any():
            rows = np.flatnonzero(drop)
            raws = raw_lines(parsed.data, parsed.lines[rows].tolist())
            for r, raw in zip(rows, raws, strict=True):
                col = "timestamp" if bad_ts[r] else "elapsed_time"
                value = t.column(col)[int(r)].as_py()
                bad.append((int(parsed.lines[r]), f"bad {col}", raw, f"{col} {value!r}"))
        self._reject_rows(p.file, bad)
        keep = pa.array(~drop)
        table = pa.table(
            {
                "timestamp": ts.filter(keep),
                # not trimmed: the same values as the fast path's pyarrow parse
                "question_id": t.column("question_id").filter(keep),
                "user_answer": t.column("user_answer").filter(keep),
                "elapsed_time": el.filter(keep),
            }
        )
        lines = parsed.lines[~drop]
        if table.num_rows == 0:
            return
        self._slow.append((p, table, lines))
        self._slow_rows += table.num_rows
        if self._slow_rows >= 256 * 1024:
            self._flush_slow()

    def _flush_slow(self) -> None:
        if not self._slow:
            return
        pieces = [s[0] for s in self._slow]
        counts = np.array([s[1].num_rows for s in self._slow], dtype=np.int64)
        table = pa.concat_tables([s[1] for s in self._slow])
        lines = np.concatenate([s[2] for s in self._slow])
        self._slow, self._slow_rows = [], 0
        self._emit(pieces, counts, table, lines)

    # -- common: canonical rows ----------------------------------------------------------
    def _emit(
        self,
        pieces: list[_Piece],
        counts: np.ndarray,
        table: pa.Table,
        lines: np.ndarray,
    ) -> None:
        k = len(pieces)
        owner = np.repeat(np.arange(k, dtype=np.int32), counts)
        files = np.fromiter((p.file for p in pieces), dtype=np.int32, count=k)[owner]
        ts = table.column("timestamp")
        qid = table.column("question_id")
        qidx = self.q.index(qid)
        bad_ts = ts.null_count > 0
        unknown = qidx.null_count > 0
        if bad_ts or unknown:
            no_ts = pc.is_null(ts).to_numpy(zero_copy_only=False)
            no_q = pc.is_null(qidx).to_numpy(zero_copy_only=False)
            drop = no_ts | no_q
            rows = np.flatnonzero(drop)
            reasons = ["missing timestamp" if no_ts[r] else "unknown question" for r in rows]
            qvals = qid.take(pa.array(rows)).to_pylist()
            details = [
                "timestamp is empty" if no_ts[r] else f"question_id {q!r} is not in questions.csv"
                for r, q in zip(rows, qvals, strict=True)
            ]
            raws: list[str] = []
            for i in np.unique(owner[rows]):
                sel = rows[owner[rows] == i]
                raws.extend(raw_lines(pieces[i].data, lines[sel].tolist()))
            # rows are grouped by piece in order, so raws line up with rows
            self.writer.reject_many(files[rows], lines[rows], reasons, raws, details)
            keep = ~drop
            mask = pa.array(keep)
            table = table.filter(mask)
            qidx = qidx.filter(mask)
            owner, files, lines = owner[keep], files[keep], lines[keep]
            if table.num_rows == 0:
                return
            ts = table.column("timestamp")
            qid = table.column("question_id")
        answers = table.column("user_answer")
        key = self.q.correct_answer.take(qidx)
        correct = pc.cast(pc.fill_null(pc.equal(answers, key), False), pa.int8())
        self._empty += int(pc.sum(pc.cast(pc.equal(answers, ""), pa.int64())).as_py() or 0)
        self._empty += answers.null_count
        users = pa.DictionaryArray.from_arrays(
            pa.array(owner), pa.array([p.stem for p in pieces], pa.string())
        )
        chunk = pa.table(
            {
                "user_id": users,
                "item_id": qid,
                "concept_ids": self.q.tags.take(qidx),
                "correct": correct,
                "timestamp": ts,
                "elapsed_ms": table.column("elapsed_time"),
                "_file": pa.array(files),
                "_line": pa.array(lines),
                "_order": ts,
            }
        )
        # one slice per run of rows bound for one writer bucket (pieces come bucket-sorted)
        row_bucket = np.fromiter((p.bucket for p in pieces), dtype=np.int64, count=k)[owner]
        cuts = np.flatnonzero(row_bucket[1:] != row_bucket[:-1]) + 1
        bounds = [0, *cuts.tolist(), len(row_bucket)]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            self.writer.add_interactions(chunk.slice(a, b - a))
