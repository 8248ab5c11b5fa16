"""Reading input files: directories, zip archives, gzip by content, UTF-8 checks.

Loaders see every input as a list of :class:`InputFile` objects in a fixed (sorted) order, so
that the same input always gives the same dataset. Compression is detected from the bytes
(gzip magic number), not from the file name.
"""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import io
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa

from .errors import IngestError

GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class InputFile:
    """One input file: a plain file on disk or a member of a zip archive."""

    name: str  # as shown in messages and in rejected.parquet
    path: Path  # the file on disk, or the zip archive
    member: str | None = None  # member name inside the zip archive

    @property
    def stem(self) -> str:
        base = Path(self.member or self.path.name).name
        for suffix in (".gz", ".csv", ".tsv", ".txt", ".json", ".jsonl", ".ndjson"):
            if base.lower().endswith(suffix):
                base = base[: -len(suffix)]
        return base

    def size(self) -> int:
        if self.member is None:
            return self.path.stat().st_size
        with zipfile.ZipFile(self.path) as zf:
            return zf.getinfo(self.member).compress_size

    def _raw(self) -> bytes:
        if self.member is None:
            return self.path.read_bytes()
        with zipfile.ZipFile(self.path) as zf:
            return zf.read(self.member)

    def read_bytes(self) -> bytes:
        """The file's bytes, gunzipped when they are gzip-compressed."""
        data = self._raw()
        if data[:2] == GZIP_MAGIC:
            try:
                data = gzip.decompress(data)
            except (EOFError, OSError, zlib.error) as exc:
                raise IngestError(
                    f"corrupt or truncated gzip data ({exc})", file=self.name
                ) from exc
        return data

    def open_binary(self) -> BinaryIO:
        """A stream of the (decompressed) bytes, for inputs too large to read at once.

        Closing it closes everything underneath (the gzip layer, the file, the zip archive);
        corrupt gzip data raises :class:`IngestError` naming the file.
        """
        closers: list[Any] = []
        if self.member is None:
            fh: Any = open(self.path, "rb")  # noqa: SIM115 - closed by _Stream
        else:
            zf = zipfile.ZipFile(self.path)
            closers.append(zf)
            fh = zf.open(self.member)
        closers.insert(0, fh)
        head = fh.peek(2)[:2] if hasattr(fh, "peek") else b""
        if head == GZIP_MAGIC:
            fh = gzip.GzipFile(fileobj=fh)
            closers.insert(0, fh)
        return _Stream(fh, closers, self.name)  # type: ignore[return-value]

    def arrow_stream(self) -> pa.NativeFile:
        """A pyarrow input stream over the decompressed bytes."""
        if self.member is None:
            with open(self.path, "rb") as fh:
                gz = fh.read(2) == GZIP_MAGIC
            return pa.input_stream(str(self.path), compression="gzip" if gz else None)
        return pa.PythonFile(self.open_binary(), mode="r")

    def read_text(self, encoding: str = "utf-8") -> str:
        return decode(self.read_bytes(), self.name, encoding)


class _Stream(io.RawIOBase):
    """A read-only stream that closes its layers and reports corrupt gzip clearly."""

    def __init__(self, fh: Any, closers: list[Any], name: str) -> None:
        super().__init__()
        self._fh = fh
        self._closers = closers
        self._name = name

    def readable(self) -> bool:
        return True

    def _guard(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise IngestError(f"corrupt or truncated gzip data ({exc})", file=self._name) from exc

    def read(self, size: int = -1) -> bytes:
        return self._guard(self._fh.read, size)

    def readinto(self, b: Any) -> int:
        data = self._guard(self._fh.read, len(b))
        b[: len(data)] = data
        return len(data)

    def readline(self, size: int = -1) -> bytes:
        return self._guard(self._fh.readline, size)

    def close(self) -> None:
        if not self.closed:
            for c in self._closers:
                with contextlib.suppress(Exception):
                    c.close()
        super().close()


def decode(data: bytes, name: str, encoding: str = "utf-8") -> str:
    """Decode bytes; an undecodable byte is an :class:`IngestError` naming file and line."""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise IngestError(
            f"not valid {encoding} (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "pass the file's encoding with --encoding (for example latin-1)",
            file=name,
            line=line,
        ) from exc
    if text.startswith("\ufeff"):
        text = text[1:]
    return text


def check_utf8(data: bytes, name: str, encoding: str = "utf-8") -> bytes:
    """Return the data as UTF-8 bytes (transcoding from ``encoding``), or raise naming the line."""
    if encoding.lower().replace("-", "") in ("utf8", "utf8sig"):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            decode(data, name, "utf-8")  # raises with the line number
        return data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    return decode(data, name, encoding).encode("utf-8")


def list_files(
    root: Path, patterns: tuple[str, ...] = ("*",), *, recursive: bool = True
) -> list[InputFile]:
    """The input files under ``root`` (a file, a directory or a .zip), sorted by name.

    Hidden files and the loaders' own side files are left to the caller's patterns.
    """
    root = Path(root)
    if not root.exists():
        raise IngestError("input not found", file=str(root))
    if root.is_file() and zipfile.is_zipfile(root):
        with zipfile.ZipFile(root) as zf:
            members = sorted(
                m.filename
                for m in zf.infolist()
                if not m.is_dir() and not Path(m.filename).name.startswith((".", "__MACOSX"))
            )
        return [
            InputFile(name=f"{root.name}:{m}", path=root, member=m)
            for m in members
            if _matches(Path(m).name, patterns)
        ]
    if root.is_file():
        return [InputFile(name=str(root), path=root)]
    it: Iterator[Path] = root.rglob("*") if recursive else root.glob("*")
    files = sorted(
        p for p in it if p.is_file() and not p.name.startswith(".") and _matches(p.name, patterns)
    )
    return [InputFile(name=str(p), path=p) for p in files]


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name.lower(), pat.lower()) for pat in patterns)


