"""EdNet (Riiid's Santa TOEIC app): KT1 answer logs and KT2-KT4 action logs.

EdNet ships one CSV file per learner (``u<id>.csv``), in a directory or a .zip archive, and
the EdNet-Contents tables beside them. Every choice this module makes:

Common to all four formats

* The learner id is the file's stem (``u1.csv`` and ``u1.csv.gz`` -> ``u1``); gzip is detected
  from the bytes. Data files are the ``*.csv`` / ``*.csv.gz`` files of the input, except the
  EdNet-Contents tables (``questions``, ``lectures``, ``payments``, ``coupons``) and anything
  under a ``contents/`` directory.
* The answer key is EdNet-Contents ``questions.csv`` (``question_id, bundle_id,
  explanation_id, correct_answer, part, tags, deployed_at``), given with ``--concepts PATH``
  (the file, or a directory holding it) or found by :func:`inputs.find_sibling` (inside the
  input, beside it, or in a ``contents/`` directory there). The logs hold the learner's choice
  (a-d), not whether it was right, so without questions.csv the loaders raise
  :class:`IngestError` saying how to pass it. A single learner file is also looked up from
  its directory (``KT1/u1.csv`` finds ``contents/questions.csv`` beside ``KT1/``).
* ``concept_ids`` are the question's ``tags`` (``;``-separated; ``-1`` means none, giving an
  empty list). EdNet publishes no tag names, so ``concepts.parquet`` has ids only. The item
  catalogue (``items.parquet``) is the whole of questions.csv: ``item_id``, ``concept_ids``,
  ``bundle_id``, ``part`` (int8), ``correct_answer``, ``explanation_id``, ``deployed_at``
  (timestamp, ms UTC).
* ``correct`` = ``user_answer == correct_answer`` (exact string comparison). An empty
  ``user_answer`` means the learner gave no answer (EdNet's convention); it is kept as an
  incorrect answer, and the number of such rows is noted in the manifest
  (``notes.empty_user_answer``).
* Rejected rows (``rejected.parquet``, with file, line and raw text): a question id that is
  not in questions.csv (``unknown question``), a missing or non-integer timestamp, a
  non-integer ``elapsed_time`` / ``cursor_time``, a row with the wrong number of fields.
  Blank lines are ignored (not rows). A missing required column, or a questions.csv without
  ``question_id`` / ``correct_answer`` / ``tags``, is an :class:`IngestError` naming the
  column and the file. Bytes that are not UTF-8 are an :class:`IngestError` naming file and
  line, unless ``--encoding`` names the files' encoding.
* Exact duplicate rows are kept (real EdNet files have none; ``_dup`` is not set), and
  ``attempt`` is null (EdNet does not number attempts).

ednet-kt1 (``timestamp, solving_id, question_id, user_answer, elapsed_time``)

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

ednet-kt2 / ednet-kt3 (``timestamp, action_type, item_id, source, user_answer, platform``)
and ednet-kt4 (the same plus ``cursor_time``)

* Every well-formed action row (``enter``, ``respond``, ``submit``, ``quit``, media,
  ``erase_choice``, ``pay``, lectures and explanations included, ``respond`` too) is kept in
  ``events.parquet``: the answers are derived from them, not taken out of them.
* Answers: a ``respond`` to question q is pending until the ``submit`` of q's bundle
  (``bundle_id`` in questions.csv). At the submit, every pending question of that bundle
  becomes one interaction with the *last* response given to it (earlier ones are counted as
  skipped, "response superseded"). ``timestamp`` = the submit's time (when the answer became
  final); ``elapsed_ms`` = submit time - time of the last ``enter`` of that bundle (null when
  the bundle was not entered); the row points (``_line``) at the winning ``respond``, and the
  answers of one submit are in the order of their winning responses.
  Entering a bundle again drops its pending responses, and responses still pending at the end
  of the file were never submitted: both are counted as skipped ("response never
  submitted"), not as answers. Rows are processed in timestamp order (ties in file order).
* Every other action is counted as skipped ("<action> action (kept in events)"), so that
  rows read = interactions + rejected + skipped. Values are trimmed; empty text fields are
  null in events.parquet. These files are small: each is parsed on its own (one pyarrow
  call, or line by line when that cannot be trusted) and walked once in Python.
"""

