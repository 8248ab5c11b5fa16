"""The research benchmark file formats most published knowledge-tracing numbers are on.

* ``three-line``: ``length`` / comma-separated ids / comma-separated answers per learner
  (DKVMN and original DKT files; trailing commas allowed). The first line may also be
  ``index,user`` (AKT's ASSIST2015 folds), in which case the user id is kept.
* ``four-line``: AKT's ``pid`` files: ``index,user`` / problem ids / skill ids / answers.
* ``pykt``: pyKT's split CSV ``fold,uid,concepts,responses[,questions,...]`` with the sequences
  comma-joined in one cell; the fold is kept (fold -1 = the test learners).
* ``tabular``: tab-separated ``user item timestamp correct skill`` files (with a header),
  with an optional ``q_mat.npz`` item x skill matrix giving every item's skills.
* ``dkt-synthetic``: DKT's synthetic rows: one student per line, 0/1 answers to questions
  0..Q-1 in a fixed order, concepts from the matching ``info/*_info.txt`` file.

Where a file name carries a split or a fold (``train``, ``valid``, ``test``, a trailing
number), it is kept in the ``split`` and ``fold`` columns so that evaluation can use exactly
the published split.

Ids in these files are integers re-indexed by whoever prepared them; they are kept as
strings, as the source names them. Learners without an id of their own are named
``<file stem>:<record number>`` so that ids are unique across files.

A line longer than ``max_line_bytes`` (every loader here has the option; default
:data:`~data_loaders.inputs.MAX_LINE_BYTES`, 1 MiB) is not held in memory: its record is
rejected (``line too long``) and the ingest goes on. Timestamps (``tabular``, pyKT's
``timestamps``) are milliseconds since 1970-01-01 UTC and must be whole numbers in
[1970-01-01, 2200-01-01) (:data:`TIMESTAMP_MAX_MS`: the canonical ``timestamp[ms]`` column,
and pandas' nanosecond timestamps which end in 2262, hold every such value); anything else is
a rejected row (``bad timestamp``: not a finite whole number, e.g. ``nan``, ``1e400``, ``1.5``;
``timestamp out of range``), never a silent null.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from .base import Loader, Option
from .errors import IngestError
from .inputs import (
    MAX_LINE_BYTES,
    PREVIEW_BYTES,
    InputFile,
    LongLine,
    iter_lines_bounded,
    list_files,
    too_long_detail,
)
from .textutil import ChunkBuilder, multi_skill_runs

_SPLIT_RE = re.compile(r"(train|valid|validation|dev|test)[_-]?(\d+)?", re.IGNORECASE)
_SIDE_FILE_RE = re.compile(
    r"(qid_sid|qname_qid|sname_sid|skill_mapping|keyid2idx|info|readme|\.json|\.npz|\.md)",
    re.IGNORECASE,
)


#: ``-o max_line_bytes=N``: every loader of this module reads lines of at most this many bytes.
MAX_LINE_OPTION = Option(
    "max_line_bytes",
    int,
    MAX_LINE_BYTES,
    "lines longer than this many bytes are rejected ('line too long') without being parsed",
)
#: Timestamps are milliseconds since 1970-01-01 UTC in [0, TIMESTAMP_MAX_MS): 2200-01-01.
TIMESTAMP_MAX_MS = 7_258_118_400_000
BAD_TIMESTAMP = "bad timestamp"
TIMESTAMP_OUT_OF_RANGE = "timestamp out of range"


def parse_timestamp(text: str, field: str = "timestamp") -> int | tuple[str, str]:
    """A timestamp cell (milliseconds since 1970-01-01 UTC) -> its value, or (reason, detail).

    Whole numbers, also written as decimals (``1600000000000.0``, ``1.6e12``), are accepted;
    ``nan``, infinities, fractions and text are ``bad timestamp``; values outside
    [1970-01-01, 2200-01-01) are ``timestamp out of range``.
    """
    t = text.strip()
    try:
        value = int(t)
    except ValueError:
        try:
            f = float(t)
        except ValueError:
            return BAD_TIMESTAMP, f"{field}={text[:100]!r} is not a number"
        if not math.isfinite(f) or not f.is_integer():
            return BAD_TIMESTAMP, (
                f"{field}={text[:100]!r} is not a finite whole number of milliseconds"
            )
        value = int(f)
    if not 0 <= value < TIMESTAMP_MAX_MS:
        return TIMESTAMP_OUT_OF_RANGE, (
            f"{field}={text[:100]!r} is outside 1970-01-01..2200-01-01 UTC "
            f"(0 <= milliseconds < {TIMESTAMP_MAX_MS})"
        )
    return value


def _max_line(opts: dict) -> int:
    n = int(opts.get("max_line_bytes", MAX_LINE_BYTES))
    if n < 1:
        raise IngestError(f"option 'max_line_bytes' must be positive, got {n}")
    return n


def _text(line: str | LongLine) -> str:
    """A line as kept in rejected.parquet: an over-long line's first bytes."""
    return line.preview() if isinstance(line, LongLine) else line


