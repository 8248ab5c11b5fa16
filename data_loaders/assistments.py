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
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable
from typing import Any, BinaryIO, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .base import Loader, Option
from .errors import IngestError
from .inputs import InputFile, list_files

#: Bytes of CSV parsed per batch (one batch in memory at a time).
BLOCK_SIZE = 32 << 20
_CHUNK = 4 << 20
_PATTERNS = ("*.csv", "*.csv.gz", "*.txt", "*.txt.gz", "*.gz")
_SCAFFOLDING = "scaffolding (original=0)"
_RAW_LIMIT = 2000

_INT_RE = r"^[+-]?\d{1,18}(\.0*)?$"
_FLOAT_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_DATETIME_RE = (
    r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?"
    r"\s*(Z|[+-]\d{2}(:?\d{2})?)?$"
)
_ZONED_RE = r"[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|[+-]\d{2}(:?\d{2})?)$"


# ---------------------------------------------------------------------- input stream
class _Utf8Stream(io.RawIOBase):
    """The decompressed bytes of one input as UTF-8, checked (or transcoded) chunk by chunk.

    An undecodable byte raises :class:`IngestError` naming the file and the line, like
    :func:`inputs.check_utf8`, but without reading the whole file into memory.
    """

    def __init__(self, raw: BinaryIO, name: str, encoding: str) -> None:
        super().__init__()
        try:
            info = codecs.lookup(encoding)
        except LookupError as exc:
            raise IngestError(f"unknown encoding {encoding!r}", file=name) from exc
        self._raw = raw
        self._name = name
        self._encoding = encoding
        self._passthrough = info.name in ("utf-8", "utf-8-sig")
        factory = codecs.getincrementaldecoder("utf-8") if self._passthrough else None
        self._decoder = (factory or info.incrementaldecoder)(errors="strict")  # type: ignore[misc]
        self._buf = bytearray()
        self._eof = False
        self._bom_checked = False
        self._newlines = 0
        self.consumed = 0  # decompressed source bytes read so far

    def readable(self) -> bool:
        return True

    def position(self) -> int:
        """Bytes of the file on disk read so far (the compressed position for gzip)."""
        inner = getattr(self._raw, "fileobj", None)
        if inner is not None:
            try:
                return int(inner.tell())
            except (OSError, ValueError):
                pass
        return self.consumed

    def _fill(self, want: int) -> None:
        data = self._raw.read(max(want, _CHUNK))
        final = not data
        try:
            if self._passthrough:
                self._decoder.decode(data, final)
                out = bytes(data)
            else:
                out = self._decoder.decode(data, final).encode("utf-8")
        except UnicodeDecodeError as exc:
            obj = exc.object
            line = self._newlines + obj.count(b"\n", 0, exc.start) + 1
            offset = self.consumed - (len(obj) - len(data)) + exc.start
            raise IngestError(
                f"not valid {self._encoding} (byte 0x{obj[exc.start]:02x} at offset {offset}); "
                "pass the file's encoding with --encoding (for example latin-1)",
                file=self._name,
                line=line,
            ) from None
        self._newlines += data.count(b"\n")
        self.consumed += len(data)
        self._buf += out
        if final:
            self._eof = True
        if not self._bom_checked and (len(self._buf) >= 3 or self._eof):
            if self._buf[:3] == b"\xef\xbb\xbf":
                del self._buf[:3]
            self._bom_checked = True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while not self._eof:
                self._fill(_CHUNK)
            size = len(self._buf)
        while len(self._buf) < size and not self._eof:
            self._fill(size - len(self._buf))
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def peek_line(self, limit: int = 1 << 20) -> bytes:
        """The first line (without its end), left in the stream for the CSV reader."""
        while b"\n" not in self._buf and not self._eof and len(self._buf) < limit:
            self._fill(_CHUNK)
        end = self._buf.find(b"\n")
        line = bytes(self._buf if end < 0 else self._buf[:end])
        return line.rstrip(b"\r")

    def close(self) -> None:
        inner = getattr(self._raw, "fileobj", None)
        try:
            self._raw.close()
        finally:
            if inner is not None and hasattr(inner, "close"):
                inner.close()
            super().close()