from __future__ import annotations

import csv
import gzip
import os
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .base import Loader, Option
from .errors import IngestError
from .inputs import GZIP_MAGIC, InputFile, check_utf8, find_sibling
from .writer import bucket_of

KT1_COLUMNS = ("timestamp", "solving_id", "question_id", "user_answer", "elapsed_time")
KT1_HEADER = ",".join(KT1_COLUMNS).encode()
KT1_REQUIRED = ("timestamp", "question_id", "user_answer")
_KT1_USED = ("timestamp", "question_id", "user_answer", "elapsed_time")
QUESTIONS_NAMES = ("questions.csv", "questions.csv.gz")
_CONTENTS_STEMS = {"questions", "lectures", "payments", "coupons"}
_BOM = b"\xef\xbb\xbf"
_INT_RE = r"^[+-]?[0-9]{1,18}$"


# ---------------------------------------------------------------------- input files
@dataclass(frozen=True)
class _Src:
    """One learner file (cheaper than :class:`InputFile` for many thousand files)."""

    name: str  # as in messages and rejected.parquet (what ``list_files`` would call it)
    path: str  # the file, or the zip archive
    member: str | None
    stem: str
    size: int


def _stem(base: str) -> str:
    low = base.lower()
    if low.endswith(".gz"):
        base, low = base[:-3], low[:-3]
    if low.endswith(".csv"):
        base = base[:-4]
    return base


def _is_data_name(base: str) -> bool:
    low = base.lower()
    return (
        (low.endswith(".csv") or low.endswith(".csv.gz"))
        and not low.startswith((".", "__macosx"))
        and _stem(low) not in _CONTENTS_STEMS
    )


class _Inputs:
    """The data files of an EdNet input (directory, single file or .zip), read cheaply.

    Same files and order as :func:`inputs.list_files` (sorted by path), without a ``Path``
    per file, and a .zip archive is opened once (``InputFile`` reopens the archive for every
    member, which is quadratic over an archive of many thousand learner files).
    """

    def __init__(self, root: Path, exclude: InputFile | None) -> None:
        self.root = root
        self._zip: zipfile.ZipFile | None = None
        skip_path = str(exclude.path) if exclude is not None else None
        skip_member = exclude.member if exclude is not None else None
        files: list[_Src] = []
        if root.is_file() and zipfile.is_zipfile(root):
            self._zip = zipfile.ZipFile(root)
            infos = sorted(
                (i for i in self._zip.infolist() if not i.is_dir()), key=lambda i: i.filename
            )
            for i in infos:
                parts = i.filename.split("/")
                if not _is_data_name(parts[-1]) or "contents" in (p.lower() for p in parts[:-1]):
                    continue
                if skip_path == str(root) and skip_member == i.filename:
                    continue
                name = f"{root.name}:{i.filename}"
                files.append(_Src(name, str(root), i.filename, _stem(parts[-1]), i.compress_size))
        elif root.is_file():
            files.append(_Src(str(root), str(root), None, _stem(root.name), root.stat().st_size))
        elif root.is_dir():
            found: list[tuple[tuple[str, ...], str, int]] = []
            self._walk(str(root), (), found)
            found.sort()
            for rel, path, size in found:
                if path == skip_path or any(p.lower() == "contents" for p in rel[:-1]):
                    continue
                files.append(_Src(path, path, None, _stem(rel[-1]), size))
        else:
            raise IngestError("input not found", file=str(root))
        self.files = files

    def _walk(self, top: str, rel: tuple[str, ...], out: list) -> None:
        with os.scandir(top) as it:
            for e in it:
                if e.is_dir():
                    self._walk(e.path, (*rel, e.name), out)
                elif _is_data_name(e.name) and e.is_file():
                    out.append(((*rel, e.name), e.path, e.stat().st_size))

    def read(self, f: _Src) -> bytes:
        try:
            if self._zip is not None:
                data = self._zip.read(f.member or "")
            else:
                with open(f.path, "rb") as fh:
                    data = fh.read()
        except (OSError, zipfile.BadZipFile, zlib.error) as exc:
            raise IngestError(f"cannot read ({exc})", file=f.name) from exc
        if data[:2] == GZIP_MAGIC:
            try:
                data = gzip.decompress(data)
            except (EOFError, OSError, zlib.error) as exc:
                raise IngestError(f"corrupt or truncated gzip data ({exc})", file=f.name) from exc
        return data

    def read_many(self, order: Sequence[int], group: int = 256) -> Iterator[tuple[int, bytes]]:
        """(position, bytes) of the files in ``order``, read one group ahead on a thread.

        File reads and gunzipping release the GIL, so they overlap the parsing; memory
        stays at two groups of files.
        """
        groups = [order[i : i + group] for i in range(0, len(order), group)]
        if not groups:
            return

        def read(positions: Sequence[int]) -> list[bytes]:
            return [self.read(self.files[i]) for i in positions]

        with ThreadPoolExecutor(max_workers=1) as pool:
            ahead = pool.submit(read, groups[0])
            for k, positions in enumerate(groups):
                datas = ahead.result()
                if k + 1 < len(groups):
                    ahead = pool.submit(read, groups[k + 1])
                yield from zip(positions, datas, strict=True)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("-", "").replace("_", "") in ("utf8", "utf8sig")