def split_from_name(name: str) -> tuple[str | None, int | None]:
    """``assist2009_pid_train1.csv`` -> ('train', 1); ``builder_test.csv`` -> ('test', None)."""
    m = _SPLIT_RE.search(Path(name).name)
    if not m:
        return None, None
    word = m.group(1).lower()
    split = {"validation": "valid", "dev": "valid"}.get(word, word)
    fold = int(m.group(2)) if m.group(2) else None
    return split, fold


def _parse_ints(text: str) -> list[str]:
    """Comma-separated tokens, tolerating a trailing comma and spaces."""
    return [t.strip() for t in text.strip().rstrip(",").split(",") if t.strip() != ""]


def _data_files(root: Path) -> list[InputFile]:
    files = list_files(root)
    if root.is_dir() or (root.is_file() and root.suffix == ".zip"):
        files = [f for f in files if not _SIDE_FILE_RE.search(Path(f.member or f.path).name)]
    return files


def _answers(tokens: list[str], file: str, line: int) -> list[int] | str:
    """0/1 answers, or the reason they are not."""
    out = []
    for t in tokens:
        if t == "0" or t == "1":
            out.append(int(t))
        elif t in ("0.0", "1.0"):
            out.append(int(float(t)))
        else:
            return f"answer {t!r} is not 0 or 1"
    return out


class _LineLoader(Loader):
    """Shared machinery of the record-per-N-lines formats."""

    lines_per_record = 3

    def load(self) -> None:
        files = _data_files(self.ctx.input)
        if not files:
            raise IngestError("no data files found", file=str(self.ctx.input))
        self.start_progress(files)
        builder = ChunkBuilder(self.writer, 0)
        self._merge_key = 0
        for f in files:
            idx = self.register(f)
            builder.file_index = idx
            self._file_records(f, idx, builder)
            self.writer.progress.advance(f.size())
        builder.flush()
        names = load_concept_names(self.ctx.input, self.ctx.concepts)
        if names:
            self.writer.add_concepts(list(names), list(names.values()), catalogue=False)

    def _file_records(self, f: InputFile, idx: int, builder: ChunkBuilder) -> None:
        """Group the file's non-blank lines by ``lines_per_record``, streaming.

        A line over ``max_line_bytes`` still counts as one of its record's lines (so the
        records after it stay aligned); the record is rejected as ``line too long``.
        """
        split, fold = split_from_name(f.member or f.path.name)
        k = self.lines_per_record
        group: list[str | LongLine] = []
        start_line = 0
        record = 0
        for lineno, line in iter_lines_bounded(f, self.ctx.encoding, _max_line(self.opts)):
            if isinstance(line, str) and not line.strip():
                continue
            if not group:
                start_line = lineno
            group.append(line)
            if len(group) == k:
                record += 1
                long = [(i, g) for i, g in enumerate(group, 1) if isinstance(g, LongLine)]
                if long:
                    self._reject_record(
                        idx,
                        start_line,
                        LongLine.REASON,
                        [_text(g) for g in group],
                        1,
                        f"record line {long[0][0]} of {k}: {long[0][1].detail}",
                    )
                else:
                    lines = [g for g in group if isinstance(g, str)]
                    self._record(f, idx, start_line, record, lines, builder, split, fold)
                group = []
        if group:
            last = group[-1]
            self.writer.count_read(max(1, len(_parse_ints(last))) if isinstance(last, str) else 1)
            self.writer.reject(
                idx,
                start_line,
                "truncated record",
                "\n".join(_text(g) for g in group)[:2000],
                f"expected {k} lines per learner, file ends after {len(group)}",
            )

    def _record(
        self,
        f: InputFile,
        idx: int,
        line: int,
        record: int,
        group: list[str],
        builder: ChunkBuilder,
        split: str | None,
        fold: int | None,
    ) -> None:
        raise NotImplementedError

    def _reject_record(
        self, idx: int, line: int, reason: str, group: list[str], n: int, detail: str | None = None
    ) -> None:
        self.writer.count_read(n)
        self.writer.reject(idx, line, reason, "\n".join(group)[:2000], detail)