# ---------------------------------------------------------------------- vectorised parsing
def _trim(col: pa.Array) -> pa.Array:
    return pc.utf8_trim_whitespace(col)


def _np_bool(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _parse_float(s: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Float values of a trimmed string column and where they are valid finite numbers."""
    ok = _np_bool(pc.match_substring_regex(s, _FLOAT_RE))
    if not ok.any():
        return np.zeros(len(s)), ok
    safe = s if ok.all() else pc.if_else(pa.array(ok), s, pa.scalar("0"))
    vals = pc.cast(safe, pa.float64()).to_numpy(zero_copy_only=False)
    ok &= np.isfinite(vals)
    return np.where(ok, vals, 0.0), ok


def _parse_int(s: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """int64 values of a trimmed string column (``12`` or ``12.0``) and where they are valid."""
    ok = _np_bool(pc.match_substring_regex(s, _INT_RE))
    if not ok.any():
        return np.zeros(len(s), dtype=np.int64), ok
    safe = s if ok.all() else pc.if_else(pa.array(ok), s, pa.scalar("0"))
    if pc.any(pc.match_substring(safe, ".")).as_py():
        safe = pc.replace_substring_regex(safe, r"\.0*$", "")
    vals = pc.cast(safe, pa.int64()).to_numpy(zero_copy_only=False)
    return np.where(ok, vals, 0), ok


def _cast_ns(s: pa.Array, typ: pa.DataType) -> tuple[np.ndarray, np.ndarray]:
    """Cast strings to a ns timestamp; values Arrow cannot parse are found by bisection."""
    try:
        out = pc.cast(pc.cast(s, typ), pa.int64()).to_numpy(zero_copy_only=False)
        return out, np.ones(len(s), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if len(s) == 1:
            return np.zeros(1, dtype=np.int64), np.zeros(1, dtype=bool)
        mid = len(s) // 2
        a, oka = _cast_ns(s.slice(0, mid), typ)
        b, okb = _cast_ns(s.slice(mid), typ)
        return np.concatenate([a, b]), np.concatenate([oka, okb])


def _parse_datetime_ms(s: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """ms since the epoch (UTC) of ``YYYY-MM-DD[ HH:MM[:SS[.f]]][zone]`` strings."""
    n = len(s)
    out = np.zeros(n, dtype=np.int64)
    ok = _np_bool(pc.match_substring_regex(s, _DATETIME_RE))
    if not ok.any():
        return out, ok
    zoned = _np_bool(pc.match_substring_regex(s, _ZONED_RE)) & ok
    for mask, typ in ((ok & ~zoned, pa.timestamp("ns")), (zoned, pa.timestamp("ns", tz="UTC"))):
        if not mask.any():
            continue
        rows = np.flatnonzero(mask)
        vals, good = _cast_ns(s.take(pa.array(rows)), typ)
        out[rows] = vals // 1_000_000
        ok[rows[~good]] = False
    return out, ok


_HASH_TABLE = np.random.default_rng(0x5EED).integers(
    0, np.iinfo(np.uint64).max, size=256 * 256, dtype=np.uint64, endpoint=True
)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit affects every output bit."""
    h = h ^ (h >> np.uint64(30))
    h *= _M1
    h ^= h >> np.uint64(27)
    h *= _M2
    return h ^ (h >> np.uint64(31))


def _string_hash(arr: pa.Array) -> np.ndarray:
    """A 64-bit hash of each string: tabulation over (position, byte), vectorised."""
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + n + 1]
    lens = np.diff(offsets)
    out = lens.astype(np.uint64) * _GOLDEN
    total = int(offsets[-1] - offsets[0])
    if total:
        data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        starts = offsets[:-1] - offsets[0]
        pos = np.arange(total, dtype=np.int32)  # a batch is far below 2 GiB
        pos -= np.repeat(starts, lens)
        key = (pos & 255).astype(np.uint16) << 8
        key |= data
        vals = _HASH_TABLE[key]
        if lens.max() > 256:  # positions beyond 256 bytes: fold in which 256-byte block
            vals ^= (pos >> 8).astype(np.uint64) * _M1
        nonempty = lens > 0
        out[nonempty] += np.add.reduceat(vals, starts[nonempty])
    if arr.null_count:
        out[_np_bool(arr.is_null())] = np.uint64(0x6E756C6C)
    return out


def _row_hash(columns: list[pa.Array]) -> np.ndarray:
    """A 64-bit hash of each row's raw values (all columns, in header order)."""
    out = np.full(len(columns[0]) if columns else 0, 0x345678, dtype=np.uint64)
    for col in columns:
        out = _mix(out * _GOLDEN + _string_hash(col))
    return out


def _raw_text(columns: list[pa.Array], rows: np.ndarray) -> list[str | None]:
    """The rows' fields joined back into CSV text (quoted where needed), for rejected.parquet."""
    if len(rows) == 0:
        return []
    idx = pa.array(rows, pa.int64())
    parts = []
    for col in columns:
        c = col.take(idx)
        needs = pc.match_substring_regex(c, '[",\r\n]')
        quoted = pc.binary_join_element_wise(
            pa.scalar('"'), pc.replace_substring(c, '"', '""'), pa.scalar('"'), pa.scalar("")
        )
        parts.append(pc.if_else(needs, quoted, c))
    joined = pc.binary_join_element_wise(*parts, pa.scalar(","))
    return pc.utf8_slice_codeunits(joined, 0, _RAW_LIMIT).to_pylist()


def _single_concepts(values: pa.Array, none: np.ndarray) -> pa.ListArray:
    """One concept per row (``values``), or none where ``none`` is set."""
    lens = (~none).astype(np.int32)
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(lens, out=offsets[1:])
    kept = values.filter(pa.array(~none)) if none.any() else values
    return pa.ListArray.from_arrays(pa.array(offsets), pc.cast(kept, pa.string()))


# ---------------------------------------------------------------------- one batch
class _Batch:
    """One parsed CSV batch: its raw columns, line numbers and which rows are still alive."""

    def __init__(self, names: list[str], columns: list[pa.Array], lines: np.ndarray) -> None:
        self.names = names
        self.columns = columns
        self.col = dict(zip(names, columns, strict=True))
        self.lines = lines
        self.n = len(lines)
        self.alive = np.ones(self.n, dtype=bool)
        self._rows: list[np.ndarray] = []
        self._reasons: list[str] = []
        self._details: list[str | None] = []
        self._trimmed: dict[str, pa.Array] = {}

    def trimmed(self, name: str) -> pa.Array:
        if name not in self._trimmed:
            self._trimmed[name] = _trim(self.col[name])
        return self._trimmed[name]

    def reject(
        self,
        bad: np.ndarray,
        reason: str,
        detail: Callable[[int], str] | None = None,
    ) -> None:
        """Reject the live rows where ``bad`` is set; ``detail(row)`` describes one row."""
        rows = np.flatnonzero(self.alive & bad)
        if len(rows) == 0:
            return
        self.alive[rows] = False
        self._rows.append(rows)
        self._reasons.extend([reason] * len(rows))
        self._details.extend(detail(int(r)) if detail else None for r in rows)

    def value_detail(self, name: str) -> Callable[[int], str]:
        values = self.col[name]
        return lambda r: f"{name}={values[r].as_py()!r}"

    def flush_rejected(self, writer: Any, file_index: int) -> None:
        if not self._rows:
            return
        rows = np.concatenate(self._rows)
        writer.reject_many(
            np.full(len(rows), file_index, dtype=np.int32),
            self.lines[rows],
            self._reasons,
            _raw_text(self.columns, rows),
            self._details,
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
        stream = _Utf8Stream(f.open_binary(), f.name, self.ctx.encoding)
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
                lines, next_line, pending = _number_rows(batch.num_rows, next_line, pending)
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
        for col in self.required:
            if self._cols[col] is None:
                raise IngestError(
                    f"missing required column '{col}' (header: {','.join(names)[:500]})",
                    file=f.name,
                    line=1,
                    field=col,
                )
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
            [b[3][:_RAW_LIMIT] for b in bad_rows],
            [f"expected {b[1]} fields, got {b[2]}" for b in bad_rows],
        )

    # -- one batch ------------------------------------------------------------------
    def _batch(self, names: list[str], batch: pa.RecordBatch, lines: np.ndarray, idx: int) -> None:
        columns = [batch.column(i) for i in range(batch.num_columns)]
        if not len(lines):
            return
        # blank lines parse as rows of empty fields: not input rows
        blank = _np_bool(pc.equal(columns[0], ""))
        if blank.any():
            for col in columns[1:]:
                blank &= _np_bool(pc.equal(col, ""))
            if blank.any():
                keep = pa.array(~blank)
                columns = [c.filter(keep) for c in columns]
                lines = lines[~blank]
        b = _Batch(names, columns, lines)
        if b.n == 0:
            return
        self.writer.count_read(b.n)
        col = self._cols

        orig = col.get(self.original_col) if self.original_col else None
        if orig is not None and self.opts.get("original_only", False):
            scaffolding = _np_bool(pc.is_in(b.trimmed(orig), pa.array(["0", "0.0"])))
            sel = b.alive & scaffolding
            self.writer.skip(_SCAFFOLDING, int(sel.sum()))
            b.alive &= ~sel

        user = b.trimmed(self._c(self.user_col))
        item = b.trimmed(self._c(self.item_col))
        b.reject(_np_bool(pc.equal(user, "")), f"empty {self.user_col}")
        b.reject(_np_bool(pc.equal(item, "")), f"empty {self.item_col}")

        correct_name = self._c(self.correct_col)
        cval, cok = _parse_float(b.trimmed(correct_name))
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
        chunk["_dup"] = pa.array(_row_hash([c.filter(mask) for c in b.columns]), pa.uint64())
        if "timestamp" in chunk:
            chunk["timestamp"] = pa.array(chunk["timestamp"], pa.int64())
        self._adjust_order(chunk)
        self.writer.add_interactions(pa.table(chunk))

    def _keys(self, b: _Batch) -> dict[str, np.ndarray]:
        """Order keys and timestamps of the batch's rows; rejects rows where they are bad."""
        raise NotImplementedError

    def _adjust_order(self, chunk: dict[str, Any]) -> None:
        """Hook for a format whose order has a tie-breaking key (2012)."""

    def _concepts(self, b: _Batch, mask: pa.Array) -> pa.Array:
        name = self._cols.get(self.concept_col) if self.concept_col else None
        if name is None:
            return pa.array([[]] * int(pc.sum(mask).as_py()), pa.list_(pa.string()))
        values = b.trimmed(name).filter(mask)
        none = _np_bool(pc.is_in(values, pa.array(list(self.no_concept))))
        self._record_concept_names(b, mask, values, none)
        return _single_concepts(values, none)

    def _record_concept_names(
        self, b: _Batch, mask: pa.Array, values: pa.Array, none: np.ndarray
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
        vals, ok = _parse_float(s)
        ms = vals * self.elapsed_unit_ms
        valid = ok & (ms >= 0) & (ms < 2.0**62)
        empty = _np_bool(pc.equal(s, ""))
        self._elapsed_nulled += int((keep & ~valid & ~empty).sum())
        out = np.where(valid, np.round(ms), 0).astype(np.int64)
        return pa.array(out[keep], pa.int64(), mask=~valid[keep])

    def _attempt(self, s: pa.Array, keep: np.ndarray) -> pa.Array:
        vals, ok = _parse_int(s)
        valid = ok & (vals >= 0) & (vals <= 32767)
        empty = _np_bool(pc.equal(s, ""))
        self._attempt_nulled += int((keep & ~valid & ~empty).sum())
        out = np.where(valid, vals, 0).astype(np.int16)
        return pa.array(out[keep], pa.int16(), mask=~valid[keep])


def _number_rows(n: int, next_line: int, pending: list[int]) -> tuple[np.ndarray, int, list[int]]:
    """Line numbers of ``n`` parsed rows starting at ``next_line``, around invalid rows.

    ``pending`` holds the (sorted) line numbers of rows the CSV reader skipped as invalid;
    the ones passed are consumed.
    """
    lines = np.arange(next_line, next_line + n, dtype=np.int64)
    used = 0
    for bad in pending:
        if n == 0 or bad > lines[-1]:
            break
        used += 1
        if bad < lines[0]:
            continue
        i = int(np.searchsorted(lines, bad))
        lines[i:] += 1
    rest = pending[used:]
    return lines, (int(lines[-1]) + 1 if n else next_line), rest


def _int_key(b: _Batch, column: str, reason: str) -> np.ndarray:
    vals, ok = _parse_int(b.trimmed(column))
    b.reject(~ok, reason, b.value_detail(column))
    return vals


class Assistments2009Loader(_AssistmentsLoader):
    name = "assistments-2009"
    summary = "ASSISTments 2009-10 skill builder CSV (skill_builder_data.csv, original/corrected)"
    options = (
        Option(
            "original_only",
            bool,
            True,
            "keep main problems only; scaffolding rows (original=0) are counted as skipped",
        ),
    )
    user_col = "user_id"
    item_col = "problem_id"
    required = ("order_id", "user_id", "problem_id", "correct")
    concept_col = "skill_id"
    concept_name_col = "skill_name"
    original_col = "original"
    elapsed_col = "ms_first_response"
    attempt_col = "attempt_count"
    order_note = "order_id; rows of one order_id (a multi-skill problem) merged"

    def _keys(self, b: _Batch) -> dict[str, np.ndarray]:
        order = _int_key(b, self._c("order_id"), "bad order_id")
        return {"_order": order, "_merge": order}


class Assistments2012Loader(_AssistmentsLoader):
    name = "assistments-2012"
    summary = "ASSISTments 2012-13 CSV (2012-2013-data-with-predictions-4-final.csv)"
    options = (
        Option(
            "original_only",
            bool,
            True,
            "keep main problems only; scaffolding rows (original=0) are counted as skipped",
        ),
        Option(
            "binarize",
            bool,
            False,
            "map partial credit to 0/1 (correct >= 1 -> 1, else 0) instead of rejecting it",
        ),
    )
    user_col = "user_id"
    item_col = "problem_id"
    required = ("problem_log_id", "user_id", "problem_id", "correct", "start_time")
    concept_col = "skill_id"
    concept_name_col = "skill"
    original_col = "original"
    elapsed_col = "ms_first_response"
    attempt_col = "attempt_count"
    order_note = "start_time, then problem_log_id"

    def _keys(self, b: _Batch) -> dict[str, np.ndarray]:
        log_id = _int_key(b, self._c("problem_log_id"), "bad problem_log_id")
        start = self._c("start_time")
        ts, ok = _parse_datetime_ms(b.trimmed(start))
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
    options = (
        Option(
            "binarize",
            bool,
            False,
            "map partial credit to 0/1 (correct >= 1 -> 1, else 0) instead of rejecting it",
        ),
    )
    user_col = "user_id"
    item_col = "sequence_id"
    required = ("user_id", "log_id", "sequence_id", "correct")
    concept_col = "sequence_id"
    order_note = "log_id"

    def _keys(self, b: _Batch) -> dict[str, np.ndarray]:
        return {"_order": _int_key(b, self._c("log_id"), "bad log_id")}


class Assistments2017Loader(_AssistmentsLoader):
    name = "assistments-2017"
    summary = "ASSISTments 2017 CSV (anonymized_full_release_competition_dataset.csv)"
    options = (
        Option(
            "original_only",
            bool,
            True,
            "keep main problems only; scaffolding rows (original=0) are counted as skipped",
        ),
    )
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

    def _keys(self, b: _Batch) -> dict[str, np.ndarray]:
        start = self._c("startTime")
        secs, ok = _parse_float(b.trimmed(start))
        ok &= np.abs(secs) < 1e11  # beyond that it is not a time in seconds
        b.reject(~ok, "bad timestamp", b.value_detail(start))
        ms = np.where(ok, np.round(secs * 1000.0), 0).astype(np.int64)
        return {"timestamp": ms, "_order": ms}
