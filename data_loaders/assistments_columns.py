"""Column-wise work on one parsed ASSISTments CSV batch (every field read as a string).

Numbers and dates are parsed vectorised with a validity mask (:func:`parse_float`,
:func:`parse_int`, :func:`parse_datetime_ms`); :func:`row_hash` hashes each row's raw
fields so that the writer can drop exact duplicates; :class:`Batch` tracks which rows are
still alive and collects the rejected ones (reason, detail and their CSV text) for
``rejected.parquet``; :func:`number_rows` gives every parsed row its line in the file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

RAW_LIMIT = 2000

_INT_RE = r"^[+-]?\d{1,18}(\.0*)?$"
_FLOAT_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_DATETIME_RE = (
    r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?"
    r"\s*(Z|[+-]\d{2}(:?\d{2})?)?$"
)
_ZONED_RE = r"[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|[+-]\d{2}(:?\d{2})?)$"


# ---------------------------------------------------------------------- parsing values
def _trim(col: pa.Array) -> pa.Array:
    return pc.utf8_trim_whitespace(col)


def np_bool(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow array as a NumPy mask (null: false)."""
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def parse_float(s: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Float values of a trimmed string column and where they are valid finite numbers."""
    ok = np_bool(pc.match_substring_regex(s, _FLOAT_RE))
    if not ok.any():
        return np.zeros(len(s)), ok
    safe = s if ok.all() else pc.if_else(pa.array(ok), s, pa.scalar("0"))
    vals = pc.cast(safe, pa.float64()).to_numpy(zero_copy_only=False)
    ok &= np.isfinite(vals)
    return np.where(ok, vals, 0.0), ok


def parse_int(s: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """int64 values of a trimmed string column (``12`` or ``12.0``) and where they are valid."""
    ok = np_bool(pc.match_substring_regex(s, _INT_RE))
    if not ok.any():
        return np.zeros(len(s), dtype=np.int64), ok
    safe = s if ok.all() else pc.if_else(pa.array(ok), s, pa.scalar("0"))
    if pc.any(pc.match_substring(safe, ".")).as_py():
        safe = pc.replace_substring_regex(safe, r"\.0*$", "")
    vals = pc.cast(safe, pa.int64()).to_numpy(zero_copy_only=False)
    return np.where(ok, vals, 0), ok


def _cast_ns(s: pa.Array, typ: pa.DataType) -> tuple[np.ndarray, np.ndarray]:
    """Cast strings to a ns timestamp; values Arrow cannot parse are found by bisection."""
    try:
        out = pc.cast(pc.cast(s, typ), pa.int64()).to_numpy(zero_copy_only=False)
        return out, np.ones(len(s), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if len(s) == 1:
            return np.zeros(1, dtype=np.int64), np.zeros(1, dtype=bool)
        mid = len(s) // 2
        a, oka = _cast_ns(s.slice(0, mid), typ)
        b, okb = _cast_ns(s.slice(mid), typ)
        return np.concatenate([a, b]), np.concatenate([oka, okb])


def parse_datetime_ms(s: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """ms since the epoch (UTC) of ``YYYY-MM-DD[ HH:MM[:SS[.f]]][zone]`` strings."""
    n = len(s)
    out = np.zeros(n, dtype=np.int64)
    ok = np_bool(pc.match_substring_regex(s, _DATETIME_RE))
    if not ok.any():
        return out, ok
    zoned = np_bool(pc.match_substring_regex(s, _ZONED_RE)) & ok
    for mask, typ in ((ok & ~zoned, pa.timestamp("ns")), (zoned, pa.timestamp("ns", tz="UTC"))):
        if not mask.any():
            continue
        rows = np.flatnonzero(mask)
        vals, good = _cast_ns(s.take(pa.array(rows)), typ)
        out[rows] = vals // 1_000_000
        ok[rows[~good]] = False
    return out, ok


_HASH_TABLE = np.random.default_rng(0x5EED).integers(
    0, np.iinfo(np.uint64).max, size=256 * 256, dtype=np.uint64, endpoint=True
)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit affects every output bit."""
    h = h ^ (h >> np.uint64(30))
    h *= _M1
    h ^= h >> np.uint64(27)
    h *= _M2
    return h ^ (h >> np.uint64(31))


def _string_hash(arr: pa.Array) -> np.ndarray:
    """A 64-bit hash of each string: tabulation over (position, byte), vectorised."""
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + n + 1]
    lens = np.diff(offsets)
    out = lens.astype(np.uint64) * _GOLDEN
    total = int(offsets[-1] - offsets[0])
    if total:
        data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        starts = offsets[:-1] - offsets[0]
        pos = np.arange(total, dtype=np.int32)  # a batch is far below 2 GiB
        pos -= np.repeat(starts, lens)
        key = (pos & 255).astype(np.uint16) << 8
        key |= data
        vals = _HASH_TABLE[key]
        if lens.max() > 256:  # positions beyond 256 bytes: fold in which 256-byte block
            vals ^= (pos >> 8).astype(np.uint64) * _M1
        nonempty = lens > 0
        out[nonempty] += np.add.reduceat(vals, starts[nonempty])
    if arr.null_count:
        out[np_bool(arr.is_null())] = np.uint64(0x6E756C6C)
    return out