def load_concept_names(root: Path, given: Path | None) -> dict[str, str]:
    """Concept id -> name from a side file: ``--concepts`` or one found beside the data.

    Understood: JSON objects mapping name -> id (AKT's ``skill.json``) or id -> name, and
    two-column tab-separated files (DKVMN's ``*_sname_sid``, ``*skill_mapping.txt``) in
    either column order (the integer column is the id).
    """
    if given is not None:
        candidates = [Path(given)]
        if not candidates[0].is_file():
            raise IngestError("concepts file not found", file=str(given))
    else:
        base = root if root.is_dir() else root.parent
        candidates = sorted(
            [*base.glob("skill.json"), *base.glob("*sname_sid"), *base.glob("*skill_mapping.txt")]
        )
    if not candidates:
        return {}
    path = candidates[0]
    text = InputFile(name=str(path), path=path).read_text()
    out: dict[str, str] = {}
    if path.suffix == ".json" or text.lstrip().startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise IngestError(f"not valid JSON: {exc}", file=str(path)) from exc
        if not isinstance(obj, dict):
            raise IngestError("expected a JSON object of concept names", file=str(path))
        for k, v in obj.items():
            if isinstance(v, int) or (isinstance(v, str) and v.isdigit() and not k.isdigit()):
                out[str(v)] = str(k).strip()
            else:
                out[str(k)] = str(v).strip()
        return out
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) < 2:
            raise IngestError(
                "expected two tab-separated columns (name, id)", file=str(path), line=lineno
            )
        a, b = parts[0], parts[1]
        if b.isdigit() and not a.isdigit():
            out[b] = a
        else:
            out[a] = b
    return out


def _user_from_header(header: str, stem: str, record: int) -> tuple[str, int | None]:
    """``n`` (length only) or ``index,user``: returns (user id, declared length or None)."""
    parts = [p.strip() for p in header.strip().rstrip(",").split(",")]
    if len(parts) == 1:
        if not parts[0].isdigit():
            raise ValueError(f"expected a sequence length, got {header.strip()!r}")
        return f"{stem}:{record}", int(parts[0])
    if len(parts) == 2:
        return parts[1], None
    raise ValueError(f"expected 'length' or 'index,user', got {header.strip()!r}")


class ThreeLineLoader(_LineLoader):
    name = "three-line"
    summary = "length (or index,user) / ids / answers per learner (DKVMN, DKT, AKT folds)"
    options = (
        Option("id_kind", str, "concept", "what the id line holds: 'concept' or 'item'"),
        MAX_LINE_OPTION,
    )
    lines_per_record = 3

    def _record(self, f, idx, line, record, group, builder, split, fold):  # type: ignore[override]
        ids = _parse_ints(group[1])
        try:
            user, length = _user_from_header(group[0], f.stem, record)
        except ValueError as exc:
            self._reject_record(idx, line, "bad header line", group, max(len(ids), 1), str(exc))
            return
        answers = _answers(_parse_ints(group[2]), f.name, line + 2)
        if isinstance(answers, str):
            self._reject_record(idx, line + 2, "answer not 0 or 1", group, len(ids), answers)
            return
        if len(ids) != len(answers) or (length is not None and length != len(ids)):
            self._reject_record(
                idx,
                line,
                "length mismatch",
                group,
                max(len(ids), len(answers)),
                f"header says {length}, {len(ids)} ids, {len(answers)} answers",
            )
            return
        self.writer.count_read(len(ids))
        if self.opts["id_kind"] == "item":
            concepts: list[list[str]] = [[] for _ in ids]
            items = ids
        else:
            concepts = [[c] for c in ids]
            items = ids  # the skill stands in for the item (no problem ids in the file)
        builder.add_sequence(user, items, concepts, answers, line + 1, split=split, fold=fold)


