"""Reading EdNet inputs: the learner files and their CSV text, with exact line numbers.

EdNet ships one CSV file per learner (``u<id>.csv``), in a directory or a .zip archive.
:class:`LearnerFiles` lists the data files of an input (the ``*.csv`` / ``*.csv.gz`` files,
except the EdNet-Contents tables and anything under a ``contents/`` directory) and reads them
(gzip detected from the bytes). :func:`parse_strings` parses one file into string columns
with the physical line of every row, and :func:`raw_lines` recovers a row's text for
``rejected.parquet``.
"""

from __future__ import annotations

import csv
import gzip
import os
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .errors import IngestError
from .inputs import GZIP_MAGIC, InputFile, check_utf8

_CONTENTS_STEMS = {"questions", "lectures", "payments", "coupons"}
BOM = b"\xef\xbb\xbf"
_INT_RE = r"^[+-]?[0-9]{1,18}$"


# ---------------------------------------------------------------------- input files
@dataclass(frozen=True)
class LearnerFile:
    """One learner file (cheaper than :class:`InputFile` for many thousand files)."""

    name: str  # as in messages and rejected.parquet (what ``list_files`` would call it)
    path: str  # the file, or the zip archive
    member: str | None
    stem: str
    size: int


def _stem(base: str) -> str:
    low = base.lower()
    if low.endswith(".gz"):
        base, low = base[:-3], low[:-3]
    if low.endswith(".csv"):
        base = base[:-4]
    return base


def _is_data_name(base: str) -> bool:
    low = base.lower()
    return (
        (low.endswith(".csv") or low.endswith(".csv.gz"))
        and not low.startswith((".", "__macosx"))
        and _stem(low) not in _CONTENTS_STEMS
    )


class LearnerFiles:
    """The data files of an EdNet input (directory, single file or .zip), read cheaply.

    Same files and order as :func:`inputs.list_files` (sorted by path), without a ``Path``
    per file, and a .zip archive is opened once (``InputFile`` reopens the archive for every
    member, which is quadratic over an archive of many thousand learner files).
    """

    def __init__(self, root: Path, exclude: InputFile | None) -> None:
        self.root = root
        self._zip: zipfile.ZipFile | None = None
        skip_path = str(exclude.path) if exclude is not None else None
        skip_member = exclude.member if exclude is not None else None
        files: list[LearnerFile] = []
        if root.is_file() and zipfile.is_zipfile(root):
            self._zip = zipfile.ZipFile(root)
            infos = sorted(
                (i for i in self._zip.infolist() if not i.is_dir()), key=lambda i: i.filename
            )
            for i in infos:
                parts = i.filename.split("/")
                if not _is_data_name(parts[-1]) or "contents" in (p.lower() for p in parts[:-1]):
                    continue
                if skip_path == str(root) and skip_member == i.filename:
                    continue
                name = f"{root.name}:{i.filename}"
                files.append(
                    LearnerFile(name, str(root), i.filename, _stem(parts[-1]), i.compress_size)
                )
        elif root.is_file():
            files.append(
                LearnerFile(str(root), str(root), None, _stem(root.name), root.stat().st_size)
            )
        elif root.is_dir():
            found: list[tuple[tuple[str, ...], str, int]] = []
            self._walk(str(root), (), found)
            found.sort()
            for rel, path, size in found:
                if path == skip_path or any(p.lower() == "contents" for p in rel[:-1]):
                    continue
                files.append(LearnerFile(path, path, None, _stem(rel[-1]), size))
        else:
            raise IngestError("input not found", file=str(root))
        self.files = files

    def _walk(self, top: str, rel: tuple[str, ...], out: list) -> None:
        with os.scandir(top) as it:
            for e in it:
                if e.is_dir():
                    self._walk(e.path, (*rel, e.name), out)
                elif _is_data_name(e.name) and e.is_file():
                    out.append(((*rel, e.name), e.path, e.stat().st_size))

    def read(self, f: LearnerFile) -> bytes:
        try:
            if self._zip is not None:
                data = self._zip.read(f.member or "")
            else:
                with open(f.path, "rb") as fh:
                    data = fh.read()
        except (OSError, zipfile.BadZipFile, zlib.error) as exc:
            raise IngestError(f"cannot read ({exc})", file=f.name) from exc
        if data[:2] == GZIP_MAGIC:
            try:
                data = gzip.decompress(data)
            except (EOFError, OSError, zlib.error) as exc:
                raise IngestError(f"corrupt or truncated gzip data ({exc})", file=f.name) from exc
        return data

    def read_many(self, order: Sequence[int], group: int = 256) -> Iterator[tuple[int, bytes]]:
        """(position, bytes) of the files in ``order``, read one group ahead on a thread.

        File reads and gunzipping release the GIL, so they overlap the parsing; memory
        stays at two groups of files.
        """
        groups = [order[i : i + group] for i in range(0, len(order), group)]
        if not groups:
            return

        def read(positions: Sequence[int]) -> list[bytes]:
            return [self.read(self.files[i]) for i in positions]

        with ThreadPoolExecutor(max_workers=1) as pool:
            ahead = pool.submit(read, groups[0])
            for k, positions in enumerate(groups):
                datas = ahead.result()
                if k + 1 < len(groups):
                    ahead = pool.submit(read, groups[k + 1])
                yield from zip(positions, datas, strict=True)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("-", "").replace("_", "") in ("utf8", "utf8sig")