def row_hash(columns: list[pa.Array]) -> np.ndarray:
    """A 64-bit hash of each row's raw values (all columns, in header order)."""
    out = np.full(len(columns[0]) if columns else 0, 0x345678, dtype=np.uint64)
    for col in columns:
        out = _mix(out * _GOLDEN + _string_hash(col))
    return out


def _raw_text(columns: list[pa.Array], rows: np.ndarray) -> list[str | None]:
    """The rows' fields joined back into CSV text (quoted where needed), for rejected.parquet."""
    if len(rows) == 0:
        return []
    idx = pa.array(rows, pa.int64())
    parts = []
    for col in columns:
        c = col.take(idx)
        needs = pc.match_substring_regex(c, '[",\r\n]')
        quoted = pc.binary_join_element_wise(
            pa.scalar('"'), pc.replace_substring(c, '"', '""'), pa.scalar('"'), pa.scalar("")
        )
        parts.append(pc.if_else(needs, quoted, c))
    joined = pc.binary_join_element_wise(*parts, pa.scalar(","))
    return pc.utf8_slice_codeunits(joined, 0, RAW_LIMIT).to_pylist()


def single_concepts(values: pa.Array, none: np.ndarray) -> pa.ListArray:
    """One concept per row (``values``), or none where ``none`` is set."""
    lens = (~none).astype(np.int32)
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(lens, out=offsets[1:])
    kept = values.filter(pa.array(~none)) if none.any() else values
    return pa.ListArray.from_arrays(pa.array(offsets), pc.cast(kept, pa.string()))


# ---------------------------------------------------------------------- one batch
class Batch:
    """One parsed CSV batch: its raw columns, line numbers and which rows are still alive."""

    def __init__(self, names: list[str], columns: list[pa.Array], lines: np.ndarray) -> None:
        self.names = names
        self.columns = columns
        self.col = dict(zip(names, columns, strict=True))
        self.lines = lines
        self.n = len(lines)
        self.alive = np.ones(self.n, dtype=bool)
        self._rows: list[np.ndarray] = []
        self._reasons: list[str] = []
        self._details: list[str | None] = []
        self._trimmed: dict[str, pa.Array] = {}

    def trimmed(self, name: str) -> pa.Array:
        if name not in self._trimmed:
            self._trimmed[name] = _trim(self.col[name])
        return self._trimmed[name]

    def reject(
        self,
        bad: np.ndarray,
        reason: str,
        detail: Callable[[int], str] | None = None,
    ) -> None:
        """Reject the live rows where ``bad`` is set; ``detail(row)`` describes one row."""
        rows = np.flatnonzero(self.alive & bad)
        if len(rows) == 0:
            return
        self.alive[rows] = False
        self._rows.append(rows)
        self._reasons.extend([reason] * len(rows))
        self._details.extend(detail(int(r)) if detail else None for r in rows)

    def value_detail(self, name: str) -> Callable[[int], str]:
        values = self.col[name]
        return lambda r: f"{name}={values[r].as_py()!r}"

    def flush_rejected(self, writer: Any, file_index: int) -> None:
        if not self._rows:
            return
        rows = np.concatenate(self._rows)
        writer.reject_many(
            np.full(len(rows), file_index, dtype=np.int32),
            self.lines[rows],
            self._reasons,
            _raw_text(self.columns, rows),
            self._details,
        )


def number_rows(n: int, next_line: int, pending: list[int]) -> tuple[np.ndarray, int, list[int]]:
    """Line numbers of ``n`` parsed rows starting at ``next_line``, around invalid rows.

    ``pending`` holds the (sorted) line numbers of rows the CSV reader skipped as invalid;
    the ones passed are consumed.
    """
    lines = np.arange(next_line, next_line + n, dtype=np.int64)
    used = 0
    for bad in pending:
        if n == 0 or bad > lines[-1]:
            break
        used += 1
        if bad < lines[0]:
            continue
        i = int(np.searchsorted(lines, bad))
        lines[i:] += 1
    rest = pending[used:]
    return lines, (int(lines[-1]) + 1 if n else next_line), rest


def int_key(b: Batch, column: str, reason: str) -> np.ndarray:
    """An integer order key of the batch's rows; rows where it is not one are rejected."""
    vals, ok = parse_int(b.trimmed(column))
    b.reject(~ok, reason, b.value_detail(column))
    return vals