class FourLineLoader(_LineLoader):
    name = "four-line"
    summary = "AKT pid files: index,user / problem ids / skill ids / answers"
    options = (MAX_LINE_OPTION,)
    lines_per_record = 4

    def _record(self, f, idx, line, record, group, builder, split, fold):  # type: ignore[override]
        items = _parse_ints(group[1])
        skills = _parse_ints(group[2])
        try:
            user, length = _user_from_header(group[0], f.stem, record)
        except ValueError as exc:
            self._reject_record(idx, line, "bad header line", group, max(len(items), 1), str(exc))
            return
        answers = _answers(_parse_ints(group[3]), f.name, line + 3)
        if isinstance(answers, str):
            self._reject_record(idx, line + 3, "answer not 0 or 1", group, len(items), answers)
            return
        if not (len(items) == len(skills) == len(answers)) or (
            length is not None and length != len(items)
        ):
            self._reject_record(
                idx,
                line,
                "length mismatch",
                group,
                max(len(items), len(answers)),
                f"{len(items)} problems, {len(skills)} skills, {len(answers)} answers",
            )
            return
        self.writer.count_read(len(items))
        keys = multi_skill_runs(items, answers, skills, self._merge_key)
        self._merge_key = keys[-1] + 1 if keys else self._merge_key
        builder.add_sequence(
            user,
            items,
            [[s] for s in skills],
            answers,
            line + 1,
            merge=keys,
            split=split,
            fold=fold,
        )


class PyKTLoader(Loader):
    name = "pykt"
    summary = "pyKT split CSV: fold,uid,concepts,responses (fold -1 = test)"
    options = (MAX_LINE_OPTION,)

    def load(self) -> None:
        files = [f for f in _data_files(self.ctx.input) if ".csv" in f.name.lower()]
        if not files:
            raise IngestError("no .csv files found", file=str(self.ctx.input))
        self.start_progress(files)
        builder = ChunkBuilder(self.writer, 0)
        merge_key = 0
        max_line = _max_line(self.opts)
        csv.field_size_limit(max(max_line, csv.field_size_limit()))
        for f in files:
            idx = self.register(f)
            builder.file_index = idx
            long_lines: list[tuple[int, LongLine]] = []

            def text_lines(
                f: InputFile = f, long_lines: list[tuple[int, LongLine]] = long_lines
            ) -> Iterator[str]:
                for lineno, text in iter_lines_bounded(f, self.ctx.encoding, max_line):
                    if isinstance(text, LongLine):
                        long_lines.append((lineno, text))
                        yield ""  # an empty row in its place: the reader's line count holds
                    else:
                        yield text

            reader = csv.reader(text_lines())
            header = next(reader, None)
            if header is None:
                continue
            if long_lines:
                lineno, long = long_lines[0]
                raise IngestError(f"the header {long.detail}", file=f.name, line=lineno)
            header = [h.strip() for h in header]
            for col in ("fold", "uid", "concepts", "responses"):
                if col not in header:
                    raise IngestError(
                        f"missing required column '{col}' (header: {','.join(header)})",
                        file=f.name,
                        line=1,
                        field=col,
                    )
            pos = {h: i for i, h in enumerate(header)}
            has_q = "questions" in pos
            has_t = "timestamps" in pos
            line = 1
            for row in reader:
                line = reader.line_num
                for lineno, long in long_lines:
                    self.writer.count_read(1)
                    self.writer.reject(idx, lineno, LongLine.REASON, long.preview(), long.detail)
                long_lines.clear()
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    self.writer.count_read(1)
                    self.writer.reject(
                        idx,
                        line,
                        "wrong number of fields",
                        ",".join(row)[:2000],
                        f"expected {len(header)}, got {len(row)}",
                    )
                    continue
                concepts = _parse_ints(row[pos["concepts"]])
                answers_tok = _parse_ints(row[pos["responses"]])
                # pyKT pads with -1 to a fixed length: drop the padding
                pad = [i for i, a in enumerate(answers_tok) if a == "-1"]
                keep = (
                    len(answers_tok) - len(pad)
                    if pad and pad[0] == len(answers_tok) - len(pad)
                    else len(answers_tok)
                )
                concepts, answers_tok = concepts[:keep], answers_tok[:keep]
                answers = _answers(answers_tok, f.name, line)
                try:
                    fold = int(row[pos["fold"]])
                except ValueError:
                    self.writer.count_read(max(1, len(concepts)))
                    self.writer.reject(
                        idx,
                        line,
                        "bad fold",
                        ",".join(row)[:2000],
                        f"fold {row[pos['fold']]!r} is not an integer",
                    )
                    continue
                if isinstance(answers, str):
                    self.writer.count_read(len(concepts))
                    self.writer.reject(
                        idx, line, "answer not 0 or 1", ",".join(row)[:2000], answers
                    )
                    continue
                items = _parse_ints(row[pos["questions"]])[:keep] if has_q else concepts
                if len(concepts) != len(answers) or len(items) != len(answers):
                    self.writer.count_read(max(len(concepts), len(answers)))
                    self.writer.reject(
                        idx,
                        line,
                        "length mismatch",
                        ",".join(row)[:2000],
                        f"{len(concepts)} concepts, {len(answers)} responses",
                    )
                    continue
                stamps = None
                if has_t:
                    parsed = self._stamps(_parse_ints(row[pos["timestamps"]])[:keep])
                    if isinstance(parsed, tuple):
                        problem: tuple[str, str] | None = parsed
                    elif len(parsed) != len(answers):
                        problem = (
                            "length mismatch",
                            f"{len(parsed)} timestamps, {len(answers)} responses",
                        )
                    else:
                        problem, stamps = None, parsed
                    if problem is not None:
                        self.writer.count_read(len(answers))
                        self.writer.reject(idx, line, problem[0], ",".join(row)[:2000], problem[1])
                        continue
                self.writer.count_read(len(answers))
                # concepts may be multi-skill joined with '_' (pyKT's convention)
                concept_lists = [c.split("_") for c in concepts]
                split = "test" if fold == -1 else "train"
                merge = None
                if has_q:
                    merge = multi_skill_runs(items, answers, concepts, merge_key)
                    merge_key = merge[-1] + 1 if merge else merge_key
                builder.add_sequence(
                    row[pos["uid"]].strip(),
                    items,
                    concept_lists,
                    answers,
                    line,
                    merge=merge,
                    timestamps=stamps,
                    split=split,
                    fold=fold,
                )
            self.writer.progress.advance(f.size())
        builder.flush()

    @staticmethod
    def _stamps(tokens: list[str]) -> list[int | None] | tuple[str, str]:
        """A row's timestamps (-1: none), or (reason, detail) for the first bad one."""
        out: list[int | None] = []
        for i, t in enumerate(tokens):
            if t in ("-1", ""):
                out.append(None)
                continue
            v = parse_timestamp(t, "timestamps")
            if isinstance(v, tuple):
                return v[0], f"position {i + 1}: {v[1]}"
            out.append(v)
        return out


