"""Reading a canonical dataset directory and summarising it (``tutor dataset info``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from . import schema
from .errors import DatasetError


@dataclass
class Dataset:
    """A canonical dataset directory written by :class:`~data_loaders.writer.DatasetWriter`."""

    path: Path

    @classmethod
    def open(cls, path: Path | str) -> Dataset:
        path = Path(path)
        if not path.is_dir():
            raise DatasetError(f"{path}: not a dataset directory (it does not exist)")
        manifest = path / "manifest.json"
        if not manifest.is_file():
            raise DatasetError(f"{path}: not a dataset directory (no manifest.json)")
        ds = cls(path)
        version = ds.manifest.get("schema_version")
        if version != schema.SCHEMA_VERSION:
            raise DatasetError(
                f"{path}: schema version {version}, this kt-tutor reads {schema.SCHEMA_VERSION}"
            )
        if not (path / "interactions").is_dir():
            raise DatasetError(f"{path}: incomplete dataset (no interactions/ directory)")
        return ds

    @cached_property
    def manifest(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / "manifest.json").read_text())
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{self.path / 'manifest.json'}: not valid JSON ({exc})") from exc

    @property
    def partitions(self) -> list[Path]:
        return sorted((self.path / "interactions").glob("part-*.parquet"))

    def arrow_dataset(self) -> pads.Dataset:
        return pads.dataset([str(p) for p in self.partitions], format="parquet")

    def interactions(self, columns: list[str] | None = None) -> pa.Table:
        """All interactions, sorted by partition then (user_id, seq). Loads them in memory."""
        tables = [pq.read_table(p, columns=columns) for p in self.partitions]
        if not tables:
            return schema.INTERACTIONS.empty_table()
        return pa.concat_tables(tables)

    def iter_partitions(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """One table per partition; each learner's whole history is in exactly one of them."""
        for p in self.partitions:
            yield pq.read_table(p, columns=columns)

    def items(self) -> pa.Table:
        return pq.read_table(self.path / "items.parquet")

    def concepts(self) -> pa.Table:
        return pq.read_table(self.path / "concepts.parquet")

    def rejected(self) -> pa.Table:
        return pq.read_table(self.path / "rejected.parquet")

    def events(self) -> pa.Table | None:
        p = self.path / "events.parquet"
        return pq.read_table(p) if p.is_file() else None

    def info(self) -> dict[str, Any]:
        """The dataset summary: counts, correct rate, sequence lengths, time span, rejections."""
        m = self.manifest
        lengths: list[np.ndarray] = []
        n_rows = 0
        n_correct = 0
        tmin = tmax = None
        with_time = 0
        splits: dict[str, int] = {}
        folds: dict[str, int] = {}
        for t in self.iter_partitions(["user_id", "correct", "timestamp", "split", "fold"]):
            n_rows += t.num_rows
            n_correct += int(pc.sum(t.column("correct")).as_py() or 0)
            counts = t.group_by("user_id").aggregate([("correct", "count")])
            lengths.append(counts.column("correct_count").to_numpy())
            ts = t.column("timestamp")
            with_time += len(ts) - ts.null_count
            if len(ts) - ts.null_count:
                mm = pc.min_max(ts)
                lo, hi = mm["min"].as_py(), mm["max"].as_py()
                tmin = lo if tmin is None or lo < tmin else tmin
                tmax = hi if tmax is None or hi > tmax else tmax
            for col, acc in (("split", splits), ("fold", folds)):
                c = t.column(col)
                if c.null_count < len(c):
                    vc = pc.value_counts(c.drop_null() if hasattr(c, "drop_null") else c)
                    for entry in vc.to_pylist():
                        key = str(entry["values"])
                        acc[key] = acc.get(key, 0) + int(entry["counts"])
        seq = np.concatenate(lengths) if lengths else np.zeros(0)
        q = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
        quant = {f"p{int(x * 100)}": float(np.quantile(seq, x)) for x in q} if len(seq) else {}
        items = pq.read_metadata(self.path / "items.parquet").num_rows
        concepts = pq.read_metadata(self.path / "concepts.parquet").num_rows
        rejected = pq.read_metadata(self.path / "rejected.parquet").num_rows
        out: dict[str, Any] = {
            "path": str(self.path),
            "format": m.get("format"),
            "learners": int(len(seq)),
            "interactions": n_rows,
            "items": items,
            "items_answered": m.get("counts", {}).get("items_answered"),
            "concepts": concepts,
            "correct_rate": round(n_correct / n_rows, 4) if n_rows else None,
            "sequence_length": {"mean": float(seq.mean()) if len(seq) else None, **quant},
            "time_span": {
                "first": tmin.isoformat() if tmin is not None else None,
                "last": tmax.isoformat() if tmax is not None else None,
                "rows_with_timestamp": with_time,
            },
            "rows_read": m.get("counts", {}).get("rows_read"),
            "rejected": rejected,
            "rejected_by_reason": m.get("rejected_by_reason", {}),
            "skipped_by_reason": m.get("skipped_by_reason", {}),
            "duplicates_dropped": m.get("counts", {}).get("duplicates_dropped"),
            "multi_skill_rows_merged": m.get("counts", {}).get("multi_skill_rows_merged"),
            "multi_skill": m.get("notes", {}).get("multi_skill"),
            "events": m.get("counts", {}).get("events", 0),
            "splits": dict(sorted(splits.items())),
            "folds": dict(sorted(folds.items())),
            "created_at": m.get("created_at"),
        }
        return out


def open_dataset(path: Path | str) -> Dataset:
    return Dataset.open(path)
