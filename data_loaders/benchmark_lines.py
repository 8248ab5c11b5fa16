"""The line-oriented benchmark formats: one learner per record of a few text lines.

* ``three-line`` and ``four-line`` (DKVMN, original DKT and AKT files): a record is 3 or 4
  non-blank lines (:class:`ThreeLineLoader`, :class:`FourLineLoader`);
* ``pykt``: one CSV row per learner with the sequences comma-joined in cells
  (:class:`PyKTLoader`);
* ``dkt-synthetic``: one line of 0/1 answers per learner (:class:`DKTSyntheticLoader`).

What the formats share (splits from file names, answer and timestamp cells, side files) is in
:mod:`.benchmark_formats`, with the rules for ids, over-long lines and timestamps.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .base import Loader, Option
from .benchmark_formats import (
    MAX_LINE_OPTION,
    data_files,
    load_concept_names,
    parse_answers,
    parse_timestamp,
    parse_tokens,
    split_from_name,
)
from .errors import IngestError, require_columns
from .inputs import InputFile, LongLine, iter_lines_bounded, list_files, max_line_bytes
from .textutil import ChunkBuilder, multi_skill_runs


def _text(line: str | LongLine) -> str:
    """A line as kept in rejected.parquet: an over-long line's first bytes."""
    return line.preview() if isinstance(line, LongLine) else line


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