class TabularLoader(Loader):
    """Tab-separated ``user_id item_id timestamp correct skill_id`` files with a header.

    ``correct`` must be ``0`` or ``1``; ``timestamp`` (optional; empty = none) must be a whole
    number of milliseconds since 1970-01-01 UTC in [1970-01-01, 2200-01-01)
    (:func:`parse_timestamp`). A row that breaks either is rejected with the field and the
    value (``correct not 0 or 1``, ``bad timestamp``, ``timestamp out of range``) and the
    ingest goes on: no value is turned into a null. Rows longer than ``max_line_bytes`` are
    rejected (``line too long``), rows with another number of fields than the header
    (``wrong number of fields``). Rejected rows carry their real line number in the file.
    """

    name = "tabular"
    summary = "tab-separated user item timestamp correct skill files, optional q_mat.npz"
    options = (
        Option("q_matrix", bool, True, "use q_mat.npz beside the files for item skills"),
        MAX_LINE_OPTION,
    )

    def load(self) -> None:
        import pyarrow.csv as pacsv

        from .inputs import check_utf8

        root = self.ctx.input
        max_line = _max_line(self.opts)
        files = [f for f in _data_files(root)]
        if not files:
            raise IngestError("no data files found", file=str(root))
        qmat = self._q_matrix(root) if self.opts["q_matrix"] else None
        if qmat is not None:
            self.writer.note("concepts_from", "q_mat.npz (item x skill matrix)")
        self.start_progress(files)
        order = 0
        for f in files:
            idx = self.register(f)
            split, fold = split_from_name(f.member or f.path.name)
            data = f.read_bytes()
            data = check_utf8(data, f.name, self.ctx.encoding)
            if not data.strip():
                continue
            scan = _scan_lines(data, max_line)
            if scan.header_too_long is not None:
                raise IngestError(
                    f"the header {too_long_detail(scan.header_too_long[1], max_line)}",
                    file=f.name,
                    line=scan.header_too_long[0],
                )
            for lineno, size, head in scan.long:
                self.writer.count_read(1)
                self.writer.reject(
                    idx, lineno, LongLine.REASON, head, too_long_detail(size, max_line)
                )
            data = scan.data
            bad: list[tuple[int | None, str]] = []

            def handler(row: pacsv.InvalidRow, bad: list = bad) -> str:
                bad.append((row.number, row.text))
                return "skip"

            try:
                table = pacsv.read_csv(
                    io.BytesIO(data),
                    read_options=pacsv.ReadOptions(use_threads=False),
                    parse_options=pacsv.ParseOptions(delimiter="\t", invalid_row_handler=handler),
                    convert_options=pacsv.ConvertOptions(
                        column_types={
                            c: pa.string()
                            for c in ("user_id", "item_id", "timestamp", "correct", "skill_id")
                        }
                    ),
                )
            except pa.ArrowInvalid as exc:
                raise IngestError(
                    f"cannot parse as tab-separated values: {exc}", file=f.name
                ) from exc
            cols = table.column_names
            for col in ("user_id", "item_id", "correct"):
                if col not in cols:
                    raise IngestError(
                        f"missing required column '{col}' (header: {cols})",
                        file=f.name,
                        line=1,
                        field=col,
                    )
            n = table.num_rows
            bad_lines, lines = scan.row_lines([b[0] for b in bad], n)
            for line, (_, text) in zip(bad_lines, bad, strict=True):
                self.writer.count_read(1)
                self.writer.reject(idx, line, "wrong number of fields", text[:2000])
            self.writer.count_read(n)
            correct = table.column("correct").to_pylist()
            ok = np.array([c in ("0", "1") for c in correct], dtype=bool)
            if not ok.all():
                badi = np.flatnonzero(~ok)
                self.writer.reject_many(
                    np.full(len(badi), idx),
                    lines[badi],
                    "correct not 0 or 1",
                    [scan.raw(int(line)) for line in lines[badi]],
                    [f"correct={correct[i]!r}" for i in badi],
                )
            stamps: list[int | None] | None = None
            if "timestamp" in cols:
                stamps, problems = _timestamps(table.column("timestamp").to_pylist(), ok)
                if problems:
                    rows = np.array([p[0] for p in problems], dtype=np.int64)
                    self.writer.reject_many(
                        np.full(len(rows), idx),
                        lines[rows],
                        [p[1] for p in problems],
                        [scan.raw(int(line)) for line in lines[rows]],
                        [p[2] for p in problems],
                    )
                    ok[rows] = False
            if not ok.all():
                table = table.filter(pa.array(ok))
                lines = lines[ok]
                if stamps is not None:
                    stamps = [v for v, keep in zip(stamps, ok, strict=True) if keep]
            items = table.column("item_id").to_pylist()
            if qmat is not None:
                concept_lists = [qmat.get(int(it), []) if it.isdigit() else [] for it in items]
            elif "skill_id" in table.column_names:
                concept_lists = [
                    [s] if s not in (None, "") else [] for s in table.column("skill_id").to_pylist()
                ]
            else:
                concept_lists = [[] for _ in items]
            m = table.num_rows
            chunk: dict[str, pa.Array] = {
                "user_id": table.column("user_id"),
                "item_id": table.column("item_id"),
                "concept_ids": pa.array(concept_lists, pa.list_(pa.string())),
                "correct": pa.array(
                    np.array([int(c) for c in table.column("correct").to_pylist()], dtype=np.int8)
                ),
                "_file": pa.array(np.full(m, idx, dtype=np.int32)),
                "_line": pa.array(lines),
                "_order": pa.array(np.arange(order, order + m, dtype=np.int64)),
            }
            # the files' timestamp is 0 everywhere where the source has no clock
            if stamps is not None and any(v not in (None, 0) for v in stamps):
                chunk["timestamp"] = pa.array(stamps, pa.int64())
            if split is not None:
                chunk["split"] = pa.array([split] * m, pa.string())
                chunk["fold"] = pa.array([fold] * m, pa.int16())
            order += m
            self.writer.add_interactions(pa.table(chunk))
            self.writer.progress.advance(f.size())

    def _q_matrix(self, root: Path) -> dict[int, list[str]] | None:
        base = root if root.is_dir() else root.parent
        p = base / "q_mat.npz"
        if not p.is_file():
            return None
        try:
            z = np.load(p, allow_pickle=False)
            indptr, indices = z["indptr"], z["indices"]
        except Exception as exc:  # noqa: BLE001 - any unreadable npz is the same error
            raise IngestError(
                f"not a scipy CSR matrix (.npz with indptr/indices): {exc}", file=str(p)
            ) from exc
        return {
            i: [str(int(s)) for s in indices[indptr[i] : indptr[i + 1]]]
            for i in range(len(indptr) - 1)
        }


