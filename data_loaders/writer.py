"""The dataset writer: streaming, hash-partitioned, deterministic and atomic.

Loaders hand the writer chunks of canonical rows (plus a few internal columns, see
:data:`schema.INTERNAL`). The writer

1. hashes each learner to one of ``buckets`` partitions (CRC-32 of the UTF-8 ``user_id``
   modulo the bucket count, so any tool can recompute it) and appends the chunk to that
   bucket's spill file (Arrow IPC) inside a temporary sibling of the output directory
   (:mod:`.partitions`);
2. at :meth:`DatasetWriter.close` sorts each bucket by learner and input order, drops exact
   duplicates, merges multi-skill expansions, numbers ``seq``, and writes
   ``interactions/part-NNNNN.parquet``; memory is bounded by one bucket, not by the input;
3. writes ``items.parquet``, ``concepts.parquet``, ``rejected.parquet`` (:mod:`.side_tables`),
   ``events.parquet`` (when the source has events) and ``manifest.json``, then renames the
   temporary directory onto the output: the dataset appears complete or not at all.

The same input gives byte-identical Parquet files (fixed ordering and writer settings, no
wall-clock values except ``created_at`` in the manifest).

Staging and leftovers: the temporary directory, its lock, and how the leftovers of killed
writers are removed are described in :mod:`.staging`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import schema
from .errors import IngestError
from .partitions import (
    SpillFiles,
    bucket_of,
    cast_column,
    finish_partition,
    table_from_mapping,
    write_partition,
)
from .progress import NoProgress, Progress
from .side_tables import Manifest, jsonable, write_concepts, write_items, write_rejected
from .staging import STALE_UNLOCKED_AFTER_S, Staging, output_exists_error, remove_stale_staging

__all__ = [
    "STALE_UNLOCKED_AFTER_S",
    "DatasetWriter",
    "Manifest",
    "WriterOptions",
    "bucket_of",
    "remove_stale_staging",
]


@dataclass
class WriterOptions:
    """Dataset-level cleaning choices; every loader honours them."""

    buckets: int = 32
    #: Merge rows of one learner that the loader marks as one answer expanded once per skill
    #: (``_merge``) into one interaction with several concept_ids. ``--keep-expanded`` turns
    #: it off to reproduce published numbers.
    merge_multi_skill: bool = True
    #: Drop later exact duplicates of a row (``_dup``), recording them in rejected.parquet.
    drop_duplicates: bool = True
    row_group_size: int = 256 * 1024
    #: Threads finishing partitions at close (0: one per CPU, at most 8).
    threads: int = 0


class DatasetWriter:
    """Collects a loader's output and writes one canonical dataset directory atomically."""

    def __init__(
        self,
        out: Path,
        *,
        format_name: str,
        options: WriterOptions | None = None,
        loader_options: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        progress: Progress | None = None,
    ) -> None:
        self.out = Path(out)
        self.format_name = format_name
        self.options = options or WriterOptions()
        if self.options.buckets < 1:
            raise IngestError(f"buckets must be at least 1, got {self.options.buckets}")
        self.loader_options = dict(loader_options or {})
        self.overwrite = overwrite
        self.progress: Progress = progress or NoProgress()
        if self.out.exists() and not overwrite:
            raise output_exists_error(self.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._staging = Staging(self.out)
        self.tmp = self._staging.dir
        try:
            (self.tmp / "_spill").mkdir()
        except BaseException:
            self._staging.discard()
            raise
        self._files: list[str] = []
        self._file_index: dict[str, int] = {}
        self._file_sizes: list[int | None] = []
        self._spills = SpillFiles(self.tmp / "_spill", self.options.buckets)
        self._spill_rows = 0
        self._rows_read = 0
        self._read_counted = False
        self._rejected: list[pa.RecordBatch] = []
        self._rejected_counts: Counter[str] = Counter()
        self._skipped: Counter[str] = Counter()
        self._catalogue: list[pa.Table] = []
        self._concept_names: dict[str, str | None] = {}
        self._names_only: dict[str, str | None] = {}
        self._events_writer: pq.ParquetWriter | None = None
        self._events_rows = 0
        self._notes: dict[str, Any] = {}
        self._closed = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()

    # ------------------------------------------------------------------ loader API
    def register_file(self, name: str, size: int | None = None) -> int:
        """An index for an input file; rows carry it in ``_file``."""
        if name not in self._file_index:
            self._file_index[name] = len(self._files)
            self._files.append(name)
            self._file_sizes.append(size)
        return self._file_index[name]

    def count_read(self, n: int) -> None:
        """Add ``n`` to the number of input rows read (answers, rejected and skipped rows)."""
        self._rows_read += int(n)
        self._read_counted = True

    def skip(self, reason: str, n: int = 1) -> None:
        """Count rows that are read but are not answers (e.g. other xAPI verbs)."""
        if n:
            self._skipped[reason] += int(n)

    def note(self, key: str, value: Any) -> None:
        """Record a loader choice in the manifest's notes."""
        self._notes[key] = value

    def reject(
        self,
        file: int,
        line: int | None,
        reason: str,
        raw: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.reject_many([file], [line], [reason], [raw], [detail])

    def reject_many(
        self,
        files: Sequence[int] | np.ndarray,
        lines: Sequence[int | None] | np.ndarray,
        reasons: Sequence[str] | str,
        raws: Sequence[str | None] | None = None,
        details: Sequence[str | None] | None = None,
    ) -> None:
        """Record rejected input rows with the reason (a short category) and the raw text."""
        n = len(files)
        if n == 0:
            return
        if isinstance(reasons, str):
            reasons = [reasons] * n
            with self._lock:
                self._rejected_counts[reasons[0]] += n
        else:
            with self._lock:
                self._rejected_counts.update(reasons)
        batch = pa.record_batch(
            [
                pa.array(np.asarray(files, dtype=np.int32)),
                pa.array(lines, type=pa.int64()),
                pa.array(reasons, type=pa.string()),
                pa.array(details if details is not None else [None] * n, type=pa.string()),
                pa.array(raws if raws is not None else [None] * n, type=pa.string()),
            ],
            names=["_file", "line", "reason", "detail", "raw"],
        )
        with self._lock:
            self._rejected.append(batch)

    def add_concepts(
        self, concept_ids: Sequence[str], names: Sequence[str | None], *, catalogue: bool = True
    ) -> None:
        """Concepts from the source (skill tables, tag lists) with their names.

        With ``catalogue=False`` the names only label concepts that the interactions or
        items use (a name map that may list more concepts than the data has).
        """
        target = self._concept_names if catalogue else self._names_only
        for cid, name in zip(concept_ids, names, strict=True):
            if name is not None or str(cid) not in target:
                target[str(cid)] = name

    def add_items(self, table: pa.Table) -> None:
        """An item catalogue: ``item_id``, ``concept_ids`` and any metadata columns."""
        for col in ("item_id", "concept_ids"):
            if col not in table.column_names:
                raise IngestError(f"item catalogue lacks the column '{col}'")
        self._catalogue.append(table)

    def add_events(self, table: pa.Table) -> None:
        """Non-answer events (lectures, explanations, navigation), kept in events.parquet."""
        cols = []
        for f in schema.EVENTS:
            if f.name in table.column_names:
                cols.append(cast_column(table.column(f.name), f.type, f.name))
            else:
                cols.append(pa.nulls(table.num_rows, f.type))
        t = pa.Table.from_arrays(cols, schema=schema.EVENTS)
        if self._events_writer is None:
            self._events_writer = pq.ParquetWriter(
                self.tmp / "events.parquet", schema.EVENTS, **schema.PARQUET_OPTIONS
            )
        self._events_writer.write_table(t, row_group_size=self.options.row_group_size)
        self._events_rows += t.num_rows

    def add_interactions(self, data: pa.Table | Mapping[str, Any]) -> None:
        """Append a chunk of canonical rows (any order; the writer sorts per learner)."""
        table = data if isinstance(data, pa.Table) else table_from_mapping(data)
        n = table.num_rows
        if n == 0:
            return
        self._spills.add(table)
        self._spill_rows += n

    # ------------------------------------------------------------------ finishing
    def abort(self) -> None:
        """Remove everything written so far; the output is untouched."""
        # best effort on the error path: a writer that fails to close changes nothing
        self._spills.close(best_effort=True)
        if self._events_writer is not None:
            with contextlib.suppress(Exception):
                self._events_writer.close()
        self._staging.discard()
        self._closed = True

    def close(self) -> Manifest:
        """Write every table and the manifest, then move the dataset into place."""
        if self._closed:
            raise RuntimeError("writer already closed")
        try:
            manifest = self._finalize()
            self._staging.commit(self.overwrite)
        except BaseException:
            self.abort()
            raise
        self._staging.release()
        self._closed = True
        return manifest

    def _finalize(self) -> Manifest:
        self._spills.close()
        if self._spill_rows == 0:
            reasons = ", ".join(f"{k}: {v}" for k, v in self._rejected_counts.most_common(5))
            raise IngestError(
                "no interactions were read from the input"
                + (f" (rejected rows: {reasons})" if reasons else " (empty input?)")
            )
        stats, item_pairs = self._write_partitions()
        items, item_concepts = write_items(self.tmp, self._catalogue, item_pairs)
        concepts = write_concepts(self.tmp, item_concepts, self._concept_names, self._names_only)
        rejected_total = write_rejected(self.tmp, self._rejected, self._files)
        if self._events_writer is not None:
            self._events_writer.close()

        rows_read = (
            self._rows_read
            if self._read_counted
            else (
                self._spill_rows + sum(self._rejected_counts.values()) + sum(self._skipped.values())
            )
        )
        counts = {
            "rows_read": rows_read,
            "interactions": int(stats["rows"]),
            "learners": int(stats["learners"]),
            "items": items["total"],
            "items_answered": items["answered"],
            "concepts": concepts,
            "correct": int(stats["correct"]),
            "rejected": rejected_total,
            "duplicates_dropped": int(stats["duplicates"]),
            "multi_skill_rows_merged": int(stats["merged"]),
            "events": self._events_rows,
        }
        notes = dict(self._notes)
        notes["multi_skill"] = "merged" if self.options.merge_multi_skill else "expanded"
        inputs = [
            {"name": name, "bytes": size}
            for name, size in zip(self._files[:1000], self._file_sizes[:1000], strict=True)
        ]
        if len(self._files) > 1000:
            notes["inputs_listed"] = f"first 1000 of {len(self._files)} input files"
        counts["input_files"] = len(self._files)
        manifest = Manifest(
            schema_version=schema.SCHEMA_VERSION,
            format=self.format_name,
            source=self.format_name,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            inputs=inputs,
            options={
                **{k: jsonable(v) for k, v in self.loader_options.items()},
                "merge_multi_skill": self.options.merge_multi_skill,
                "drop_duplicates": self.options.drop_duplicates,
            },
            buckets=self.options.buckets,
            bucket_function="crc32(utf8(user_id)) % buckets -> interactions/part-{bucket:05d}",
            counts=counts,
            rejected_by_reason=dict(sorted(self._rejected_counts.items())),
            skipped_by_reason=dict(sorted(self._skipped.items())),
            notes=notes,
        )
        (self.tmp / "manifest.json").write_text(manifest.to_json())
        return manifest

    def _write_partitions(self) -> tuple[Counter[str], list[pa.Table]]:
        """Finish every spilled bucket into ``interactions/``: (counts, item-concept pairs)."""
        inter_dir = self.tmp / "interactions"
        inter_dir.mkdir()
        item_pairs: list[pa.Table] = []
        stats = Counter[str]()
        self.progress.start("writing partitions", len(self._spills))
        source = pa.array([self.format_name])

        def finish(bucket: int) -> tuple[Counter[str], pa.Table]:
            table, bstats, pairs = finish_partition(
                self._spills.read(bucket),
                drop_duplicates=self.options.drop_duplicates,
                merge_multi_skill=self.options.merge_multi_skill,
                reject_many=self.reject_many,
            )
            path = inter_dir / f"part-{bucket:05d}.parquet"
            write_partition(table, path, source, self.options.row_group_size)
            return bstats, pairs

        # buckets are independent: finish them on a few threads (Arrow and Parquet release
        # the GIL); results are gathered in bucket order, so the output is deterministic
        workers = max(1, min(self.options.threads or (os.cpu_count() or 1), 8))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for bstats, pairs in pool.map(finish, self._spills.used()):
                stats.update(bstats)
                item_pairs.append(pairs)
                self.progress.advance(1)
        self.progress.finish()
        shutil.rmtree(self.tmp / "_spill")
        return stats, item_pairs
