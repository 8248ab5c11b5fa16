"""Loaders for the raw ASSISTments CSV releases (2009-10, 2012-13, 2015, 2017).

Each loader reads the CSV as the ASSISTments data pages publish it (a single file, gzipped or
not, or a directory / zip archive of such files), block by block with ``pyarrow.csv`` so that
the multi-gigabyte releases never sit in memory whole. Every field is read as a string and
converted here, so that a bad value rejects its row (``rejected.parquet``, with the reason, the
line number and the raw text) instead of stopping the ingest.

Formats
-------

``assistments-2009``
    ``skill_builder_data.csv`` (original or "corrected" release). Required columns:
    ``order_id, user_id, problem_id, correct``. Item = ``problem_id``, concept = ``skill_id``
    (name from ``skill_name``; an empty ``skill_id`` gives no concept), answers ordered by
    ``order_id``. A multi-skill problem is listed once per skill with the same ``order_id``:
    those rows are merged into one interaction with all the skills (``--keep-expanded`` keeps
    them apart). An exact duplicate row shares its original's ``order_id``, so with merging on
    it is folded into the original even under ``--keep-duplicates``: pass ``--keep-expanded``
    as well to keep it as a row of its own. ``elapsed_ms`` from ``ms_first_response``,
    ``attempt`` from ``attempt_count``. The raw file is latin-1 in some copies: pass
    ``--encoding latin-1``.

``assistments-2012``
    ``2012-2013-data-with-predictions-4-final.csv``. Required columns: ``problem_log_id,
    user_id, problem_id, correct, start_time``. Item = ``problem_id``, concept = ``skill_id``
    (name from ``skill``). ``timestamp`` from ``start_time`` (``2012-09-09 20:02:37.0`` or ISO
    8601; without a zone it is taken as UTC, with one it is converted); answers ordered by
    ``start_time``, equal start times by ``problem_log_id`` (exactly for up to 64 answers of a
    learner with one start time in one 32 MB read block of the file; beyond that, and across
    blocks, equal start times keep file order). ``elapsed_ms`` from ``ms_first_response``,
    ``attempt`` from ``attempt_count``.

``assistments-2015``
    ``2015_100_skill_builders_main_problems.csv``: ``user_id, log_id, sequence_id, correct``
    (all required). The skill builder (``sequence_id``) is both the item and the concept;
    answers ordered by ``log_id``. The file has main problems only, so no ``original_only``.

``assistments-2017``
    ``anonymized_full_release_competition_dataset.csv``. Required columns: ``studentId,
    problemId, correct, startTime``. Item = ``problemId``, concept = ``skill`` (the skill name
    is also its id; ``noskill`` and empty mean no concept). ``timestamp`` =
    ``startTime`` (unix seconds) x 1000, answers ordered by ``startTime`` then file line;
    ``elapsed_ms`` = ``timeTaken`` (seconds) x 1000, ``attempt`` from ``attemptCount``.

Cleaning (every format)
-----------------------

* Options (``-o name=value``):

  - ``original_only`` (default ``true``; 2009, 2012, 2017): keep main problems only. Rows with
    ``original=0`` are scaffolding sub-questions, read but not counted as answers: they appear
    in the manifest's ``skipped_by_reason`` as ``scaffolding (original=0)``. ``false`` keeps
    them as interactions of their own.
  - ``binarize`` (default ``false``; 2012, 2015): these releases give partial credit for some
    answers (``correct`` such as 0.25 or 0.8). By default such rows are rejected (``correct
    not 0 or 1``); ``true`` maps ``correct >= 1`` to 1 and anything else to 0 (the count is
    in the manifest's notes).

* Exact duplicate rows (every field equal, same learner) are kept once; the others go to
  ``rejected.parquet`` as ``exact duplicate of an earlier row`` (``--keep-duplicates`` keeps
  them).
* Rejected with a reason: rows with the wrong number of fields (including a truncated last
  line), an empty learner or item id, ``correct`` not 0/1, an order key that is not a number
  (``bad order_id``, ``bad log_id``, ``bad problem_log_id``) and an unreadable start time
  (``bad timestamp``). A missing required column stops the ingest with an error naming the
  file and the column. Input that is not valid in the given encoding (default UTF-8) stops it
  with an error naming the file and the line.
* ``elapsed_ms`` / ``attempt`` values that are negative or not numbers (the 2009 release has
  negative ``ms_first_response`` values) are set to null, not rejected: the answer itself is
  fine. Their count is in the manifest's notes.
* Blank lines are ignored. Line numbers count CSV records (the header is line 1); they are the
  physical line numbers unless a quoted field spans several lines.

The parsing of a batch's columns (numbers, dates, row hashes, rejected rows) is in
:mod:`.assistments_columns`; the streaming UTF-8 check is :class:`.inputs.Utf8Stream`.
"""

