"""The ``tabular`` benchmark format: tab-separated ``user item timestamp correct skill`` files.

Read whole with one ``pyarrow.csv`` parse per file; :class:`_LineScan` keeps the physical line
number of every row (and blanks out lines over ``max_line_bytes`` before the parse) so that
rejected rows point at their real line. The rules shared with the other benchmark formats
(splits from file names, timestamps, over-long lines) are in :mod:`.benchmark_formats`.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from .base import Loader, Option
from .benchmark_formats import MAX_LINE_OPTION, data_files, parse_timestamp, split_from_name
from .errors import IngestError, require_columns
from .inputs import PREVIEW_BYTES, LongLine, check_utf8, max_line_bytes, too_long_detail


class TabularLoader(Loader):
    """Tab-separated ``user_id item_id timestamp correct skill_id`` files with a header.

    ``correct`` must be ``0`` or ``1``; ``timestamp`` (optional; empty = none) must be a whole
    number of milliseconds since 1970-01-01 UTC in [1970-01-01, 2200-01-01)
    (:func:`parse_timestamp`). A row that breaks either is rejected with the field and the
    value (``correct not 0 or 1``, ``bad timestamp``, ``timestamp out of range``) and the
    ingest goes on: no value is turned into a null. Rows longer than ``max_line_bytes`` are
    rejected (``line too long``), rows with another number of fields than the header
    (``wrong number of fields``). Rejected rows carry their real line number in the file.
    """

    name = "tabular"
    summary = "tab-separated user item timestamp correct skill files, optional q_mat.npz"
    options = (
        Option("q_matrix", bool, True, "use q_mat.npz beside the files for item skills"),
        MAX_LINE_OPTION,
    )

    def load(self) -> None:
        root = self.ctx.input
        max_line = max_line_bytes(self.opts)
        files = data_files(root)
        if not files:
            raise IngestError("no data files found", file=str(root))
        qmat = self._q_matrix(root) if self.opts["q_matrix"] else None
        if qmat is not None:
            self.writer.note("concepts_from", "q_mat.npz (item x skill matrix)")
        self.start_progress(files)
        order = 0
        for f in files:
            idx = self.register(f)
            split, fold = split_from_name(f.member or f.path.name)
            data = f.read_bytes()
            data = check_utf8(data, f.name, self.ctx.encoding)
            if not data.strip():
                continue
            scan = _scan_lines(data, max_line)
            if scan.header_too_long is not None:
                raise IngestError(
                    f"the header {too_long_detail(scan.header_too_long[1], max_line)}",
                    file=f.name,
                    line=scan.header_too_long[0],
                )
            for lineno, size, head in scan.long:
                self.reject_read(
                    idx, lineno, LongLine.REASON, head, too_long_detail(size, max_line)
                )
            data = scan.data
            bad: list[tuple[int | None, str]] = []

            def handler(row: pacsv.InvalidRow, bad: list = bad) -> str:
                bad.append((row.number, row.text))
                return "skip"

            try:
                table = pacsv.read_csv(
                    io.BytesIO(data),
                    read_options=pacsv.ReadOptions(use_threads=False),
                    parse_options=pacsv.ParseOptions(delimiter="\t", invalid_row_handler=handler),
                    convert_options=pacsv.ConvertOptions(
                        column_types={
                            c: pa.string()
                            for c in ("user_id", "item_id", "timestamp", "correct", "skill_id")
                        }
                    ),
                )
            except pa.ArrowInvalid as exc:
                raise IngestError(
                    f"cannot parse as tab-separated values: {exc}", file=f.name
                ) from exc
            cols = table.column_names
            require_columns(cols, ("user_id", "item_id", "correct"), file=f.name, header=str(cols))
            n = table.num_rows
            bad_lines, lines = scan.row_lines([b[0] for b in bad], n)
            for line, (_, text) in zip(bad_lines, bad, strict=True):
                self.reject_read(idx, line, "wrong number of fields", text)
            self.writer.count_read(n)
            correct = table.column("correct").to_pylist()
            ok = np.array([c in ("0", "1") for c in correct], dtype=bool)
            if not ok.all():
                badi = np.flatnonzero(~ok)
                self.writer.reject_many(
                    np.full(len(badi), idx),
                    lines[badi],
                    "correct not 0 or 1",
                    [scan.raw(int(line)) for line in lines[badi]],
                    [f"correct={correct[i]!r}" for i in badi],
                )
            stamps: list[int | None] | None = None
            if "timestamp" in cols:
                stamps, problems = _timestamps(table.column("timestamp").to_pylist(), ok)
                if problems:
                    rows = np.array([p[0] for p in problems], dtype=np.int64)
                    self.writer.reject_many(
                        np.full(len(rows), idx),
                        lines[rows],
                        [p[1] for p in problems],
                        [scan.raw(int(line)) for line in lines[rows]],
                        [p[2] for p in problems],
                    )
                    ok[rows] = False
            if not ok.all():
                table = table.filter(pa.array(ok))
                lines = lines[ok]
                if stamps is not None:
                    stamps = [v for v, keep in zip(stamps, ok, strict=True) if keep]
            items = table.column("item_id").to_pylist()
            if qmat is not None:
                concept_lists = [qmat.get(int(it), []) if it.isdigit() else [] for it in items]
            elif "skill_id" in table.column_names:
                concept_lists = [
                    [s] if s not in (None, "") else [] for s in table.column("skill_id").to_pylist()
                ]
            else:
                concept_lists = [[] for _ in items]
            m = table.num_rows
            chunk: dict[str, pa.Array] = {
                "user_id": table.column("user_id"),
                "item_id": table.column("item_id"),
                "concept_ids": pa.array(concept_lists, pa.list_(pa.string())),
                "correct": pa.array(
                    np.array([int(c) for c in table.column("correct").to_pylist()], dtype=np.int8)
                ),
                "_file": pa.array(np.full(m, idx, dtype=np.int32)),
                "_line": pa.array(lines),
                "_order": pa.array(np.arange(order, order + m, dtype=np.int64)),
            }
            # the files' timestamp is 0 everywhere where the source has no clock
            if stamps is not None and any(v not in (None, 0) for v in stamps):
                chunk["timestamp"] = pa.array(stamps, pa.int64())
            if split is not None:
                chunk["split"] = pa.array([split] * m, pa.string())
                chunk["fold"] = pa.array([fold] * m, pa.int16())
            order += m
            self.writer.add_interactions(pa.table(chunk))
            self.writer.progress.advance(f.size())

    def _q_matrix(self, root: Path) -> dict[int, list[str]] | None:
        base = root if root.is_dir() else root.parent
        p = base / "q_mat.npz"
        if not p.is_file():
            return None
        try:
            z = np.load(p, allow_pickle=False)
            indptr, indices = z["indptr"], z["indices"]
        except Exception as exc:  # noqa: BLE001 - any unreadable npz is the same error
            raise IngestError(
                f"not a scipy CSR matrix (.npz with indptr/indices): {exc}", file=str(p)
            ) from exc
        return {
            i: [str(int(s)) for s in indices[indptr[i] : indptr[i + 1]]]
            for i in range(len(indptr) - 1)
        }


def _timestamps(
    values: list[str | None], check: np.ndarray
) -> tuple[list[int | None], list[tuple[int, str, str]]]:
    """Timestamp cells -> values (empty: None) and (row, reason, detail) of the bad ones among
    the rows where ``check`` is true."""
    out: list[int | None] = []
    problems: list[tuple[int, str, str]] = []
    for i, t in enumerate(values):
        if t is None or not t.strip():
            out.append(None)
            continue
        v = parse_timestamp(t) if check[i] else None
        if isinstance(v, tuple):
            problems.append((i, v[0], v[1]))
            v = None
        out.append(v)
    return out, problems


class _LineScan:
    """Where a delimited file's lines are: the physical line number of every row the CSV
    reader sees (it skips empty lines), each line's text for rejected.parquet, and the lines
    over the length limit, blanked out of ``data`` so that the reader skips them too."""

    def __init__(
        self,
        data: bytes,
        starts: np.ndarray,
        rows: np.ndarray,
        long: list[tuple[int, int, str]],
        header_too_long: tuple[int, int] | None,
    ) -> None:
        self.data = data
        self.starts = starts  # offset in ``data`` of every line, then len(data) + 1
        self.rows = rows  # 1-based line numbers of the non-empty lines (header first)
        self.long = long  # (line, size in bytes, first bytes) of each over-long data line
        self.header_too_long = header_too_long  # (line, size) when the header is over-long

    def raw(self, line: int | None) -> str | None:
        """The text of a line (1-based), cut at 2000 characters."""
        if line is None or not 0 < line < len(self.starts):
            return None
        a, b = int(self.starts[line - 1]), int(self.starts[line]) - 1
        return (
            self.data[a : min(b, a + 4 * 2000)]
            .decode("utf-8", errors="replace")[:2000]
            .rstrip("\r\n")
        )

    def row_lines(
        self, bad_numbers: list[int | None], n_parsed: int
    ) -> tuple[list[int | None], np.ndarray]:
        """Line numbers of the rows the reader rejected (its 1-based row numbers, header
        included) and of the ``n_parsed`` rows it kept."""
        bad_index = [b - 1 for b in bad_numbers if b is not None and 0 < b <= len(self.rows)]
        if len(self.rows) - 1 != n_parsed + len(bad_numbers) or len(bad_index) != len(
            bad_numbers
        ):  # pragma: no cover - a reader that counts rows otherwise: number them in order
            skipped = sorted(b for b in bad_numbers if b is not None)
            return list(bad_numbers), _lines_after_skips(n_parsed, skipped)
        keep = np.ones(len(self.rows), dtype=bool)
        keep[0] = False
        keep[bad_index] = False
        return [int(self.rows[i]) for i in bad_index], self.rows[keep]


def _scan_lines(data: bytes, max_bytes: int) -> _LineScan:
    """Find the lines of ``data`` (``\\n`` or ``\\r\\n``; ``\\r`` alone where the file has no
    ``\\n``), without copying it unless a line is over ``max_bytes``."""
    sep = 10 if b"\n" in data or b"\r" not in data else 13
    buf = np.frombuffer(data, dtype=np.uint8)
    step = 1 << 26  # bounded temporary memory: 64 MiB of flags at a time
    parts = [np.flatnonzero(buf[s : s + step] == sep) + s for s in range(0, len(buf), step)]
    nl = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    # line i spans starts[i] .. starts[i + 1] - 1 (its newline, or the end of the text)
    starts = np.concatenate([[0], nl + 1]).astype(np.int64)
    if starts[-1] != len(buf):  # the last line has no newline
        starts = np.append(starts, len(buf) + 1)
    size = np.diff(starts) - 1
    if sep == 10 and len(size):
        ends = starts[1:] - 1
        size = size - ((size > 0) & (buf[np.maximum(ends - 1, 0)] == 13))
    empty = size == 0
    too_long = size > max_bytes
    nonempty = np.flatnonzero(~empty)
    if len(nonempty) and too_long[nonempty[0]]:
        first = int(nonempty[0])
        return _LineScan(data, starts, starts[:0], [], (first + 1, int(size[first])))
    long: list[tuple[int, int, str]] = []
    if too_long.any():
        pieces = []
        prev = 0
        removed = np.zeros(len(starts), dtype=np.int64)
        for i in np.flatnonzero(too_long):
            a, b = int(starts[i]), int(starts[i + 1]) - 1
            head = data[a : a + PREVIEW_BYTES].decode("utf-8", errors="replace")
            long.append((int(i) + 1, int(size[i]), head))
            pieces.append(data[prev:a])
            prev = b  # keep the newline: an empty line the reader skips
            removed[i + 1] = b - a
        pieces.append(data[prev:])
        data = b"".join(pieces)
        starts = starts - np.cumsum(removed)
    rows = np.flatnonzero(~empty & ~too_long).astype(np.int64) + 1
    return _LineScan(data, starts, rows, long, None)


def _lines_after_skips(n: int, skipped_lines: list[int]) -> np.ndarray:
    """Line numbers of ``n`` parsed rows (data starts on line 2) around skipped lines."""
    out = np.empty(n, dtype=np.int64)
    skipped = set(skipped_lines)
    line = 2
    for i in range(n):
        while line in skipped:
            line += 1
        out[i] = line
        line += 1
    return out