# ---------------------------------------------------------------------- N lines per learner
class _LineLoader(Loader):
    """Shared machinery of the record-per-N-lines formats."""

    lines_per_record = 3

    def load(self) -> None:
        files = data_files(self.ctx.input)
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
        for lineno, line in iter_lines_bounded(f, self.ctx.encoding, max_line_bytes(self.opts)):
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
            self.reject_read(
                idx,
                start_line,
                "truncated record",
                "\n".join(_text(g) for g in group),
                f"expected {k} lines per learner, file ends after {len(group)}",
                rows=max(1, len(parse_tokens(last))) if isinstance(last, str) else 1,
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
        self.reject_read(idx, line, reason, "\n".join(group), detail, rows=n)

    def _user_and_answers(
        self, f: InputFile, idx: int, line: int, record: int, group: list[str], n: int
    ) -> tuple[str, int | None, list[int]] | None:
        """The record's learner and declared length (first line) and its answers (last line);
        None when either is bad (the record, ``n`` answers, is rejected)."""
        try:
            user, length = _user_from_header(group[0], f.stem, record)
        except ValueError as exc:
            self._reject_record(idx, line, "bad header line", group, max(n, 1), str(exc))
            return None
        last = len(group) - 1
        answers = parse_answers(parse_tokens(group[last]))
        if isinstance(answers, str):
            self._reject_record(idx, line + last, "answer not 0 or 1", group, n, answers)
            return None
        return user, length, answers

    def _lengths_agree(
        self, idx: int, line: int, group: list[str], same: bool, n: int, answers: int, detail: str
    ) -> bool:
        """Count a record's ``n`` answers as read; when its line lengths differ (``same`` is
        false) it is rejected as ``length mismatch`` instead."""
        if not same:
            self._reject_record(idx, line, "length mismatch", group, max(n, answers), detail)
            return False
        self.writer.count_read(n)
        return True


class ThreeLineLoader(_LineLoader):
    name = "three-line"
    summary = "length (or index,user) / ids / answers per learner (DKVMN, DKT, AKT folds)"
    options = (
        Option("id_kind", str, "concept", "what the id line holds: 'concept' or 'item'"),
        MAX_LINE_OPTION,
    )
    lines_per_record = 3

    def _record(self, f, idx, line, record, group, builder, split, fold):  # type: ignore[override]
        ids = parse_tokens(group[1])
        head = self._user_and_answers(f, idx, line, record, group, len(ids))
        if head is None:
            return
        user, length, answers = head
        same = len(ids) == len(answers) and (length is None or length == len(ids))
        detail = f"header says {length}, {len(ids)} ids, {len(answers)} answers"
        if not self._lengths_agree(idx, line, group, same, len(ids), len(answers), detail):
            return
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
        items = parse_tokens(group[1])
        skills = parse_tokens(group[2])
        head = self._user_and_answers(f, idx, line, record, group, len(items))
        if head is None:
            return
        user, length, answers = head
        same = len(items) == len(skills) == len(answers) and (
            length is None or length == len(items)
        )
        detail = f"{len(items)} problems, {len(skills)} skills, {len(answers)} answers"
        if not self._lengths_agree(idx, line, group, same, len(items), len(answers), detail):
            return
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


# ---------------------------------------------------------------------- pyKT
@dataclass
class _PyKTRow:
    """One learner's row of a pyKT file, parsed (the -1 padding dropped)."""

    fold: int
    items: list[str]
    concepts: list[str]
    answers: list[int]
    stamps: list[int | None] | None


class PyKTLoader(Loader):
    name = "pykt"
    summary = "pyKT split CSV: fold,uid,concepts,responses (fold -1 = test)"
    options = (MAX_LINE_OPTION,)

    def load(self) -> None:
        files = [f for f in data_files(self.ctx.input) if ".csv" in f.name.lower()]
        if not files:
            raise IngestError("no .csv files found", file=str(self.ctx.input))
        self.start_progress(files)
        builder = ChunkBuilder(self.writer, 0)
        merge_key = 0
        max_line = max_line_bytes(self.opts)
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
            require_columns(
                header,
                ("fold", "uid", "concepts", "responses"),
                file=f.name,
                header=",".join(header),
            )
            pos = {h: i for i, h in enumerate(header)}
            line = 1
            for row in reader:
                line = reader.line_num
                for lineno, long in long_lines:
                    self.reject_read(idx, lineno, LongLine.REASON, long.preview(), long.detail)
                long_lines.clear()
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    self.reject_read(
                        idx,
                        line,
                        "wrong number of fields",
                        ",".join(row),
                        f"expected {len(header)}, got {len(row)}",
                    )
                    continue
                parsed = self._row(row, pos)
                if isinstance(parsed, tuple):  # (reason, detail, answers read)
                    self.reject_read(idx, line, parsed[0], ",".join(row), parsed[1], rows=parsed[2])
                    continue
                self.writer.count_read(len(parsed.answers))
                # concepts may be multi-skill joined with '_' (pyKT's convention)
                concept_lists = [c.split("_") for c in parsed.concepts]
                split = "test" if parsed.fold == -1 else "train"
                merge = None
                if "questions" in pos:
                    merge = multi_skill_runs(
                        parsed.items, parsed.answers, parsed.concepts, merge_key
                    )
                    merge_key = merge[-1] + 1 if merge else merge_key
                builder.add_sequence(
                    row[pos["uid"]].strip(),
                    parsed.items,
                    concept_lists,
                    parsed.answers,
                    line,
                    merge=merge,
                    timestamps=parsed.stamps,
                    split=split,
                    fold=parsed.fold,
                )
            self.writer.progress.advance(f.size())
        builder.flush()

    @classmethod
    def _row(cls, row: list[str], pos: dict[str, int]) -> _PyKTRow | tuple[str, str, int]:
        """A row's sequences, or (reason, detail, rows read) when it is rejected."""
        concepts = parse_tokens(row[pos["concepts"]])
        answers_tok = parse_tokens(row[pos["responses"]])
        # pyKT pads with -1 to a fixed length: drop the padding
        pad = [i for i, a in enumerate(answers_tok) if a == "-1"]
        keep = (
            len(answers_tok) - len(pad)
            if pad and pad[0] == len(answers_tok) - len(pad)
            else len(answers_tok)
        )
        concepts, answers_tok = concepts[:keep], answers_tok[:keep]
        answers = parse_answers(answers_tok)
        try:
            fold = int(row[pos["fold"]])
        except ValueError:
            detail = f"fold {row[pos['fold']]!r} is not an integer"
            return "bad fold", detail, max(1, len(concepts))
        if isinstance(answers, str):
            return "answer not 0 or 1", answers, len(concepts)
        items = parse_tokens(row[pos["questions"]])[:keep] if "questions" in pos else concepts
        if len(concepts) != len(answers) or len(items) != len(answers):
            detail = f"{len(concepts)} concepts, {len(answers)} responses"
            return "length mismatch", detail, max(len(concepts), len(answers))
        stamps = None
        if "timestamps" in pos:
            parsed = cls._stamps(parse_tokens(row[pos["timestamps"]])[:keep])
            if isinstance(parsed, tuple):
                return parsed[0], parsed[1], len(answers)
            if len(parsed) != len(answers):
                detail = f"{len(parsed)} timestamps, {len(answers)} responses"
                return "length mismatch", detail, len(answers)
            stamps = parsed
        return _PyKTRow(fold, items, concepts, answers, stamps)

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


# ---------------------------------------------------------------------- DKT synthetic
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
        ns = self.opts["namespace"]
        max_line = max_line_bytes(self.opts)
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
                    self.reject_read(idx, lineno, LongLine.REASON, raw.preview(), raw.detail)
                    continue
                if not raw.strip():
                    continue
                toks = parse_tokens(raw)
                answers = parse_answers(toks)
                if isinstance(answers, str):
                    self.reject_read(idx, lineno, "answer not 0 or 1", raw, answers, rows=len(toks))
                    continue
                if q is None:
                    q = len(answers)
                if len(answers) != q:
                    self.reject_read(
                        idx,
                        lineno,
                        "length mismatch",
                        raw,
                        f"expected {q} answers like the first row, got {len(answers)}",
                        rows=len(answers),
                    )
                    continue
                self.writer.count_read(len(answers))
                items = [f"{prefix}{i}" for i in range(q)]
                if info is not None:
                    concepts = [[prefix + info[i]] if i < len(info) else [] for i in range(q)]
                else:
                    concepts = [[] for _ in range(q)]
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