def _timestamps(
    values: list[str | None], check: np.ndarray
) -> tuple[list[int | None], list[tuple[int, str, str]]]:
    """Timestamp cells -> values (empty: None) and (row, reason, detail) of the bad ones among
    the rows where ``check`` is true."""
    out: list[int | None] = []
    problems: list[tuple[int, str, str]] = []
    for i, t in enumerate(values):
        if t is None or not t.strip():
            out.append(None)
            continue
        v = parse_timestamp(t) if check[i] else None
        if isinstance(v, tuple):
            problems.append((i, v[0], v[1]))
            v = None
        out.append(v)
    return out, problems


class _LineScan:
    """Where a delimited file's lines are: the physical line number of every row the CSV
    reader sees (it skips empty lines), each line's text for rejected.parquet, and the lines
    over the length limit, blanked out of ``data`` so that the reader skips them too."""

    def __init__(
        self,
        data: bytes,
        starts: np.ndarray,
        rows: np.ndarray,
        long: list[tuple[int, int, str]],
        header_too_long: tuple[int, int] | None,
    ) -> None:
        self.data = data
        self.starts = starts  # offset in ``data`` of every line, then len(data) + 1
        self.rows = rows  # 1-based line numbers of the non-empty lines (header first)
        self.long = long  # (line, size in bytes, first bytes) of each over-long data line
        self.header_too_long = header_too_long  # (line, size) when the header is over-long

    def raw(self, line: int | None) -> str | None:
        """The text of a line (1-based), cut at 2000 characters."""
        if line is None or not 0 < line < len(self.starts):
            return None
        a, b = int(self.starts[line - 1]), int(self.starts[line]) - 1
        return (
            self.data[a : min(b, a + 4 * 2000)]
            .decode("utf-8", errors="replace")[:2000]
            .rstrip("\r\n")
        )

    def row_lines(
        self, bad_numbers: list[int | None], n_parsed: int
    ) -> tuple[list[int | None], np.ndarray]:
        """Line numbers of the rows the reader rejected (its 1-based row numbers, header
        included) and of the ``n_parsed`` rows it kept."""
        bad_index = [b - 1 for b in bad_numbers if b is not None and 0 < b <= len(self.rows)]
        if len(self.rows) - 1 != n_parsed + len(bad_numbers) or len(bad_index) != len(
            bad_numbers
        ):  # pragma: no cover - a reader that counts rows otherwise: number them in order
            skipped = sorted(b for b in bad_numbers if b is not None)
            return list(bad_numbers), _lines_after_skips(n_parsed, skipped)
        keep = np.ones(len(self.rows), dtype=bool)
        keep[0] = False
        keep[bad_index] = False
        return [int(self.rows[i]) for i in bad_index], self.rows[keep]


