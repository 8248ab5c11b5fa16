"""EdNet (Riiid's Santa TOEIC app): what the KT1 and KT2-KT4 loaders share.

EdNet ships one CSV file per learner (``u<id>.csv``), in a directory or a .zip archive, and
the EdNet-Contents tables beside them. The choices common to all four formats:

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

This module holds those shared parts: reading questions.csv (:func:`read_questions`) and the
base loader (:class:`EdNetLoader`). The formats themselves are in :mod:`.ednet_kt1` (answer
logs) and :mod:`.ednet_actions` (KT2-KT4 action logs); the learner files and their parsing
are in :mod:`.ednet_files`.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .base import Loader
from .ednet_files import LearnerFiles, Parsed, parse_ints, parse_strings
from .errors import IngestError, require_columns
from .inputs import InputFile, find_sibling

QUESTIONS_NAMES = ("questions.csv", "questions.csv.gz")

#: A rejected row of a learner file: (line, reason, raw text, detail).
BadRow = tuple[int, str, str, str]


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
    """The answer key and tags of EdNet-Contents questions.csv (and bundles: ``need_bundle``)."""
    parsed = parse_strings(f.read_bytes(), f.name, encoding)
    required = ["question_id", "correct_answer", "tags"] + (["bundle_id"] if need_bundle else [])
    require_columns(
        parsed.header, required, file=f.name, header=",".join(parsed.header), what="questions.csv"
    )
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
            vals, _ = parse_ints(col)
            col = pc.cast(vals, pa.int8(), safe=False)
        elif c == "deployed_at":
            vals, _ = parse_ints(col)
            col = pc.cast(vals, pa.timestamp("ms", tz="UTC"))
        else:
            col = pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col)
        if c == "bundle_id":
            bundle = col
        cols[c] = col
    return Questions(f.name, ids, answers, tags, bundle, pa.table(cols))


# ---------------------------------------------------------------------- the base loader
class EdNetLoader(Loader):
    """Shared: finding questions.csv and the learner files, parsing and rejecting rows."""

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

    def _setup(self) -> tuple[Questions, LearnerFiles]:
        qfile = self._questions_file()
        questions = read_questions(qfile, self.ctx.encoding, need_bundle=self.need_bundle)
        self.writer.note("answer_key", qfile.name)
        self.writer.add_items(questions.items)
        tags = pc.unique(pc.list_flatten(questions.tags)).to_pylist()
        self.writer.add_concepts(tags, [None] * len(tags))
        inputs = LearnerFiles(self.ctx.input, qfile)
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

    def _parse(
        self, data: bytes, name: str, encoding: str, required: tuple[str, ...], what: str
    ) -> tuple[Parsed, pa.Array, np.ndarray] | None:
        """A learner file's rows, counted as read, with their timestamps and where those are
        not integers (:func:`parse_ints`); None when the file is empty."""
        parsed = parse_strings(data, name, encoding)
        if not parsed.header or parsed.header == [""]:
            return None
        require_columns(
            parsed.header, required, file=name, header=",".join(parsed.header), what=what
        )
        self.writer.count_read(parsed.table.num_rows + len(parsed.bad))
        ts, bad_ts = parse_ints(parsed.table.column("timestamp"))
        return parsed, ts, bad_ts

    def _reject_rows(self, file: int, bad: list[BadRow]) -> None:
        """Reject a file's bad rows, in line order."""
        if bad:
            bad.sort()
            self.writer.reject_many(
                np.full(len(bad), file, dtype=np.int32),
                [b[0] for b in bad],
                [b[1] for b in bad],
                [b[2] for b in bad],
                [b[3] for b in bad],
            )