def _raw_line(data: bytes, line: int) -> str:
    """Physical line ``line`` (1-based) of ``data``, as text."""
    start = 0
    for _ in range(line - 1):
        start = data.find(b"\n", start) + 1
        if start == 0:
            return ""
    end = data.find(b"\n", start)
    text = data[start : end if end >= 0 else len(data)]
    return text.rstrip(b"\r").decode("utf-8", "replace")[:2000]


def _raw_lines(data: bytes, lines: Sequence[int]) -> list[str]:
    if len(lines) > 8:
        split = data.split(b"\n")
        return [
            split[n - 1].rstrip(b"\r").decode("utf-8", "replace")[:2000]
            if 0 < n <= len(split)
            else ""
            for n in lines
        ]
    return [_raw_line(data, int(n)) for n in lines]


# ---------------------------------------------------------------------- parsing
@dataclass
class _Parsed:
    """A file's rows as string columns, with the physical line of each row."""

    header: list[str]
    data: bytes  # the file as UTF-8
    table: pa.Table  # one string column per header name
    lines: np.ndarray  # int64, 1-based physical line of each row
    bad: list[tuple[int, str, str, str]]  # (line, reason, raw, detail)


def _header_names(data: bytes) -> tuple[list[str], int]:
    """The header's column names and the offset of the first data line."""
    if data.startswith(_BOM):
        data = data[3:]
        shift = 3
    else:
        shift = 0
    nl = data.find(b"\n")
    first = data[: nl if nl >= 0 else len(data)].rstrip(b"\r").decode("utf-8", "replace")
    names = next(csv.reader([first]), [])
    return [n.strip() for n in names], (nl + 1 + shift if nl >= 0 else len(data) + shift)


def _rows(data: bytes, start: int) -> int:
    """Newline-delimited lines in ``data[start:]`` (a last line without newline counts)."""
    n = data.count(b"\n", start)
    if len(data) > start and not data.endswith(b"\n"):
        n += 1
    return n


def _valid_utf8(buf: bytes) -> bool:
    try:
        buf.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _line_aligned(buf: bytes) -> bool:
    """Every ``\\r`` is part of ``\\r\\n`` (a lone ``\\r`` would end a row for pyarrow)."""
    return b"\r" not in buf or buf.count(b"\r") == buf.count(b"\r\n")