def _scan_lines(data: bytes, max_bytes: int) -> _LineScan:
    """Find the lines of ``data`` (``\\n`` or ``\\r\\n``; ``\\r`` alone where the file has no
    ``\\n``), without copying it unless a line is over ``max_bytes``."""
    sep = 10 if b"\n" in data or b"\r" not in data else 13
    buf = np.frombuffer(data, dtype=np.uint8)
    step = 1 << 26  # bounded temporary memory: 64 MiB of flags at a time
    parts = [np.flatnonzero(buf[s : s + step] == sep) + s for s in range(0, len(buf), step)]
    nl = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    # line i spans starts[i] .. starts[i + 1] - 1 (its newline, or the end of the text)
    starts = np.concatenate([[0], nl + 1]).astype(np.int64)
    if starts[-1] != len(buf):  # the last line has no newline
        starts = np.append(starts, len(buf) + 1)
    size = np.diff(starts) - 1
    if sep == 10 and len(size):
        ends = starts[1:] - 1
        size = size - ((size > 0) & (buf[np.maximum(ends - 1, 0)] == 13))
    empty = size == 0
    too_long = size > max_bytes
    nonempty = np.flatnonzero(~empty)
    if len(nonempty) and too_long[nonempty[0]]:
        first = int(nonempty[0])
        return _LineScan(data, starts, starts[:0], [], (first + 1, int(size[first])))
    long: list[tuple[int, int, str]] = []
    if too_long.any():
        pieces = []
        prev = 0
        removed = np.zeros(len(starts), dtype=np.int64)
        for i in np.flatnonzero(too_long):
            a, b = int(starts[i]), int(starts[i + 1]) - 1
            head = data[a : a + PREVIEW_BYTES].decode("utf-8", errors="replace")
            long.append((int(i) + 1, int(size[i]), head))
            pieces.append(data[prev:a])
            prev = b  # keep the newline: an empty line the reader skips
            removed[i + 1] = b - a
        pieces.append(data[prev:])
        data = b"".join(pieces)
        starts = starts - np.cumsum(removed)
    rows = np.flatnonzero(~empty & ~too_long).astype(np.int64) + 1
    return _LineScan(data, starts, rows, long, None)


