"""The dataset writer: streaming, hash-partitioned, deterministic and atomic.

Loaders hand the writer chunks of canonical rows (plus a few internal columns, see
:data:`schema.INTERNAL`). The writer

1. hashes each learner to one of ``buckets`` partitions (CRC-32 of the UTF-8 ``user_id``
   modulo the bucket count, so any tool can recompute it) and appends the chunk to that
   bucket's spill file (Arrow IPC) inside a temporary sibling of the output directory;
2. at :meth:`DatasetWriter.close` sorts each bucket by learner and input order, drops exact
   duplicates, merges multi-skill expansions, numbers ``seq``, and writes
   ``interactions/part-NNNNN.parquet``; memory is bounded by one bucket, not by the input;
3. writes ``items.parquet``, ``concepts.parquet``, ``rejected.parquet``, ``events.parquet``
   (when the source has events) and ``manifest.json``, then renames the temporary directory
   onto the output: the dataset appears complete or not at all.

The same input gives byte-identical Parquet files (fixed ordering and writer settings, no
wall-clock values except ``created_at`` in the manifest).

Staging and leftovers: the temporary directory is ``.<output name>.tmp-<12 hex digits>``
beside the output (a replaced dataset is moved aside to ``.<output name>.old-<same digits>``
while the new one takes its place). Its writer holds an exclusive ``flock`` on
``.<output name>.tmp-<same digits>.lock`` for its whole life; the kernel drops the lock when the
process ends, however it ends (SIGKILL, out of memory). Before it stages anything, a writer
removes the leftovers of earlier writers of the *same* output (:func:`remove_stale_staging`):
names matching exactly these patterns whose lock file it can lock (their writer is gone), and
names without a lock file (written by an older version) when nothing in them has changed for
:data:`STALE_UNLOCKED_AFTER_S` seconds. Staging directories of running writers, and of other
outputs, are never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:  # POSIX; elsewhere leftovers are removed by age only
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import schema
from .errors import IngestError
from .progress import NoProgress, Progress

EMPTY_LIST = pa.scalar([], type=pa.list_(pa.string()))
_PARQUET_OPTS: dict[str, Any] = {
    "compression": "zstd",
    "use_dictionary": True,
    "write_statistics": True,
}
# interactions: dictionary pages only for the string columns (timestamps, seq and elapsed
# times are nearly unique: trying a dictionary for them costs time and grows the file)
_INTERACTION_DICT_COLUMNS = ["user_id", "item_id", "concept_ids.list.element", "split", "source"]


#: Leftover staging directories without a lock file are removed once nothing in them has
#: changed for this long (an hour: a live writer writes its spill files far more often).
STALE_UNLOCKED_AFTER_S = 3600


def _staging_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(name)}\.(?:tmp|old)-([0-9a-f]{{12}})(\.lock)?$")


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock of ``fd`` without waiting; False when another holds it."""
    if fcntl is None:  # pragma: no cover - Windows
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _newest_mtime(path: Path) -> float:
    """The latest modification time of ``path`` and of everything under it."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for n in dirs + files:
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(root, n)).st_mtime)
    return newest


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_stale_staging(out: Path | str, *, now: float | None = None) -> list[Path]:
    """Remove what killed writers of ``out`` left beside it; returns the removed paths.

    Only names of ``out``'s own pattern count (``.<name>.tmp-<12 hex>``, ``.<name>.old-<12
    hex>`` and the lock file ``.<name>.tmp-<12 hex>.lock``), grouped by their digits. A group
    whose lock file can be locked is stale (its writer has ended: the kernel released the
    lock); a group whose lock is held is in use and kept. A group without a lock file is
    stale when nothing in it has changed for :data:`STALE_UNLOCKED_AFTER_S` seconds (and
    so is every group where file locks do not exist). Where the output itself is missing and
    a stale group holds the dataset moved aside (``.old-``: the writer was killed between
    moving it and putting the new one in place), that dataset is put back, not removed.
    """
    out = Path(out)
    parent = out.parent
    pattern = _staging_pattern(out.name)
    groups: dict[str, list[Path]] = {}
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return []
    for entry in entries:
        m = pattern.match(entry.name)
        if m:
            groups.setdefault(m.group(1), []).append(Path(entry.path))
    now = time.time() if now is None else now
    removed: list[Path] = []
    for token, paths in sorted(groups.items()):
        lock = parent / f".{out.name}.tmp-{token}.lock"
        old = parent / f".{out.name}.old-{token}"
        if lock in paths and fcntl is not None:
            try:
                fd = os.open(lock, os.O_RDWR)
            except OSError:  # removed meanwhile: its writer finished
                continue
            try:
                if not _try_lock(fd):
                    continue  # a running writer's
                if not out.exists() and old in paths:
                    # killed between moving the dataset aside and putting the new one in
                    # place: the old dataset is the only one left, so it goes back
                    os.replace(old, out)
                    paths = [p for p in paths if p != old]
                for p in sorted(paths, key=lambda q: q == lock):  # the lock file last
                    _remove(p)
            finally:
                os.close(fd)
        else:
            try:
                age = now - max(_newest_mtime(p) for p in paths)
            except OSError:
                continue
            if age < STALE_UNLOCKED_AFTER_S:
                continue
            for p in paths:
                _remove(p)
        removed.extend(paths)
    return removed


def _new_staging(parent: Path, name: str) -> tuple[Path, Path, int]:
    """A locked lock file and the staging directory beside the output: (dir, lock, fd)."""
    for _ in range(100):
        token = uuid.uuid4().hex[:12]
        lock = parent / f".{name}.tmp-{token}.lock"
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
                # a cleaner that opened the new file before we locked it may have removed it
                if os.fstat(fd).st_ino != os.stat(lock).st_ino:  # pragma: no cover - a race
                    raise FileNotFoundError(lock)
            tmp = parent / f".{name}.tmp-{token}"
            tmp.mkdir()
            return tmp, lock, fd
        except FileNotFoundError:  # pragma: no cover - a race
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                lock.unlink()
            raise
    raise IngestError(  # pragma: no cover
        "cannot create a staging directory beside the output", file=str(parent / name)
    )


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


@dataclass
class Manifest:
    schema_version: int
    format: str
    source: str
    created_at: str
    inputs: list[dict[str, Any]]
    options: dict[str, Any]
    buckets: int
    bucket_function: str
    counts: dict[str, Any]
    rejected_by_reason: dict[str, int]
    skipped_by_reason: dict[str, int]
    notes: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"


def _natural_key(value: str) -> tuple[int, int, str]:
    return (0, int(value), "") if value.isdigit() and len(value) < 19 else (1, 0, value)


def natural_sort_indices(values: Sequence[str]) -> np.ndarray:
    return np.array(
        sorted(range(len(values)), key=lambda i: _natural_key(values[i])), dtype=np.int64
    )


def bucket_of(user_ids: Sequence[str], buckets: int) -> np.ndarray:
    """The partition of each learner: CRC-32 of the UTF-8 user id, modulo ``buckets``."""
    return np.array([zlib.crc32(u.encode("utf-8")) % buckets for u in user_ids], dtype=np.int64)


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
            raise IngestError(
                "output already exists; pass --overwrite to replace it", file=str(self.out)
            )
        self.out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(self.out)
        self.tmp, self._lock_path, self._lock_fd = _new_staging(self.out.parent, self.out.name)
        self._lock_fd: int | None
        try:
            (self.tmp / "_spill").mkdir()
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self._release()
            raise
        self._files: list[str] = []
        self._file_index: dict[str, int] = {}
        self._file_sizes: list[int | None] = []
        self._spills: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
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
        self._events_buffer: list[pa.Table] = []
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
                cols.append(_cast(table.column(f.name), f.type, f.name))
            else:
                cols.append(pa.nulls(table.num_rows, f.type))
        t = pa.Table.from_arrays(cols, schema=schema.EVENTS)
        if self._events_writer is None:
            self._events_writer = pq.ParquetWriter(
                self.tmp / "events.parquet", schema.EVENTS, **_PARQUET_OPTS
            )
        self._events_writer.write_table(t, row_group_size=self.options.row_group_size)
        self._events_rows += t.num_rows

    def add_interactions(self, data: pa.Table | Mapping[str, Any]) -> None:
        """Append a chunk of canonical rows (any order; the writer sorts per learner)."""
        table = data if isinstance(data, pa.Table) else _table_from_mapping(data)
        n = table.num_rows
        if n == 0:
            return
        missing = [
            c
            for c in ("user_id", "item_id", "correct", "_file", "_line")
            if c not in table.column_names
        ]
        if missing:
            raise IngestError(f"loader chunk lacks required columns {missing}")
        users = table.column("user_id").combine_chunks()
        if pa.types.is_dictionary(users.type):
            uniques = users.dictionary
            indices = users.indices.to_numpy(zero_copy_only=False)
            users = (
                users.dictionary_decode()
                if hasattr(users, "dictionary_decode")
                else pc.cast(users, pa.string())
            )
        else:
            enc = pc.dictionary_encode(users)
            uniques = enc.dictionary
            indices = enc.indices.to_numpy(zero_copy_only=False)
        if pc.any(pc.is_null(users)).as_py():
            raise IngestError("loader produced a null user_id")
        buckets = bucket_of(uniques.to_pylist(), self.options.buckets)[indices]

        cols = []
        for f in schema.SPILL:
            if f.name == "user_id":
                cols.append(pc.cast(users, pa.string()))
            elif f.name in table.column_names:
                cols.append(_cast(table.column(f.name), f.type, f.name))
            elif f.name == "concept_ids":
                cols.append(pa.array([[]] * n, type=f.type))
            else:
                cols.append(pa.nulls(n, f.type))
        spill = pa.Table.from_arrays(cols, schema=schema.SPILL)
        correct = spill.column("correct")
        bad = pc.sum(
            pc.cast(pc.invert(pc.is_in(correct, pa.array([0, 1], pa.int8()))), pa.int64())
        ).as_py()
        if bad:
            raise IngestError("loader produced a 'correct' value other than 0 or 1")

        if buckets.min() == buckets.max():
            self._spill(int(buckets[0]), spill)
        else:
            order = np.argsort(buckets, kind="stable")
            sorted_b = buckets[order]
            spill = spill.take(pa.array(order))
            starts = np.flatnonzero(np.r_[True, sorted_b[1:] != sorted_b[:-1]])
            ends = np.r_[starts[1:], len(sorted_b)]
            for s, e in zip(starts, ends, strict=True):
                self._spill(int(sorted_b[s]), spill.slice(s, e - s))
        self._spill_rows += n

    def _spill(self, bucket: int, table: pa.Table) -> None:
        w = self._spills.get(bucket)
        if w is None:
            w = pa.ipc.new_stream(str(self.tmp / "_spill" / f"{bucket:05d}.arrow"), schema.SPILL)
            self._spills[bucket] = w
        w.write_table(table)

    # ------------------------------------------------------------------ finishing
    def abort(self) -> None:
        """Remove everything written so far; the output is untouched."""
        # best effort on the error path: a writer that fails to close changes nothing
        for w in self._spills.values():
            with contextlib.suppress(Exception):
                w.close()
        if self._events_writer is not None:
            with contextlib.suppress(Exception):
                self._events_writer.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._release()
        self._closed = True

    def _release(self) -> None:
        """Remove the staging directory's lock file, then let the lock go."""
        if self._lock_fd is None:
            return
        with contextlib.suppress(OSError):
            self._lock_path.unlink()
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)
        self._lock_fd = None

    def close(self) -> Manifest:
        """Write every table and the manifest, then move the dataset into place."""
        if self._closed:
            raise RuntimeError("writer already closed")
        try:
            manifest = self._finalize()
            self._commit()
        except BaseException:
            self.abort()
            raise
        self._release()
        self._closed = True
        return manifest

    def _finalize(self) -> Manifest:
        for w in self._spills.values():
            w.close()
        if self._spill_rows == 0:
            reasons = ", ".join(f"{k}: {v}" for k, v in self._rejected_counts.most_common(5))
            raise IngestError(
                "no interactions were read from the input"
                + (f" (rejected rows: {reasons})" if reasons else " (empty input?)")
            )
        inter_dir = self.tmp / "interactions"
        inter_dir.mkdir()
        item_pairs: list[pa.Table] = []
        stats = Counter[str]()
        self.progress.start("writing partitions", len(self._spills))
        source = pa.DictionaryArray.from_arrays(
            pa.array([0], pa.int32()), pa.array([self.format_name])
        )

        def finish(bucket: int) -> tuple[Counter[str], pa.Table]:
            path = self.tmp / "_spill" / f"{bucket:05d}.arrow"
            with pa.ipc.open_stream(str(path)) as reader:
                table = reader.read_all()
            path.unlink()
            table, bstats, pairs = self._finish_bucket(table)
            n = table.num_rows
            src = pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(n, dtype=np.int32)), source.dictionary
            )
            out_cols = []
            for f in schema.INTERACTIONS:
                out_cols.append(src if f.name == "source" else table.column(f.name))
            out = pa.Table.from_arrays(out_cols, schema=schema.INTERACTIONS)
            pq.write_table(
                out,
                inter_dir / f"part-{bucket:05d}.parquet",
                row_group_size=self.options.row_group_size,
                **{**_PARQUET_OPTS, "use_dictionary": _INTERACTION_DICT_COLUMNS},
            )
            return bstats, pairs

        # buckets are independent: finish them on a few threads (Arrow and Parquet release
        # the GIL); results are gathered in bucket order, so the output is deterministic
        workers = max(1, min(self.options.threads or (os.cpu_count() or 1), 8))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for bstats, pairs in pool.map(finish, sorted(self._spills)):
                stats.update(bstats)
                item_pairs.append(pairs)
                self.progress.advance(1)
        self.progress.finish()
        shutil.rmtree(self.tmp / "_spill")

        items = self._write_items(item_pairs)
        concepts = self._write_concepts(items)
        rejected_total = self._write_rejected()
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
                **{k: _jsonable(v) for k, v in self.loader_options.items()},
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

    def _finish_bucket(self, table: pa.Table) -> tuple[pa.Table, Counter[str], pa.Table]:
        stats: Counter[str] = Counter()
        enc = pc.dictionary_encode(table.column("user_id").combine_chunks())
        user_rank = pc.take(
            pc.rank(enc.dictionary, sort_keys="ascending", tiebreaker="first"), enc.indices
        )
        keys = pa.table(
            {
                "u": user_rank,
                "o": table.column("_order"),
                "f": table.column("_file"),
                "l": table.column("_line"),
            }
        )
        idx = pc.sort_indices(
            keys,
            sort_keys=[
                ("u", "ascending", "at_end"),
                ("o", "ascending", "at_end"),
                ("f", "ascending", "at_end"),
                ("l", "ascending", "at_end"),
            ],
        ).to_numpy()
        if len(idx) and not (idx[0] == 0 and (np.diff(idx) == 1).all()):
            table = table.take(pa.array(idx))
        codes = _group_codes(table.column("user_id"))

        if self.options.drop_duplicates and table.column("_dup").null_count < table.num_rows:
            dup_col = table.column("_dup").to_numpy(zero_copy_only=False)
            frame = pd.DataFrame({"u": codes, "d": dup_col})
            has = frame["d"].notna().to_numpy()
            dup = frame.duplicated(keep="first").to_numpy() & has
            if dup.any():
                first = frame[has].drop_duplicates(keep="first")
                first_line = pd.Series(
                    table.column("_line").to_numpy()[first.index.to_numpy()],
                    index=pd.MultiIndex.from_frame(first),
                )
                rows = np.flatnonzero(dup)
                keys = pd.MultiIndex.from_frame(frame.iloc[rows])
                orig = first_line.reindex(keys).to_numpy()
                self.reject_many(
                    table.column("_file").to_numpy()[rows],
                    table.column("_line").to_numpy()[rows],
                    "exact duplicate of an earlier row",
                    None,
                    [f"same as line {int(o)}" for o in orig],
                )
                stats["duplicates"] += int(dup.sum())
                keep = pa.array(~dup)
                table = table.filter(keep)
                codes = codes[~dup]

        if self.options.merge_multi_skill and table.column("_merge").null_count < table.num_rows:
            table, merged = _merge_runs(table, codes)
            if merged:
                stats["merged"] += merged
                codes = _group_codes(table.column("user_id"))

        n = table.num_rows
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if n else np.array([], int)
        seq = np.arange(n, dtype=np.int64) - np.repeat(starts, np.diff(np.r_[starts, n]))
        table = table.append_column("seq", pa.array(seq, pa.int64()))
        stats["rows"] += n
        stats["learners"] += len(starts)
        stats["correct"] += int(pc.sum(table.column("correct")).as_py() or 0)

        # (item, concept) pairs observed, for the items table
        concepts = table.column("concept_ids").combine_chunks()
        items = table.column("item_id").combine_chunks()
        pairs = pa.table(
            {
                "item_id": items.take(pc.list_parent_indices(concepts)),
                "concept_id": pc.list_flatten(concepts),
            }
        )
        no_concept = pc.equal(pc.list_value_length(concepts), 0)
        if pc.any(no_concept).as_py():
            lone = items.filter(no_concept)
            pairs = pa.concat_tables(
                [pairs, pa.table({"item_id": lone, "concept_id": pa.nulls(len(lone), pa.string())})]
            )
        pairs = _distinct(pairs)
        return table, stats, pairs

    def _write_items(self, pairs: list[pa.Table]) -> dict[str, int]:
        observed = _distinct(pa.concat_tables(pairs))
        answered_items = pc.unique(observed.column("item_id")).to_pylist()
        obs_concepts: dict[str, list[str]] = {}
        for it, c in zip(
            observed.column("item_id").to_pylist(),
            observed.column("concept_id").to_pylist(),
            strict=True,
        ):
            if c is not None:
                obs_concepts.setdefault(it, []).append(c)
        if self._catalogue:
            cat = pa.concat_tables(self._catalogue, promote_options="permissive")
            cat_ids = cat.column("item_id").to_pylist()
            seen: dict[str, int] = {}
            for i, it in enumerate(cat_ids):
                seen.setdefault(str(it), i)
            cat = cat.take(pa.array(list(seen.values()), pa.int64()))
            cat_ids = list(seen.keys())
        else:
            cat = None
            cat_ids = []
        cat_index = {it: i for i, it in enumerate(cat_ids)}
        extra_ids = [str(it) for it in answered_items if it not in cat_index]
        all_ids = cat_ids + extra_ids
        cat_concepts = cat.column("concept_ids").to_pylist() if cat is not None else []
        concept_lists = []
        for i, it in enumerate(all_ids):
            base = list(cat_concepts[i] or []) if i < len(cat_ids) else []
            for c in obs_concepts.get(it, []):
                if c not in base:
                    base.append(c)
            concept_lists.append(base)
        order = natural_sort_indices(all_ids)
        cols: dict[str, pa.Array] = {
            "item_id": pa.array([all_ids[i] for i in order], pa.string()),
            "concept_ids": pa.array([concept_lists[i] for i in order], pa.list_(pa.string())),
        }
        if cat is not None:
            for name in cat.column_names:
                if name in cols:
                    continue
                col = cat.column(name).combine_chunks()
                full = pa.concat_arrays([col, pa.nulls(len(extra_ids), col.type)])
                cols[name] = full.take(pa.array(order))
        pq.write_table(pa.table(cols), self.tmp / "items.parquet", **_PARQUET_OPTS)
        self._all_item_concepts = {c for lst in concept_lists for c in lst}
        return {"total": len(all_ids), "answered": len(answered_items)}

    def _write_concepts(self, items: dict[str, int]) -> int:
        ids = set(self._all_item_concepts) | set(self._concept_names)
        ids_list = sorted(ids, key=_natural_key)
        table = pa.table(
            {
                "concept_id": pa.array(ids_list, pa.string()),
                "name": pa.array(
                    [self._concept_names.get(c) or self._names_only.get(c) for c in ids_list],
                    pa.string(),
                ),
            },
            schema=schema.CONCEPTS,
        )
        pq.write_table(table, self.tmp / "concepts.parquet", **_PARQUET_OPTS)
        return len(ids_list)

    def _write_rejected(self) -> int:
        if self._rejected:
            t = pa.Table.from_batches(self._rejected)
            t = t.take(
                pc.sort_indices(
                    t, [("_file", "ascending", "at_start"), ("line", "ascending", "at_start")]
                )
            )
            names = pa.array(self._files, pa.string())
            file_col = names.take(t.column("_file"))
            out = pa.table(
                {
                    "file": file_col,
                    "line": t.column("line"),
                    "reason": t.column("reason"),
                    "detail": t.column("detail"),
                    "raw": t.column("raw"),
                }
            )
        else:
            out = pa.table(
                {
                    "file": pa.array([], pa.string()),
                    "line": pa.array([], pa.int64()),
                    "reason": pa.array([], pa.string()),
                    "detail": pa.array([], pa.string()),
                    "raw": pa.array([], pa.string()),
                }
            )
        pq.write_table(out, self.tmp / "rejected.parquet", **_PARQUET_OPTS)
        return out.num_rows

    def _commit(self) -> None:
        old = None
        if self.out.exists():
            if not self.overwrite:
                raise IngestError(
                    "output already exists; pass --overwrite to replace it", file=str(self.out)
                )
            # the same digits as the staging directory: covered by its lock
            old = self.out.parent / f".{self.out.name}.old-{self.tmp.name.rsplit('-', 1)[1]}"
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------- helpers
def _jsonable(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _table_from_mapping(data: Mapping[str, Any]) -> pa.Table:
    arrays = {}
    for k, v in data.items():
        arrays[k] = v if isinstance(v, (pa.Array, pa.ChunkedArray)) else pa.array(v)
    return pa.table(arrays)


def _cast(col: pa.Array | pa.ChunkedArray, typ: pa.DataType, name: str) -> pa.ChunkedArray:
    if isinstance(col, pa.Array):
        col = pa.chunked_array([col])
    if col.type == typ:
        out = col
    elif pa.types.is_timestamp(typ) and pa.types.is_integer(col.type):
        out = pc.cast(pc.cast(col, pa.int64()), pa.timestamp("ms", tz="UTC"))
    elif pa.types.is_timestamp(typ) and pa.types.is_timestamp(col.type):
        out = pc.cast(col, typ)
    else:
        try:
            out = pc.cast(col, typ)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise IngestError(f"cannot convert column to {typ}: {exc}", field=name) from exc
    if name == "concept_ids" and out.null_count:
        out = pc.fill_null(out, EMPTY_LIST)
    return out


def _distinct(table: pa.Table) -> pa.Table:
    """Distinct rows, in order of first appearance."""
    keys = table.column_names
    indexed = table.append_column("_row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    first = indexed.group_by(keys, use_threads=False).aggregate([("_row", "min")])
    return first.sort_by("_row_min").select(keys)


def _group_codes(users: pa.ChunkedArray) -> np.ndarray:
    """Run codes of a sorted string column: 0 for the first value, +1 at every change."""
    n = len(users)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    arr = users.combine_chunks()
    change = pc.not_equal(arr.slice(1), arr.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    return np.concatenate([[0], np.cumsum(change, dtype=np.int64)])


def _merge_runs(table: pa.Table, codes: np.ndarray) -> tuple[pa.Table, int]:
    """Merge consecutive rows of one learner that share a non-null ``_merge`` key."""
    key = table.column("_merge").to_numpy(zero_copy_only=False)
    n = len(key)
    keyf = pd.array(key, dtype="Int64") if not isinstance(key, np.ndarray) else key
    frame = pd.DataFrame({"u": codes, "k": keyf})
    same = np.zeros(n, dtype=bool)
    if n > 1:
        k = frame["k"]
        same[1:] = (
            (codes[1:] == codes[:-1])
            & k.iloc[1:].notna().to_numpy()
            & (k.iloc[1:].to_numpy() == k.iloc[:-1].to_numpy())
        )
        # an exact duplicate kept by --keep-duplicates is a second answer, not another skill
        dup = table.column("_dup")
        if dup.null_count < n:
            d = pd.array(dup.to_pylist(), dtype="UInt64")
            same_dup = np.asarray((d[1:] == d[:-1]).fillna(False), dtype=bool)
            same[1:] &= ~same_dup
    merged = int(same.sum())
    if not merged:
        return table, 0
    positions = np.arange(n)
    leader = np.maximum.accumulate(np.where(same, 0, positions))
    concepts = table.column("concept_ids").combine_chunks()
    flat = pc.list_flatten(concepts)
    parents = pc.list_parent_indices(concepts).to_numpy()
    lead = leader[parents]
    flat_np = flat.to_numpy(zero_copy_only=False)
    keep = ~pd.DataFrame({"p": lead, "v": flat_np}).duplicated().to_numpy()
    lead_kept = lead[keep]
    values = flat.filter(pa.array(keep))
    counts = np.bincount(lead_kept, minlength=n)
    leaders = np.flatnonzero(~same)
    lens = counts[leaders]
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    new_lists = pa.ListArray.from_arrays(pa.array(offsets), values)
    out = table.filter(pa.array(~same))
    out = out.set_column(out.schema.get_field_index("concept_ids"), "concept_ids", new_lists)
    return out, merged
