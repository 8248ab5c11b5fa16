"""Helpers shared by the line-oriented research formats: turning parsed records into chunks."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from .writer import DatasetWriter


@dataclass
class ChunkBuilder:
    """Accumulates rows as flat Python lists and flushes them as Arrow chunks.

    Set ``file_index`` before adding a file's sequences. ``_order`` is a counter over the
    whole input, so a learner's answers keep file order. Per-record work is a few list
    extends (one per record, not per interaction), so the research files (hundreds of
    thousands of answers) ingest in about a second.
    """

    writer: DatasetWriter
    file_index: int
    chunk_rows: int = 200_000
    user_id: list[str] = field(default_factory=list)
    item_id: list[str] = field(default_factory=list)
    concepts: list[list[str]] = field(default_factory=list)
    correct: list[int] = field(default_factory=list)
    line: list[int] = field(default_factory=list)
    merge: list[int | None] = field(default_factory=list)
    timestamp: list[int | None] = field(default_factory=list)
    split: str | None = None
    fold: int | None = None
    split_col: list[str | None] = field(default_factory=list)
    fold_col: list[int | None] = field(default_factory=list)
    has_merge: bool = False
    has_timestamp: bool = False
    has_split_col: bool = False
    files: list[int] = field(default_factory=list)
    _offset: int = 0

    def add_sequence(
        self,
        user: str,
        items: list[str],
        concepts: list[list[str]],
        correct: list[int],
        lines: list[int] | int,
        merge: list[int | None] | None = None,
        timestamps: list[int | None] | None = None,
        split: str | None = None,
        fold: int | None = None,
    ) -> None:
        n = len(items)
        self.user_id.extend([user] * n)
        self.item_id.extend(items)
        self.concepts.extend(concepts)
        self.correct.extend(correct)
        self.line.extend([lines] * n if isinstance(lines, int) else lines)
        self.files.extend([self.file_index] * n)
        if merge is not None:
            self.has_merge = True
            self.merge.extend(merge)
        else:
            self.merge.extend([None] * n)
        if timestamps is not None:
            self.has_timestamp = True
            self.timestamp.extend(timestamps)
        else:
            self.timestamp.extend([None] * n)
        if split is not None or fold is not None:
            self.has_split_col = True
        self.split_col.extend([split] * n)
        self.fold_col.extend([fold] * n)
        if len(self.user_id) >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        n = len(self.user_id)
        if n == 0:
            return
        cols: dict[str, pa.Array] = {
            "user_id": pa.array(self.user_id, pa.string()),
            "item_id": pa.array(self.item_id, pa.string()),
            "concept_ids": pa.array(self.concepts, pa.list_(pa.string())),
            "correct": pa.array(np.asarray(self.correct, dtype=np.int8)),
            "_file": pa.array(np.asarray(self.files, dtype=np.int32)),
            "_line": pa.array(np.asarray(self.line, dtype=np.int64)),
            # within a learner, the file position orders the answers
            "_order": pa.array(np.arange(n, dtype=np.int64) + self._offset),
        }
        if self.has_merge:
            cols["_merge"] = pa.array(self.merge, pa.int64())
        if self.has_timestamp:
            cols["timestamp"] = pa.array(self.timestamp, pa.int64())
        if self.has_split_col:
            cols["split"] = pa.array(self.split_col, pa.string())
            cols["fold"] = pa.array(self.fold_col, pa.int16())
        self.writer.add_interactions(pa.table(cols))
        self._offset += n
        for lst in (
            self.user_id,
            self.item_id,
            self.concepts,
            self.correct,
            self.line,
            self.merge,
            self.timestamp,
            self.split_col,
            self.fold_col,
            self.files,
        ):
            lst.clear()


def multi_skill_runs(
    items: list[str], correct: list[int], skills: list[str], start_key: int
) -> list[int]:
    """Run keys for the published ASSISTments files' multi-skill expansion.

    The files repeat an answer to a multi-skill problem once per skill: same learner, same
    problem, same answer, consecutive rows, another skill. Consecutive rows continue a run
    when the problem and the answer are the same and the skill is not yet in the run;
    anything else starts a new run. Keys are unique across the file (``start_key`` onward).
    """
    keys: list[int] = []
    key = start_key - 1
    prev_item: str | None = None
    prev_correct = -1
    run_skills: set[str] = set()
    for it, c, s in zip(items, correct, skills, strict=True):
        if it == prev_item and c == prev_correct and s not in run_skills:
            run_skills.add(s)
        else:
            key += 1
            run_skills = {s}
            prev_item, prev_correct = it, c
        keys.append(key)
    return keys