def _lines_after_skips(n: int, skipped_lines: list[int]) -> np.ndarray:
    """Line numbers of ``n`` parsed rows (data starts on line 2) around skipped lines."""
    out = np.empty(n, dtype=np.int64)
    skipped = set(skipped_lines)
    line = 2
    for i in range(n):
        while line in skipped:
            line += 1
        out[i] = line
        line += 1
    return out


class DKTSyntheticLoader(Loader):
    name = "dkt-synthetic"
    summary = "DKT synthetic rows: one student per line, answers to questions 0..Q-1"
    options = (
        Option("info", str, "", "info file (question stats and concept); default: info/ beside"),
        Option(
            "namespace",
            str,
            "auto",
            "prefix item and concept ids with the file stem: 'auto' (when several files), "
            "'yes' or 'no'",
        ),
        MAX_LINE_OPTION,
    )

    def load(self) -> None:
        root = self.ctx.input
        files = [
            f
            for f in list_files(root)
            if "info" not in Path(f.member or f.path).parts
            and not f.name.endswith(("_info.txt", ".md"))
        ]
        if not files:
            raise IngestError("no data files found", file=str(root))
        self.start_progress(files)
        builder = ChunkBuilder(self.writer, 0)
        seen_concepts: set[str] = set()
        ns = self.opts["namespace"]
        max_line = _max_line(self.opts)
        if ns not in ("auto", "yes", "no"):
            raise IngestError(f"option 'namespace' expects auto, yes or no, got {ns!r}")
        # every version of the synthetic data draws its own concepts for questions 0..Q-1:
        # item 3 of v0 and item 3 of v1 are different questions, so several files get ids
        # prefixed with their file stem
        namespaced = ns == "yes" or (ns == "auto" and len(files) > 1)
        if namespaced:
            self.writer.note("namespaced_ids", "item and concept ids prefixed with the file stem")
        for f in files:
            idx = self.register(f)
            builder.file_index = idx
            prefix = f"{f.stem}:" if namespaced else ""
            info = self._info(f)
            q = None
            for lineno, raw in iter_lines_bounded(f, self.ctx.encoding, max_line):
                if isinstance(raw, LongLine):
                    self.writer.count_read(1)
                    self.writer.reject(idx, lineno, LongLine.REASON, raw.preview(), raw.detail)
                    continue
                if not raw.strip():
                    continue
                toks = _parse_ints(raw)
                answers = _answers(toks, f.name, lineno)
                if isinstance(answers, str):
                    self.writer.count_read(len(toks))
                    self.writer.reject(idx, lineno, "answer not 0 or 1", raw[:2000], answers)
                    continue
                if q is None:
                    q = len(answers)
                if len(answers) != q:
                    self.writer.count_read(len(answers))
                    self.writer.reject(
                        idx,
                        lineno,
                        "length mismatch",
                        raw[:2000],
                        f"expected {q} answers like the first row, got {len(answers)}",
                    )
                    continue
                self.writer.count_read(len(answers))
                items = [f"{prefix}{i}" for i in range(q)]
                if info is not None:
                    concepts = [[prefix + info[i]] if i < len(info) else [] for i in range(q)]
                else:
                    concepts = [[] for _ in range(q)]
                for c in concepts:
                    seen_concepts.update(c)
                builder.add_sequence(f"{f.stem}:{lineno}", items, concepts, answers, lineno)
            self.writer.progress.advance(f.size())
        builder.flush()

    def _info(self, f: InputFile) -> list[str] | None:
        if self.opts["info"]:
            p = Path(self.opts["info"])
        else:
            p = f.path.parent / "info" / f"{f.stem}_info.txt"
        if not p.is_file():
            return None
        concepts = []
        for i, line in enumerate(p.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            # the published info files are tab-separated, some versions comma-separated
            parts = re.split(r"[\t,]", line.strip())
            if len(parts) < 3:
                raise IngestError(
                    "expected 'mean, std, concept, difficulty' separated by tabs or commas",
                    file=str(p),
                    line=i,
                )
            concepts.append(str(int(float(parts[2]))))
        return concepts
