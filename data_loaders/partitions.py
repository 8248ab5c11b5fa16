"""The interaction partitions: learner hashing, spill files, and finishing one partition.

Each learner belongs to one of ``buckets`` partitions: CRC-32 of the UTF-8 ``user_id`` modulo
the bucket count (:func:`bucket_of`), so any tool can recompute it. While a loader runs, its
chunks are cast to :data:`schema.SPILL` and appended to their bucket's Arrow IPC spill file
(:class:`SpillFiles`). At close each bucket is read back on its own and finished
(:func:`finish_partition`): sorted by learner and input order, exact duplicates dropped,
multi-skill expansions merged, ``seq`` numbered; then written as
``interactions/part-NNNNN.parquet`` (:func:`write_partition`). Memory is bounded by one
bucket, not by the input.
"""

from __future__ import annotations

import contextlib
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import schema
from .errors import IngestError
from .side_tables import item_concept_pairs

EMPTY_LIST = pa.scalar([], type=pa.list_(pa.string()))
#: interactions: dictionary pages only for the string columns (timestamps, seq and elapsed
#: times are nearly unique: trying a dictionary for them costs time and grows the file)
INTERACTION_DICT_COLUMNS = ["user_id", "item_id", "concept_ids.list.element", "split", "source"]

#: ``reject_many(files, lines, reason, raws, details)`` of the writer
RejectMany = Callable[..., None]


def bucket_of(user_ids: Sequence[str], buckets: int) -> np.ndarray:
    """The partition of each learner: CRC-32 of the UTF-8 user id, modulo ``buckets``."""
    return np.array([zlib.crc32(u.encode("utf-8")) % buckets for u in user_ids], dtype=np.int64)


def table_from_mapping(data: Mapping[str, Any]) -> pa.Table:
    """A table of the columns in ``data`` (Arrow arrays as they are, anything else converted)."""
    arrays = {}
    for k, v in data.items():
        arrays[k] = v if isinstance(v, (pa.Array, pa.ChunkedArray)) else pa.array(v)
    return pa.table(arrays)


def cast_column(col: pa.Array | pa.ChunkedArray, typ: pa.DataType, name: str) -> pa.ChunkedArray:
    """A loader's column in its canonical type (integers are ms for timestamps)."""
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


# ---------------------------------------------------------------------- spilling
class SpillFiles:
    """One Arrow IPC stream per bucket in ``directory``, appended to as chunks arrive."""

    def __init__(self, directory: Path, buckets: int) -> None:
        self.directory = directory
        self.buckets = buckets
        self._writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}

    def __len__(self) -> int:
        return len(self._writers)

    def used(self) -> list[int]:
        """The buckets that have a spill file, in order."""
        return sorted(self._writers)

    def path(self, bucket: int) -> Path:
        return self.directory / f"{bucket:05d}.arrow"

    def add(self, table: pa.Table) -> None:
        """Validate a loader chunk, cast it to :data:`schema.SPILL` and spill it by bucket."""
        n = table.num_rows
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
        buckets = bucket_of(uniques.to_pylist(), self.buckets)[indices]

        cols = []
        for f in schema.SPILL:
            if f.name == "user_id":
                cols.append(pc.cast(users, pa.string()))
            elif f.name in table.column_names:
                cols.append(cast_column(table.column(f.name), f.type, f.name))
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
            self._write(int(buckets[0]), spill)
        else:
            order = np.argsort(buckets, kind="stable")
            sorted_b = buckets[order]
            spill = spill.take(pa.array(order))
            starts = np.flatnonzero(np.r_[True, sorted_b[1:] != sorted_b[:-1]])
            ends = np.r_[starts[1:], len(sorted_b)]
            for s, e in zip(starts, ends, strict=True):
                self._write(int(sorted_b[s]), spill.slice(s, e - s))

    def _write(self, bucket: int, table: pa.Table) -> None:
        w = self._writers.get(bucket)
        if w is None:
            w = pa.ipc.new_stream(str(self.path(bucket)), schema.SPILL)
            self._writers[bucket] = w
        w.write_table(table)

    def close(self, *, best_effort: bool = False) -> None:
        """Close every spill file; ``best_effort``: on an error path, ignore failures."""
        for w in self._writers.values():
            if best_effort:
                with contextlib.suppress(Exception):
                    w.close()
            else:
                w.close()

    def read(self, bucket: int) -> pa.Table:
        """A closed bucket's rows; its spill file is removed."""
        path = self.path(bucket)
        with pa.ipc.open_stream(str(path)) as reader:
            table = reader.read_all()
        path.unlink()
        return table


# ---------------------------------------------------------------------- finishing
def finish_partition(
    table: pa.Table,
    *,
    drop_duplicates: bool,
    merge_multi_skill: bool,
    reject_many: RejectMany,
) -> tuple[pa.Table, Counter[str], pa.Table]:
    """Sort one bucket's rows, drop duplicates, merge multi-skill runs and number ``seq``.

    Returns the finished rows, their counts (rows, learners, correct, duplicates, merged) and
    the distinct (item, concept) pairs they use. Dropped duplicates go to ``reject_many``.
    """
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

    if drop_duplicates and table.column("_dup").null_count < table.num_rows:
        table, codes, dropped = _drop_duplicates(table, codes, reject_many)
        if dropped:
            stats["duplicates"] += dropped

    if merge_multi_skill and table.column("_merge").null_count < table.num_rows:
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
    return table, stats, item_concept_pairs(table)


def write_partition(table: pa.Table, path: Path, source: pa.Array, row_group_size: int) -> None:
    """A finished bucket as ``part-NNNNN.parquet``, every row's ``source`` set to ``source[0]``."""
    n = table.num_rows
    src = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), source)
    out_cols = []
    for f in schema.INTERACTIONS:
        out_cols.append(src if f.name == "source" else table.column(f.name))
    out = pa.Table.from_arrays(out_cols, schema=schema.INTERACTIONS)
    pq.write_table(
        out,
        path,
        row_group_size=row_group_size,
        **{**schema.PARQUET_OPTIONS, "use_dictionary": INTERACTION_DICT_COLUMNS},
    )


def _drop_duplicates(
    table: pa.Table, codes: np.ndarray, reject_many: RejectMany
) -> tuple[pa.Table, np.ndarray, int]:
    """Drop later rows of a learner with an equal ``_dup`` key (rejected, naming the first)."""
    dup_col = table.column("_dup").to_numpy(zero_copy_only=False)
    frame = pd.DataFrame({"u": codes, "d": dup_col})
    has = frame["d"].notna().to_numpy()
    dup = frame.duplicated(keep="first").to_numpy() & has
    if not dup.any():
        return table, codes, 0
    first = frame[has].drop_duplicates(keep="first")
    first_line = pd.Series(
        table.column("_line").to_numpy()[first.index.to_numpy()],
        index=pd.MultiIndex.from_frame(first),
    )
    rows = np.flatnonzero(dup)
    keys = pd.MultiIndex.from_frame(frame.iloc[rows])
    orig = first_line.reindex(keys).to_numpy()
    reject_many(
        table.column("_file").to_numpy()[rows],
        table.column("_line").to_numpy()[rows],
        "exact duplicate of an earlier row",
        None,
        [f"same as line {int(o)}" for o in orig],
    )
    keep = pa.array(~dup)
    return table.filter(keep), codes[~dup], int(dup.sum())


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
