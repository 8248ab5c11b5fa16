"""The canonical interaction schema, the side tables and their Parquet settings (DESIGN.md).

One row of ``interactions`` is one answered question, whatever the source. Two optional
columns beyond DESIGN.md's table carry a published split where the source file has one:
``split`` ('train' / 'valid' / 'test') and ``fold`` (the cross-validation fold number), so
that the evaluation can use exactly the published split. Both are null where the source
has none.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 1

#: Columns a loader may provide, with their canonical types (``seq`` and ``source`` are set
#: by the writer).
INTERACTIONS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("concept_ids", pa.list_(pa.string()), nullable=False),
        pa.field("correct", pa.int8(), nullable=False),
        pa.field("timestamp", pa.timestamp("ms", tz="UTC")),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("elapsed_ms", pa.int64()),
        pa.field("attempt", pa.int16()),
        pa.field("split", pa.string()),
        pa.field("fold", pa.int16()),
        pa.field("source", pa.dictionary(pa.int32(), pa.string()), nullable=False),
    ]
)

ITEMS_BASE = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("concept_ids", pa.list_(pa.string()), nullable=False),
    ]
)

CONCEPTS = pa.schema(
    [
        pa.field("concept_id", pa.string(), nullable=False),
        pa.field("name", pa.string()),
    ]
)

REJECTED = pa.schema(
    [
        pa.field("file", pa.string(), nullable=False),
        pa.field("line", pa.int64()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw", pa.string()),
    ]
)

#: Non-answer events (EdNet KT2-KT4 lectures, explanations, navigation), kept beside the
#: interactions rather than dropped.
EVENTS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("timestamp", pa.timestamp("ms", tz="UTC")),
        pa.field("action_type", pa.string(), nullable=False),
        pa.field("item_id", pa.string()),
        pa.field("source", pa.string()),
        pa.field("platform", pa.string()),
        pa.field("cursor_time", pa.int64()),
        pa.field("user_answer", pa.string()),
    ]
)

SPLITS = ("train", "valid", "test")

#: Internal columns a loader adds to each chunk so that the writer can order, deduplicate and
#: merge rows, and point at the input line of every row it rejects.
INTERNAL = pa.schema(
    [
        pa.field("_file", pa.int32(), nullable=False),  # index into the writer's file list
        pa.field("_line", pa.int64(), nullable=False),  # 1-based line number in that file
        pa.field("_order", pa.int64()),  # primary order within a learner (null: file order)
        pa.field("_merge", pa.int64()),  # equal non-null values of one learner merge into one row
        pa.field("_dup", pa.uint64()),  # equal non-null values of one learner: later rows dropped
    ]
)

LOADER_COLUMNS = [f.name for f in INTERACTIONS if f.name not in ("seq", "source")]
#: What the writer spills per partition: the loader columns and the internal ones.
SPILL = pa.schema([*(f for f in INTERACTIONS if f.name in LOADER_COLUMNS), *INTERNAL])

#: How every table of a dataset is written to Parquet (the interactions narrow the
#: dictionary pages to their string columns).
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "use_dictionary": True,
    "write_statistics": True,
}