def _raw_line(data: bytes, line: int) -> str:
    """Physical line ``line`` (1-based) of ``data``, as text."""
    start = 0
    for _ in range(line - 1):
        start = data.find(b"\n", start) + 1
        if start == 0:
            return ""
    end = data.find(b"\n", start)
    text = data[start : end if end >= 0 else len(data)]
    return text.rstrip(b"\r").decode("utf-8", "replace")[:2000]


def raw_lines(data: bytes, lines: Sequence[int]) -> list[str]:
    if len(lines) > 8:
        split = data.split(b"\n")
        return [
            split[n - 1].rstrip(b"\r").decode("utf-8", "replace")[:2000]
            if 0 < n <= len(split)
            else ""
            for n in lines
        ]
    return [_raw_line(data, int(n)) for n in lines]


# ---------------------------------------------------------------------- parsing
@dataclass
class Parsed:
    """A file's rows as string columns, with the physical line of each row."""

    header: list[str]
    data: bytes  # the file as UTF-8
    table: pa.Table  # one string column per header name
    lines: np.ndarray  # int64, 1-based physical line of each row
    bad: list[tuple[int, str, str, str]]  # (line, reason, raw, detail)


def _header_names(data: bytes) -> tuple[list[str], int]:
    """The header's column names and the offset of the first data line."""
    if data.startswith(BOM):
        data = data[3:]
        shift = 3
    else:
        shift = 0
    nl = data.find(b"\n")
    first = data[: nl if nl >= 0 else len(data)].rstrip(b"\r").decode("utf-8", "replace")
    names = next(csv.reader([first]), [])
    return [n.strip() for n in names], (nl + 1 + shift if nl >= 0 else len(data) + shift)


def count_lines(data: bytes, start: int) -> int:
    """Newline-delimited lines in ``data[start:]`` (a last line without newline counts)."""
    n = data.count(b"\n", start)
    if len(data) > start and not data.endswith(b"\n"):
        n += 1
    return n


def valid_utf8(buf: bytes) -> bool:
    try:
        buf.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def line_aligned(buf: bytes) -> bool:
    """Every ``\\r`` is part of ``\\r\\n`` (a lone ``\\r`` would end a row for pyarrow)."""
    return b"\r" not in buf or buf.count(b"\r") == buf.count(b"\r\n")


def parse_strings(data: bytes, name: str, encoding: str = "utf-8") -> Parsed:
    """Parse a CSV file with a header into string columns with exact line numbers.

    Tries one pyarrow parse (trusted when its rows match the lines one to one), else reads
    the file with the csv module line by line, rejecting rows with a wrong field count.
    """
    data = check_utf8(data, name, encoding)
    header, start = _header_names(data)
    if not header or header == [""]:
        return Parsed(header, data, pa.table({}), np.zeros(0, np.int64), [])
    expected = count_lines(data, start)
    body = memoryview(data)[start:]
    if len(set(header)) == len(header) and line_aligned(data):
        try:
            table = pacsv.read_csv(
                pa.py_buffer(body),
                read_options=pacsv.ReadOptions(column_names=header, use_threads=False),
                convert_options=pacsv.ConvertOptions(
                    column_types={h: pa.string() for h in header}, strings_can_be_null=False
                ),
            )
            if table.num_rows == expected:
                lines = np.arange(2, expected + 2, dtype=np.int64)
                return Parsed(header, data, table, lines, [])
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    return _parse_python(data, start, header)


def _parse_python(data: bytes, start: int, header: list[str]) -> Parsed:
    text = data[start:].decode("utf-8")
    physical = text.split("\n")
    if physical and physical[-1] == "":
        physical.pop()
    cols: list[list[str]] = [[] for _ in header]
    lines: list[int] = []
    bad: list[tuple[int, str, str, str]] = []
    k = len(header)
    for i, raw in enumerate(physical):
        line = i + 2
        raw = raw.rstrip("\r")
        if raw.strip() == "":
            continue
        try:
            row = next(csv.reader([raw]))
        except csv.Error as exc:
            bad.append((line, "unparsable row", raw[:2000], str(exc)))
            continue
        if len(row) != k:
            bad.append(
                (line, "wrong number of fields", raw[:2000], f"expected {k}, got {len(row)}")
            )
            continue
        for c, v in zip(cols, row, strict=True):
            c.append(v)
        lines.append(line)
    table = pa.table({h: pa.array(c, pa.string()) for h, c in zip(header, cols, strict=True)})
    return Parsed(header, data, table, np.asarray(lines, dtype=np.int64), bad)


def parse_ints(col: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Integers from strings: (int64 values, null where empty or bad; mask of bad values)."""
    s = pc.utf8_trim_whitespace(col)
    ok = pc.match_substring_regex(s, _INT_RE)
    empty = pc.equal(s, "")
    bad = pc.invert(pc.or_(ok, empty)).to_numpy(zero_copy_only=False)
    values = pc.cast(pc.if_else(ok, s, pa.scalar(None, pa.string())), pa.int64())
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values, np.asarray(bad, dtype=bool)