from __future__ import annotations

import csv
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .assistments_columns import (
    RAW_LIMIT,
    Batch,
    int_key,
    np_bool,
    number_rows,
    parse_datetime_ms,
    parse_float,
    parse_int,
    row_hash,
    single_concepts,
)
from .base import Loader, Option
from .errors import IngestError, require_columns
from .inputs import InputFile, Utf8Stream, list_files

#: Bytes of CSV parsed per batch (one batch in memory at a time).
BLOCK_SIZE = 32 << 20
_PATTERNS = ("*.csv", "*.csv.gz", "*.txt", "*.txt.gz", "*.gz")
_SCAFFOLDING = "scaffolding (original=0)"

#: ``-o original_only=...`` (2009, 2012, 2017) and ``-o binarize=...`` (2012, 2015): see above
ORIGINAL_ONLY = Option(
    "original_only",
    bool,
    True,
    "keep main problems only; scaffolding rows (original=0) are counted as skipped",
)
BINARIZE = Option(
    "binarize",
    bool,
    False,
    "map partial credit to 0/1 (correct >= 1 -> 1, else 0) instead of rejecting it",
)


# ---------------------------------------------------------------------- the loaders
class _AssistmentsLoader(Loader):
    """Shared machinery: streaming CSV reading, validation and the canonical chunk."""

    user_col: ClassVar[str] = "user_id"
    item_col: ClassVar[str] = "problem_id"
    correct_col: ClassVar[str] = "correct"
    required: ClassVar[tuple[str, ...]] = ()
    concept_col: ClassVar[str | None] = None
    concept_name_col: ClassVar[str | None] = None
    #: concept values that mean "no concept"
    no_concept: ClassVar[tuple[str, ...]] = ("",)
    original_col: ClassVar[str | None] = None
    elapsed_col: ClassVar[str | None] = None
    elapsed_unit_ms: ClassVar[float] = 1.0
    attempt_col: ClassVar[str | None] = None
    #: the concept id is itself a name (2017's ``skill``)
    concept_is_name: ClassVar[bool] = False
    order_note: ClassVar[str] = ""

    def load(self) -> None:
        files = list_files(self.ctx.input, _PATTERNS)
        if not files:
            raise IngestError("no CSV files found", file=str(self.ctx.input))
        self.start_progress(files)
        self._seen_concepts: set[tuple[str, str | None]] = set()
        self._elapsed_nulled = 0
        self._attempt_nulled = 0
        self._binarized = 0
        for f in files:
            self._load_file(f)
        self.writer.note("order", self.order_note)
        if self._elapsed_nulled:
            self.writer.note(
                "elapsed_ms_nulled",
                f"{self._elapsed_nulled} rows: {self.elapsed_col} negative or not a number",
            )
        if self._attempt_nulled:
            self.writer.note(
                "attempt_nulled",
                f"{self._attempt_nulled} rows: {self.attempt_col} not a count 0..32767",
            )
        if self.opts.get("binarize"):
            self.writer.note(
                "correct_binarized", f"{self._binarized} rows with partial credit mapped to 0/1"
            )

    # -- reading --------------------------------------------------------------------
    def _load_file(self, f: InputFile) -> None:
        idx = self.register(f)
        try:
            size = f.size()
        except OSError:
            size = 0
        stream = Utf8Stream(f.open_binary(), f.name, self.ctx.encoding)
        reported = 0
        try:
            header = stream.peek_line()
            if not header.strip():
                return
            names = self._header(header, f)
            bad_rows: list[tuple[int | None, int, int, str]] = []

            def on_invalid(row: Any) -> str:
                bad_rows.append((row.number, row.expected_columns, row.actual_columns, row.text))
                return "skip"

            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(
                    use_threads=False, block_size=BLOCK_SIZE, column_names=names, skip_rows=1
                ),
                parse_options=pacsv.ParseOptions(
                    newlines_in_values=True,
                    ignore_empty_lines=False,
                    invalid_row_handler=on_invalid,
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types={n: pa.string() for n in names},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
            next_line = 2
            pending: list[int] = []  # line numbers of invalid rows not yet passed
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                pending.extend(b[0] for b in bad_rows if b[0] is not None)
                pending.sort()
                self._reject_invalid(bad_rows, idx)
                bad_rows.clear()
                lines, next_line, pending = number_rows(batch.num_rows, next_line, pending)
                self._batch(names, batch, lines, idx)
                pos = min(stream.position(), size) if size else 0
                if pos > reported:
                    self.writer.progress.advance(pos - reported)
                    reported = pos
            self._reject_invalid(bad_rows, idx)
        except pa.ArrowInvalid as exc:
            raise IngestError(f"cannot read as CSV: {exc}", file=f.name) from exc
        finally:
            stream.close()
        if size > reported:
            self.writer.progress.advance(size - reported)

    def _header(self, header: bytes, f: InputFile) -> list[str]:
        row = next(csv.reader([header.decode("utf-8")]), [])
        names: list[str] = []
        seen: dict[str, int] = {}
        for raw in row:
            name = raw.strip()
            if name in seen:  # duplicate column names get a suffix, as pandas does
                seen[name] += 1
                name = f"{name}.{seen[name]}"
            else:
                seen[name] = 0
            names.append(name)
        lower = {n.lower(): n for n in reversed(names)}
        self._cols: dict[str, str | None] = {}
        wanted = {
            self.user_col,
            self.item_col,
            self.correct_col,
            *self.required,
            *(
                c
                for c in (
                    self.concept_col,
                    self.concept_name_col,
                    self.original_col,
                    self.elapsed_col,
                    self.attempt_col,
                )
                if c
            ),
        }
        for col in wanted:
            self._cols[col] = col if col in names else lower.get(col.lower())
        found = [c for c, name in self._cols.items() if name is not None]
        require_columns(found, self.required, file=f.name, header=",".join(names)[:500])
        return names

    def _c(self, col: str) -> str:
        """The header name of a required column."""
        name = self._cols.get(col)
        assert name is not None, col
        return name

    def _reject_invalid(self, bad_rows: list[tuple[int | None, int, int, str]], idx: int) -> None:
        if not bad_rows:
            return
        self.writer.count_read(len(bad_rows))
        self.writer.reject_many(
            np.full(len(bad_rows), idx, dtype=np.int32),
            [b[0] for b in bad_rows],
            "wrong number of fields",
            [b[3][:RAW_LIMIT] for b in bad_rows],
            [f"expected {b[1]} fields, got {b[2]}" for b in bad_rows],
        )

    # -- one batch ------------------------------------------------------------------
    def _batch(self, names: list[str], batch: pa.RecordBatch, lines: np.ndarray, idx: int) -> None:
        columns = [batch.column(i) for i in range(batch.num_columns)]
        if not len(lines):
            return
        # blank lines parse as rows of empty fields: not input rows
        blank = np_bool(pc.equal(columns[0], ""))
        if blank.any():
            for col in columns[1:]:
                blank &= np_bool(pc.equal(col, ""))
            if blank.any():
                keep = pa.array(~blank)
                columns = [c.filter(keep) for c in columns]
                lines = lines[~blank]
        b = Batch(names, columns, lines)
        if b.n == 0:
            return
        self.writer.count_read(b.n)
        col = self._cols

        orig = col.get(self.original_col) if self.original_col else None
        if orig is not None and self.opts.get("original_only", False):
            scaffolding = np_bool(pc.is_in(b.trimmed(orig), pa.array(["0", "0.0"])))
            sel = b.alive & scaffolding
            self.writer.skip(_SCAFFOLDING, int(sel.sum()))
            b.alive &= ~sel

        user = b.trimmed(self._c(self.user_col))
        item = b.trimmed(self._c(self.item_col))
        b.reject(np_bool(pc.equal(user, "")), f"empty {self.user_col}")
        b.reject(np_bool(pc.equal(item, "")), f"empty {self.item_col}")

        correct_name = self._c(self.correct_col)
        cval, cok = parse_float(b.trimmed(correct_name))
        exact = cok & ((cval == 0.0) | (cval == 1.0))
        binarize = bool(self.opts.get("binarize", False))
        b.reject(~cok if binarize else ~exact, "correct not 0 or 1", b.value_detail(correct_name))
        correct = (cval >= 1.0).astype(np.int8)

        extra = self._keys(b)

        keep = b.alive
        if binarize:
            self._binarized += int((keep & ~exact).sum())
        b.flush_rejected(self.writer, idx)
        if not keep.any():
            return
        mask = pa.array(keep)
        m = int(keep.sum())
        chunk: dict[str, Any] = {
            "user_id": user.filter(mask),
            "item_id": item.filter(mask),
            "concept_ids": self._concepts(b, mask),
            "correct": pa.array(correct[keep], pa.int8()),
        }
        elapsed = col.get(self.elapsed_col) if self.elapsed_col else None
        if elapsed is not None:
            chunk["elapsed_ms"] = self._elapsed(b.trimmed(elapsed), keep)
        attempt = col.get(self.attempt_col) if self.attempt_col else None
        if attempt is not None:
            chunk["attempt"] = self._attempt(b.trimmed(attempt), keep)
        for name, values in extra.items():
            chunk[name] = values[keep]
        chunk["_file"] = pa.array(np.full(m, idx, dtype=np.int32))
        chunk["_line"] = pa.array(b.lines[keep], pa.int64())
        chunk["_dup"] = pa.array(row_hash([c.filter(mask) for c in b.columns]), pa.uint64())
        if "timestamp" in chunk:
            chunk["timestamp"] = pa.array(chunk["timestamp"], pa.int64())
        self._adjust_order(chunk)
        self.writer.add_interactions(pa.table(chunk))

    def _keys(self, b: Batch) -> dict[str, np.ndarray]:
        """Order keys and timestamps of the batch's rows; rejects rows where they are bad."""
        raise NotImplementedError

    def _adjust_order(self, chunk: dict[str, Any]) -> None:
        """Hook for a format whose order has a tie-breaking key (2012)."""

    def _concepts(self, b: Batch, mask: pa.Array) -> pa.Array:
        name = self._cols.get(self.concept_col) if self.concept_col else None
        if name is None:
            return pa.array([[]] * int(pc.sum(mask).as_py()), pa.list_(pa.string()))
        values = b.trimmed(name).filter(mask)
        none = np_bool(pc.is_in(values, pa.array(list(self.no_concept))))
        self._record_concept_names(b, mask, values, none)
        return single_concepts(values, none)

    def _record_concept_names(
        self, b: Batch, mask: pa.Array, values: pa.Array, none: np.ndarray
    ) -> None:
        name_col = self._cols.get(self.concept_name_col) if self.concept_name_col else None
        if name_col is None and not self.concept_is_name:
            return
        names = b.trimmed(name_col).filter(mask) if name_col else values
        pairs = pa.table({"c": values, "n": names}).filter(pa.array(~none))
        if pairs.num_rows == 0:
            return
        uniq = pairs.group_by(["c", "n"], use_threads=False).aggregate([])
        ids, labels = [], []
        for c, n in zip(uniq.column("c").to_pylist(), uniq.column("n").to_pylist(), strict=True):
            label = n or None
            if (c, label) in self._seen_concepts:
                continue
            self._seen_concepts.add((c, label))
            ids.append(c)
            labels.append(label)
        if ids:
            self.writer.add_concepts(ids, labels)

    def _elapsed(self, s: pa.Array, keep: np.ndarray) -> pa.Array:
        vals, ok = parse_float(s)
        ms = vals * self.elapsed_unit_ms
        valid = ok & (ms >= 0) & (ms < 2.0**62)
        empty = np_bool(pc.equal(s, ""))
        self._elapsed_nulled += int((keep & ~valid & ~empty).sum())
        out = np.where(valid, np.round(ms), 0).astype(np.int64)
        return pa.array(out[keep], pa.int64(), mask=~valid[keep])

    def _attempt(self, s: pa.Array, keep: np.ndarray) -> pa.Array:
        vals, ok = parse_int(s)
        valid = ok & (vals >= 0) & (vals <= 32767)
        empty = np_bool(pc.equal(s, ""))
        self._attempt_nulled += int((keep & ~valid & ~empty).sum())
        out = np.where(valid, vals, 0).astype(np.int16)
        return pa.array(out[keep], pa.int16(), mask=~valid[keep])


class _ProblemLogLoader(_AssistmentsLoader):
    """2009-10 and 2012-13: problem logs with skill_id, original, ms_first_response and
    attempt_count columns."""

    concept_col = "skill_id"
    original_col = "original"
    elapsed_col = "ms_first_response"
    attempt_col = "attempt_count"


class Assistments2009Loader(_ProblemLogLoader):
    name = "assistments-2009"
    summary = "ASSISTments 2009-10 skill builder CSV (skill_builder_data.csv, original/corrected)"
    options = (ORIGINAL_ONLY,)
    required = ("order_id", "user_id", "problem_id", "correct")
    concept_name_col = "skill_name"
    order_note = "order_id; rows of one order_id (a multi-skill problem) merged"

    def _keys(self, b: Batch) -> dict[str, np.ndarray]:
        order = int_key(b, self._c("order_id"), "bad order_id")
        return {"_order": order, "_merge": order}


class Assistments2012Loader(_ProblemLogLoader):
    name = "assistments-2012"
    summary = "ASSISTments 2012-13 CSV (2012-2013-data-with-predictions-4-final.csv)"
    options = (ORIGINAL_ONLY, BINARIZE)
    required = ("problem_log_id", "user_id", "problem_id", "correct", "start_time")
    concept_name_col = "skill"
    order_note = "start_time, then problem_log_id"

    def _keys(self, b: Batch) -> dict[str, np.ndarray]:
        log_id = int_key(b, self._c("problem_log_id"), "bad problem_log_id")
        start = self._c("start_time")
        ts, ok = parse_datetime_ms(b.trimmed(start))
        b.reject(~ok, "bad timestamp", b.value_detail(start))
        return {"timestamp": ts, "_order": ts, "_log": log_id}

    def _adjust_order(self, chunk: dict[str, Any]) -> None:
        # _order = start ms x 64 + rank of problem_log_id among this batch's rows of the
        # same learner and start time (ties beyond 63 keep file order)
        ts = chunk["_order"]
        log_id = chunk.pop("_log")
        rank = np.zeros(len(ts), dtype=np.int64)
        users = pc.dictionary_encode(chunk["user_id"]).indices.to_numpy(zero_copy_only=False)
        frame = pd.DataFrame({"u": users, "t": ts, "l": log_id})
        tied = frame.duplicated(["u", "t"], keep=False).to_numpy()
        if tied.any():
            sub = frame[tied]
            r = sub.groupby(["u", "t"], sort=False)["l"].rank(method="first").to_numpy()
            rank[tied] = np.minimum(r.astype(np.int64) - 1, 63)
        chunk["_order"] = pa.array(ts * 64 + rank, pa.int64())


class Assistments2015Loader(_AssistmentsLoader):
    name = "assistments-2015"
    summary = "ASSISTments 2015 CSV (2015_100_skill_builders_main_problems.csv)"
    options = (BINARIZE,)
    item_col = "sequence_id"
    required = ("user_id", "log_id", "sequence_id", "correct")
    concept_col = "sequence_id"
    order_note = "log_id"

    def _keys(self, b: Batch) -> dict[str, np.ndarray]:
        return {"_order": int_key(b, self._c("log_id"), "bad log_id")}


class Assistments2017Loader(_AssistmentsLoader):
    name = "assistments-2017"
    summary = "ASSISTments 2017 CSV (anonymized_full_release_competition_dataset.csv)"
    options = (ORIGINAL_ONLY,)
    user_col = "studentId"
    item_col = "problemId"
    required = ("studentId", "problemId", "correct", "startTime")
    concept_col = "skill"
    concept_is_name = True
    no_concept = ("", "noskill")
    original_col = "original"
    elapsed_col = "timeTaken"
    elapsed_unit_ms = 1000.0
    attempt_col = "attemptCount"
    order_note = "startTime, then file line"

    def _keys(self, b: Batch) -> dict[str, np.ndarray]:
        start = self._c("startTime")
        secs, ok = parse_float(b.trimmed(start))
        ok &= np.abs(secs) < 1e11  # beyond that it is not a time in seconds
        b.reject(~ok, "bad timestamp", b.value_detail(start))
        ms = np.where(ok, np.round(secs * 1000.0), 0).astype(np.int64)
        return {"timestamp": ms, "_order": ms}