def parse_strings(data: bytes, name: str, encoding: str = "utf-8") -> _Parsed:
    """Parse a CSV file with a header into string columns with exact line numbers.

    Tries one pyarrow parse (trusted when its rows match the lines one to one), else reads
    the file with the csv module line by line, rejecting rows with a wrong field count.
    """
    data = check_utf8(data, name, encoding)
    header, start = _header_names(data)
    if not header or header == [""]:
        return _Parsed(header, data, pa.table({}), np.zeros(0, np.int64), [])
    expected = _rows(data, start)
    body = memoryview(data)[start:]
    if len(set(header)) == len(header) and _line_aligned(data):
        try:
            table = pacsv.read_csv(
                pa.py_buffer(body),
                read_options=pacsv.ReadOptions(column_names=header, use_threads=False),
                convert_options=pacsv.ConvertOptions(
                    column_types={h: pa.string() for h in header}, strings_can_be_null=False
                ),
            )
            if table.num_rows == expected:
                lines = np.arange(2, expected + 2, dtype=np.int64)
                return _Parsed(header, data, table, lines, [])
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    return _parse_python(data, start, header)


def _parse_python(data: bytes, start: int, header: list[str]) -> _Parsed:
    text = data[start:].decode("utf-8")
    physical = text.split("\n")
    if physical and physical[-1] == "":
        physical.pop()
    cols: list[list[str]] = [[] for _ in header]
    lines: list[int] = []
    bad: list[tuple[int, str, str, str]] = []
    k = len(header)
    for i, raw in enumerate(physical):
        line = i + 2
        raw = raw.rstrip("\r")
        if raw.strip() == "":
            continue
        try:
            row = next(csv.reader([raw]))
        except csv.Error as exc:
            bad.append((line, "unparsable row", raw[:2000], str(exc)))
            continue
        if len(row) != k:
            bad.append(
                (line, "wrong number of fields", raw[:2000], f"expected {k}, got {len(row)}")
            )
            continue
        for c, v in zip(cols, row, strict=True):
            c.append(v)
        lines.append(line)
    table = pa.table({h: pa.array(c, pa.string()) for h, c in zip(header, cols, strict=True)})
    return _Parsed(header, data, table, np.asarray(lines, dtype=np.int64), bad)


