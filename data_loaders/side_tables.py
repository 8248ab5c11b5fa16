"""The side tables a writer puts beside the partitions at close, and the manifest.

``items.parquet`` (the loader's item catalogue merged with the (item, concept) pairs the
interactions use), ``concepts.parquet`` (every concept with its name, if any),
``rejected.parquet`` (every rejected input row: file, line, reason, detail, raw text) and
the :class:`Manifest` written as ``manifest.json``. Items and concepts are in natural order
(numeric ids by value, then the others by text), so the same input gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import schema


@dataclass
class Manifest:
    """``manifest.json``: what was ingested, how, and the counts of every outcome."""

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


def jsonable(v: Any) -> Any:
    """An option value as the manifest keeps it (paths as strings)."""
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return v


def _natural_key(value: str) -> tuple[int, int, str]:
    return (0, int(value), "") if value.isdigit() and len(value) < 19 else (1, 0, value)


def natural_sort_indices(values: Sequence[str]) -> np.ndarray:
    return np.array(
        sorted(range(len(values)), key=lambda i: _natural_key(values[i])), dtype=np.int64
    )


def distinct(table: pa.Table) -> pa.Table:
    """Distinct rows, in order of first appearance."""
    keys = table.column_names
    indexed = table.append_column("_row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    first = indexed.group_by(keys, use_threads=False).aggregate([("_row", "min")])
    return first.sort_by("_row_min").select(keys)


def item_concept_pairs(table: pa.Table) -> pa.Table:
    """The distinct (item_id, concept_id) pairs of interactions; null concept: none."""
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
    return distinct(pairs)


def write_items(
    directory: Path, catalogue: list[pa.Table], pairs: list[pa.Table]
) -> tuple[dict[str, int], set[str]]:
    """Write ``items.parquet``: the catalogue's items, then the answered items it lacks.

    Returns the counts (``total``, ``answered``) and every concept an item names.
    """
    observed = distinct(pa.concat_tables(pairs))
    answered_items = pc.unique(observed.column("item_id")).to_pylist()
    obs_concepts: dict[str, list[str]] = {}
    for it, c in zip(
        observed.column("item_id").to_pylist(),
        observed.column("concept_id").to_pylist(),
        strict=True,
    ):
        if c is not None:
            obs_concepts.setdefault(it, []).append(c)
    if catalogue:
        cat = pa.concat_tables(catalogue, promote_options="permissive")
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
    pq.write_table(pa.table(cols), directory / "items.parquet", **schema.PARQUET_OPTIONS)
    item_concepts = {c for lst in concept_lists for c in lst}
    return {"total": len(all_ids), "answered": len(answered_items)}, item_concepts


def write_concepts(
    directory: Path,
    item_concepts: set[str],
    names: dict[str, str | None],
    names_only: dict[str, str | None],
) -> int:
    """Write ``concepts.parquet``: the items' concepts and the catalogued ones, named where
    ``names`` (the catalogue) or else ``names_only`` (labels) has a name; returns the count."""
    ids = set(item_concepts) | set(names)
    ids_list = sorted(ids, key=_natural_key)
    table = pa.table(
        {
            "concept_id": pa.array(ids_list, pa.string()),
            "name": pa.array(
                [names.get(c) or names_only.get(c) for c in ids_list],
                pa.string(),
            ),
        },
        schema=schema.CONCEPTS,
    )
    pq.write_table(table, directory / "concepts.parquet", **schema.PARQUET_OPTIONS)
    return len(ids_list)


def write_rejected(directory: Path, rejected: list[pa.RecordBatch], files: list[str]) -> int:
    """Write ``rejected.parquet`` sorted by file and line (``_file`` indexes ``files``)."""
    if rejected:
        t = pa.Table.from_batches(rejected)
        t = t.take(
            pc.sort_indices(
                t, [("_file", "ascending", "at_start"), ("line", "ascending", "at_start")]
            )
        )
        names = pa.array(files, pa.string())
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
    pq.write_table(out, directory / "rejected.parquet", **schema.PARQUET_OPTIONS)
    return out.num_rows