def find_sibling(root: Path, names: tuple[str, ...]) -> InputFile | None:
    """Find a side file (e.g. ``questions.csv``) inside ``root`` or beside it."""
    root = Path(root)
    candidates: list[InputFile] = []
    if root.is_file() and zipfile.is_zipfile(root):
        with zipfile.ZipFile(root) as zf:
            for m in sorted(zf.namelist()):
                if Path(m).name in names:
                    candidates.append(InputFile(name=f"{root.name}:{m}", path=root, member=m))
    else:
        bases = [root] if root.is_dir() else []
        bases += [root.parent, root.parent / "contents"]
        if root.is_file():  # EdNet's layout: KT1/u1.csv beside contents/questions.csv
            bases.append(root.parent.parent / "contents")
        if root.is_dir():
            bases += [root / "contents", root.parent / "contents"]
        for base in bases:
            for n in names:
                p = base / n
                if p.is_file():
                    candidates.append(InputFile(name=str(p), path=p))
    return candidates[0] if candidates else None


#: The longest line (one record of a line-oriented format, or one row) a text loader reads:
#: 1 MiB of bytes, newline excluded. The longest line of the published benchmark files is
#: about 27 kB (a learner's whole sequence on one line). :func:`iter_lines_bounded` never holds
#: a longer line in memory: it reads it through in bounded chunks and reports it as a
#: :class:`LongLine`, which loaders reject (reason ``line too long``) before parsing anything.
#: Loaders take ``-o max_line_bytes=N`` to change it.
MAX_LINE_BYTES = 1 << 20
#: How much of an over-long line is kept for ``rejected.parquet``.
PREVIEW_BYTES = 2000
_READ_CHUNK = 1 << 16


@dataclass(frozen=True)
class LongLine:
    """A line longer than the limit, read through in bounded chunks and never held whole."""

    size: int  # its length in bytes, newline excluded
    head: bytes  # its first PREVIEW_BYTES bytes
    limit: int

    REASON = "line too long"

    def preview(self, encoding: str = "utf-8") -> str:
        return self.head.decode(encoding, errors="replace")

    @property
    def detail(self) -> str:
        return too_long_detail(self.size, self.limit)


def too_long_detail(size: int, limit: int, what: str = "line") -> str:
    """The rejection detail of a line (or record) of ``size`` bytes over ``limit``."""
    return (
        f"{what} is {size:,} bytes, longer than the limit of {limit:,} bytes "
        "(raise it with -o max_line_bytes=N)"
    )


def split_lines(fh: Any, max_bytes: int = MAX_LINE_BYTES) -> Iterator[bytes | LongLine]:
    """The lines of a binary stream, newline kept, each at most ``max_bytes`` (newline
    excluded); a longer line is read through in chunks and yielded as a :class:`LongLine`,
    so memory stays bounded by ``max_bytes`` whatever the input."""
    limit = max_bytes + 2  # room for the line's own \r\n
    while True:
        raw = fh.readline(limit)
        if not raw:
            return
        if raw.endswith(b"\n") or len(raw) < limit:  # a whole line (or the last one)
            size = len(raw) - _newline_len(raw)
            if size <= max_bytes:
                yield raw
            else:
                yield LongLine(size, raw[:PREVIEW_BYTES], max_bytes)
            continue
        head, size, tail = raw[:PREVIEW_BYTES], len(raw), raw[-2:]
        while True:
            more = fh.readline(_READ_CHUNK)
            if not more:
                break
            size += len(more)
            tail = (tail + more)[-2:]
            if more.endswith(b"\n"):
                break
        yield LongLine(size - _newline_len(tail), head, max_bytes)


def _newline_len(raw: bytes) -> int:
    if raw.endswith(b"\r\n"):
        return 2
    return 1 if raw.endswith(b"\n") else 0


def iter_lines_bounded(
    f: InputFile, encoding: str = "utf-8", max_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, str | LongLine]]:
    """Stream ``(line number, text)`` pairs of a file without reading it whole.

    Lines are decoded one at a time, so an undecodable byte is reported with its line; the
    newline (``\\n`` or ``\\r\\n``) is removed and a UTF-8 byte-order mark is dropped. A line
    longer than ``max_bytes`` comes as a :class:`LongLine` (its size and first bytes) for the
    loader to reject.
    """
    with f.open_binary() as fh:
        lineno = 0
        lines = split_lines(fh, max_bytes)
        while True:
            try:
                raw = next(lines, None)
            except (EOFError, OSError, zlib.error) as exc:
                raise IngestError(
                    f"corrupt or truncated gzip data ({exc})", file=f.name, line=lineno + 1
                ) from exc
            if raw is None:
                return
            lineno += 1
            if isinstance(raw, LongLine):
                yield lineno, raw
                continue
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                raise IngestError(
                    f"not valid {encoding} (byte 0x{raw[exc.start]:02x} at column "
                    f"{exc.start + 1}); pass the file's encoding with --encoding "
                    "(for example latin-1)",
                    file=f.name,
                    line=lineno,
                ) from exc
            if lineno == 1 and line.startswith("\ufeff"):
                line = line[1:]
            yield lineno, line.rstrip("\r\n")


def iter_lines(
    f: InputFile, encoding: str = "utf-8", max_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, str]]:
    """:func:`iter_lines_bounded` for readers that cannot skip a line: a line longer than
    ``max_bytes`` stops the ingest with an :class:`IngestError` naming it."""
    for lineno, line in iter_lines_bounded(f, encoding, max_bytes):
        if isinstance(line, LongLine):
            raise IngestError(line.detail, file=f.name, line=lineno)
        yield lineno, line