def _ints(col: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Integers from strings: (int64 values, null where empty or bad; mask of bad values)."""
    s = pc.utf8_trim_whitespace(col)
    ok = pc.match_substring_regex(s, _INT_RE)
    empty = pc.equal(s, "")
    bad = pc.invert(pc.or_(ok, empty)).to_numpy(zero_copy_only=False)
    values = pc.cast(pc.if_else(ok, s, pa.scalar(None, pa.string())), pa.int64())
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values, np.asarray(bad, dtype=bool)


def _missing_column(header: list[str], required: Sequence[str], name: str, what: str) -> None:
    for col in required:
        if col not in header:
            raise IngestError(
                f"missing required column '{col}' of {what} (header: {','.join(header)})",
                file=name,
                line=1,
                field=col,
            )


# ---------------------------------------------------------------------- questions.csv
@dataclass
class Questions:
    """EdNet-Contents questions.csv: the answer key, the tags and the bundles."""

    name: str
    ids: pa.Array  # string
    correct_answer: pa.Array  # string
    tags: pa.ListArray  # list<string>
    bundle: pa.Array | None  # string
    items: pa.Table

    def index(self, question_ids: pa.Array | pa.ChunkedArray) -> pa.Array:
        """Row of each question id in the table (null: unknown question)."""
        out = pc.index_in(question_ids, value_set=self.ids)
        return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def read_questions(f: InputFile, encoding: str, *, need_bundle: bool) -> Questions:
    parsed = parse_strings(f.read_bytes(), f.name, encoding)
    required = ["question_id", "correct_answer", "tags"] + (["bundle_id"] if need_bundle else [])
    _missing_column(parsed.header, required, f.name, "questions.csv")
    if parsed.bad:
        line, reason, raw, detail = parsed.bad[0]
        raise IngestError(f"{reason} ({detail}): {raw!r}", file=f.name, line=line)
    t = parsed.table
    ids = pc.utf8_trim_whitespace(t.column("question_id")).combine_chunks()
    answers = pc.utf8_trim_whitespace(t.column("correct_answer")).combine_chunks()
    tag_lists = [
        [x for x in (s or "").replace(" ", "").split(";") if x not in ("", "-1")]
        for s in t.column("tags").to_pylist()
    ]
    tags = pa.array(tag_lists, pa.list_(pa.string()))
    cols: dict[str, pa.Array] = {"item_id": ids, "concept_ids": tags}
    bundle = None
    for c in ("bundle_id", "part", "correct_answer", "explanation_id", "deployed_at"):
        if c not in t.column_names:
            continue
        col = pc.utf8_trim_whitespace(t.column(c)).combine_chunks()
        if c == "part":
            vals, _ = _ints(col)
            col = pc.cast(vals, pa.int8(), safe=False)
        elif c == "deployed_at":
            vals, _ = _ints(col)
            col = pc.cast(vals, pa.timestamp("ms", tz="UTC"))
        else:
            col = pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col)
        if c == "bundle_id":
            bundle = col
        cols[c] = col
    return Questions(f.name, ids, answers, tags, bundle, pa.table(cols))


# ---------------------------------------------------------------------- loaders
class _EdNetLoader(Loader):
    """Shared: finding questions.csv and the learner files."""

    need_bundle: ClassVar[bool] = False

    def _questions_file(self) -> InputFile:
        given = self.ctx.concepts
        if given is not None:
            given = Path(given)
            if given.is_dir():
                found = find_sibling(given, QUESTIONS_NAMES)
                if found is None:
                    raise IngestError(
                        "no questions.csv in the --concepts directory", file=str(given)
                    )
                return found
            if not given.is_file():
                raise IngestError("--concepts file not found", file=str(given))
            return InputFile(name=str(given), path=given)
        found = find_sibling(self.ctx.input, QUESTIONS_NAMES)
        if found is None and self.ctx.input.is_file() and not zipfile.is_zipfile(self.ctx.input):
            # a single learner file: also look where its directory's siblings are
            # (EdNet's own layout: KT1/u1.csv beside contents/questions.csv)
            found = find_sibling(self.ctx.input.parent, QUESTIONS_NAMES)
        if found is None:
            raise IngestError(
                "EdNet logs hold the learner's choice (a-d), not whether it was right: "
                "correctness needs EdNet-Contents questions.csv (its correct_answer and tags "
                "columns). Put questions.csv (or questions.csv.gz) in the input directory, "
                "beside it or in a contents/ directory there, or pass its path with "
                "--concepts PATH",
                file=str(self.ctx.input),
            )
        return found

    def _setup(self) -> tuple[Questions, _Inputs]:
        qfile = self._questions_file()
        questions = read_questions(qfile, self.ctx.encoding, need_bundle=self.need_bundle)
        self.writer.note("answer_key", qfile.name)
        self.writer.add_items(questions.items)
        tags = pc.unique(pc.list_flatten(questions.tags)).to_pylist()
        self.writer.add_concepts(tags, [None] * len(tags))
        inputs = _Inputs(self.ctx.input, qfile)
        if not inputs.files:
            inputs.close()
            raise IngestError("no learner files (u<id>.csv) found", file=str(self.ctx.input))
        self.writer.progress.start(
            f"reading {self.name}", sum(f.size for f in inputs.files) or None
        )
        return questions, inputs

    def _note_empty_answers(self, n: int) -> None:
        self.writer.note(
            "empty_user_answer",
            {"rows": int(n), "rule": "an empty user_answer (no answer given) counts as incorrect"},
        )


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


class EdNetKT1Loader(_EdNetLoader):
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
        transcode = not _is_utf8(self.ctx.encoding)
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
                if head.startswith(_BOM):
                    head = head[3:]
                if not fast or head.rstrip(b"\r") != KT1_HEADER:
                    self._slow_piece(_Piece(idx, f.name, f.stem, bucket, data, 0, 0))
                    continue
                start = nl + 1 if nl >= 0 else len(data)
                rows = _rows(data, start)
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
        if _line_aligned(buf) and (buf.isascii() or _valid_utf8(buf)):
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
        name = p.name
        parsed = parse_strings(p.data, name, "utf-8")
        if not parsed.header or parsed.header == [""]:
            return
        _missing_column(parsed.header, KT1_REQUIRED, name, "an EdNet KT1 file")
        t = parsed.table
        n = t.num_rows
        self.writer.count_read(n + len(parsed.bad))
        bad = list(parsed.bad)
        ts, bad_ts = _ints(t.column("timestamp"))
        if "elapsed_time" in t.column_names:
            el, bad_el = _ints(t.column("elapsed_time"))
        else:
            el, bad_el = pa.nulls(n, pa.int64()), np.zeros(n, dtype=bool)
        drop = bad_ts | bad_el
        if drop.any():
            rows = np.flatnonzero(drop)
            raws = _raw_lines(parsed.data, parsed.lines[rows].tolist())
            for r, raw in zip(rows, raws, strict=True):
                col = "timestamp" if bad_ts[r] else "elapsed_time"
                value = t.column(col)[int(r)].as_py()
                bad.append((int(parsed.lines[r]), f"bad {col}", raw, f"{col} {value!r}"))
        if bad:
            bad.sort()
            self.writer.reject_many(
                np.full(len(bad), p.file, dtype=np.int32),
                [b[0] for b in bad],
                [b[1] for b in bad],
                [b[2] for b in bad],
                [b[3] for b in bad],
            )
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
                raws.extend(_raw_lines(pieces[i].data, lines[sel].tolist()))
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


class _ActionLoader(_EdNetLoader):
    """KT2-KT4: action logs; answers derived at the submit of their bundle."""

    need_bundle = True
    required: ClassVar[tuple[str, ...]] = ("timestamp", "action_type", "item_id", "user_answer")
    options = ()
    flush_rows: ClassVar[int] = 200_000

    def load(self) -> None:
        q, inputs = self._setup()
        self.q = q
        ids = q.ids.to_pylist()
        bundles = q.bundle.to_pylist() if q.bundle is not None else [None] * len(ids)
        self._qindex: dict[str, int] = {}
        for i, qid in enumerate(ids):
            self._qindex.setdefault(qid, i)
        self._bundle_of = bundles
        self._answers: dict[str, list[Any]] = {
            k: [] for k in ("user", "qi", "answer", "ts", "elapsed", "file", "line")
        }
        self._events: list[pa.Table] = []
        self._event_rows = 0
        self._empty = 0
        try:
            for f in inputs.files:
                size = f.size
                idx = self.writer.register_file(f.name, size)
                self._file(f, idx, inputs.read(f))
                self.writer.progress.advance(size)
        finally:
            inputs.close()
        self._flush_answers()
        self._flush_events()
        self._note_empty_answers(self._empty)
        self.writer.note(
            "answers_from_actions",
            "one interaction per question at the submit of its bundle, last response wins; "
            "timestamp = submit time, elapsed_ms = submit - last enter of the bundle; all "
            "raw actions are in events.parquet",
        )

    def _file(self, f: _Src, idx: int, data: bytes) -> None:
        parsed = parse_strings(data, f.name, self.ctx.encoding)
        if not parsed.header or parsed.header == [""]:
            return
        _missing_column(parsed.header, self.required, f.name, f"an EdNet {self.name} file")
        t = parsed.table
        n = t.num_rows
        self.writer.count_read(n + len(parsed.bad))
        bad = list(parsed.bad)
        ts, bad_ts = _ints(t.column("timestamp"))
        no_ts = pc.is_null(ts).to_numpy(zero_copy_only=False) & ~bad_ts
        if "cursor_time" in t.column_names:
            cursor, bad_cur = _ints(t.column("cursor_time"))
        else:
            cursor, bad_cur = pa.nulls(n, pa.int64()), np.zeros(n, dtype=bool)
        actions = pc.utf8_trim_whitespace(t.column("action_type")).combine_chunks()
        no_action = pc.equal(actions, "").to_numpy(zero_copy_only=False)
        drop = bad_ts | no_ts | bad_cur | no_action
        if drop.any():
            rows = np.flatnonzero(drop)
            raws = _raw_lines(parsed.data, parsed.lines[rows].tolist())
            for r, raw in zip(rows, raws, strict=True):
                if bad_ts[r] or no_ts[r]:
                    value = t.column("timestamp")[int(r)].as_py()
                    reason = "bad timestamp" if bad_ts[r] else "missing timestamp"
                    detail = f"timestamp {value!r}"
                elif bad_cur[r]:
                    reason = "bad cursor_time"
                    detail = f"cursor_time {t.column('cursor_time')[int(r)].as_py()!r}"
                else:
                    reason, detail = "missing action_type", "action_type is empty"
                bad.append((int(parsed.lines[r]), reason, raw, detail))
        if bad:
            bad.sort()
            self.writer.reject_many(
                np.full(len(bad), idx, dtype=np.int32),
                [b[0] for b in bad],
                [b[1] for b in bad],
                [b[2] for b in bad],
                [b[3] for b in bad],
            )
        keep = ~drop
        if not keep.any():
            return
        mask = pa.array(keep)
        lines = parsed.lines[keep]
        ts_np = ts.filter(mask).to_numpy(zero_copy_only=False).astype(np.int64)
        order = np.argsort(ts_np, kind="stable")
        take = pa.array(order)

        def col(name: str, empty_null: bool = True) -> pa.Array:
            if name not in t.column_names:
                return pa.nulls(len(order), pa.string())
            c = pc.utf8_trim_whitespace(t.column(name)).combine_chunks().filter(mask).take(take)
            if empty_null:
                c = pc.if_else(pc.equal(c, ""), pa.scalar(None, pa.string()), c)
            return c

        action_col = actions.filter(mask).take(take)
        item_col = col("item_id")
        answer_col = col("user_answer")
        ts_np, lines = ts_np[order], lines[order]
        m = len(order)
        self._events.append(
            pa.table(
                {
                    "user_id": pa.DictionaryArray.from_arrays(
                        pa.array(np.zeros(m, dtype=np.int32)), pa.array([f.stem])
                    ),
                    "timestamp": pa.array(ts_np),
                    "action_type": action_col,
                    "item_id": item_col,
                    "source": col("source"),
                    "platform": col("platform"),
                    "cursor_time": cursor.filter(mask).take(take),
                    "user_answer": answer_col,
                }
            )
        )
        self._event_rows += m
        if self._event_rows >= self.flush_rows:
            self._flush_events()
        self._derive(
            f.stem,
            idx,
            action_col.to_pylist(),
            item_col.to_pylist(),
            answer_col.to_pylist(),
            ts_np.tolist(),
            lines.tolist(),
            data,
        )

    def _derive(
        self,
        user: str,
        idx: int,
        actions: list[str],
        items: list[str | None],
        answers: list[str | None],
        stamps: list[int],
        lines: list[int],
        data: bytes,
    ) -> None:
        """The sequential pass: pending responses resolved at their bundle's submit."""
        qindex, bundle_of = self._qindex, self._bundle_of
        pending: dict[int, int] = {}  # question row -> position of its last response
        entered: dict[str, int] = {}  # bundle -> time of its last enter
        out = self._answers  # one submit's answers: in the order of their winning responses
        superseded = never = 0
        other: dict[str, int] = {}
        unknown: list[int] = []
        for i, action in enumerate(actions):
            if action == "respond":
                qi = qindex.get(items[i] or "")
                if qi is None:
                    unknown.append(i)
                    continue
                if qi in pending:
                    superseded += 1
                pending[qi] = i
                continue
            other[action] = other.get(action, 0) + 1
            item = items[i]
            if item is None:
                continue
            if action == "enter":
                entered[item] = stamps[i]
                drop = [qi for qi in pending if bundle_of[qi] == item]
                for qi in drop:
                    del pending[qi]
                never += len(drop)
            elif action == "submit" and pending:
                resolved = sorted((pos, qi) for qi, pos in pending.items() if bundle_of[qi] == item)
                start = entered.get(item)
                elapsed = stamps[i] - start if start is not None else None
                for pos, qi in resolved:
                    del pending[qi]
                    out["user"].append(user)
                    out["qi"].append(qi)
                    out["answer"].append(answers[pos] or "")
                    out["ts"].append(stamps[i])
                    out["elapsed"].append(elapsed)
                    out["file"].append(idx)
                    out["line"].append(lines[pos])
        never += len(pending)
        if superseded:
            self.writer.skip("response superseded by a later response", superseded)
        if never:
            self.writer.skip("response never submitted", never)
        for action, n in other.items():
            self.writer.skip(f"{action} action (kept in events)", n)
        if unknown:
            raws = _raw_lines(data, [lines[i] for i in unknown])
            self.writer.reject_many(
                np.full(len(unknown), idx, dtype=np.int32),
                [lines[i] for i in unknown],
                "unknown question",
                raws,
                [f"question_id {items[i]!r} is not in questions.csv" for i in unknown],
            )
        if len(out["user"]) >= self.flush_rows:
            self._flush_answers()

    def _flush_answers(self) -> None:
        out = self._answers
        if not out["user"]:
            return
        qi = pa.array(out["qi"], pa.int64())
        answers = pa.array(out["answer"], pa.string())
        self._empty += int(pc.sum(pc.cast(pc.equal(answers, ""), pa.int64())).as_py() or 0)
        correct = pc.cast(
            pc.fill_null(pc.equal(answers, self.q.correct_answer.take(qi)), False), pa.int8()
        )
        ts = pa.array(out["ts"], pa.int64())
        self.writer.add_interactions(
            pa.table(
                {
                    "user_id": pa.array(out["user"], pa.string()),
                    "item_id": self.q.ids.take(qi),
                    "concept_ids": self.q.tags.take(qi),
                    "correct": correct,
                    "timestamp": ts,
                    "elapsed_ms": pa.array(out["elapsed"], pa.int64()),
                    "_file": pa.array(out["file"], pa.int32()),
                    "_line": pa.array(out["line"], pa.int64()),
                    "_order": ts,
                }
            )
        )
        for v in out.values():
            v.clear()

    def _flush_events(self) -> None:
        if self._events:
            self.writer.add_events(pa.concat_tables(self._events, promote_options="permissive"))
            self._events, self._event_rows = [], 0


class EdNetKT2Loader(_ActionLoader):
    name = "ednet-kt2"
    summary = "EdNet KT2 action logs (enter/respond/submit) + questions.csv; answers at submit"


class EdNetKT3Loader(_ActionLoader):
    name = "ednet-kt3"
    summary = "EdNet KT3 action logs (with lectures, explanations) + questions.csv"


class EdNetKT4Loader(_ActionLoader):
    name = "ednet-kt4"
    summary = "EdNet KT4 action logs (all actions, cursor_time) + questions.csv"
    required = ("timestamp", "action_type", "item_id", "cursor_time", "user_answer")
