"""Reading input files: directories, zip archives, gzip by content, UTF-8 checks.

Loaders see every input as a list of :class:`InputFile` objects in a fixed (sorted) order, so
that the same input always gives the same dataset. Compression is detected from the bytes
(gzip magic number), not from the file name.
"""

from __future__ import annotations

import codecs
import contextlib
import fnmatch
import gzip
import io
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

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


def not_valid_error(encoding: str, byte: int, where: str, *, file: str, line: int) -> IngestError:
    """The error of a byte that is not valid in ``encoding`` (``where``: offset or column)."""
    return IngestError(
        f"not valid {encoding} (byte 0x{byte:02x} at {where}); "
        "pass the file's encoding with --encoding (for example latin-1)",
        file=file,
        line=line,
    )


def decode(data: bytes, name: str, encoding: str = "utf-8") -> str:
    """Decode bytes; an undecodable byte is an :class:`IngestError` naming file and line."""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise not_valid_error(
            encoding, data[exc.start], f"offset {exc.start}", file=name, line=line
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


#: Bytes a :class:`Utf8Stream` reads from its source at a time.
STREAM_CHUNK = 4 << 20


class Utf8Stream(io.RawIOBase):
    """The decompressed bytes of one input as UTF-8, checked (or transcoded) chunk by chunk.

    An undecodable byte raises :class:`IngestError` naming the file and the line, like
    :func:`check_utf8`, but without reading the whole file into memory.
    """

    def __init__(self, raw: BinaryIO, name: str, encoding: str) -> None:
        super().__init__()
        try:
            info = codecs.lookup(encoding)
        except LookupError as exc:
            raise IngestError(f"unknown encoding {encoding!r}", file=name) from exc
        self._raw = raw
        self._name = name
        self._encoding = encoding
        self._passthrough = info.name in ("utf-8", "utf-8-sig")
        factory = codecs.getincrementaldecoder("utf-8") if self._passthrough else None
        self._decoder = (factory or info.incrementaldecoder)(errors="strict")  # type: ignore[misc]
        self._buf = bytearray()
        self._eof = False
        self._bom_checked = False
        self._newlines = 0
        self.consumed = 0  # decompressed source bytes read so far

    def readable(self) -> bool:
        return True

    def position(self) -> int:
        """Bytes of the file on disk read so far (the compressed position for gzip)."""
        inner = getattr(self._raw, "fileobj", None)
        if inner is not None:
            try:
                return int(inner.tell())
            except (OSError, ValueError):
                pass
        return self.consumed

    def _fill(self, want: int) -> None:
        data = self._raw.read(max(want, STREAM_CHUNK))
        final = not data
        try:
            if self._passthrough:
                self._decoder.decode(data, final)
                out = bytes(data)
            else:
                out = self._decoder.decode(data, final).encode("utf-8")
        except UnicodeDecodeError as exc:
            obj = exc.object
            line = self._newlines + obj.count(b"\n", 0, exc.start) + 1
            offset = self.consumed - (len(obj) - len(data)) + exc.start
            raise not_valid_error(
                self._encoding, obj[exc.start], f"offset {offset}", file=self._name, line=line
            ) from None
        self._newlines += data.count(b"\n")
        self.consumed += len(data)
        self._buf += out
        if final:
            self._eof = True
        if not self._bom_checked and (len(self._buf) >= 3 or self._eof):
            if self._buf[:3] == b"\xef\xbb\xbf":
                del self._buf[:3]
            self._bom_checked = True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while not self._eof:
                self._fill(STREAM_CHUNK)
            size = len(self._buf)
        while len(self._buf) < size and not self._eof:
            self._fill(size - len(self._buf))
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def peek_line(self, limit: int = 1 << 20) -> bytes:
        """The first line (without its end), left in the stream for the CSV reader."""
        while b"\n" not in self._buf and not self._eof and len(self._buf) < limit:
            self._fill(STREAM_CHUNK)
        end = self._buf.find(b"\n")
        line = bytes(self._buf if end < 0 else self._buf[:end])
        return line.rstrip(b"\r")

    def close(self) -> None:
        inner = getattr(self._raw, "fileobj", None)
        try:
            self._raw.close()
        finally:
            if inner is not None and hasattr(inner, "close"):
                inner.close()
            super().close()


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


def max_line_bytes(options: Mapping[str, Any]) -> int:
    """The ``-o max_line_bytes=N`` option of a loader (default :data:`MAX_LINE_BYTES`)."""
    n = int(options.get("max_line_bytes", MAX_LINE_BYTES))
    if n < 1:
        raise IngestError(f"option 'max_line_bytes' must be positive, got {n}")
    return n


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
                raise not_valid_error(
                    encoding, raw[exc.start], f"column {exc.start + 1}", file=f.name, line=lineno
                ) from exc
            if lineno == 1 and line.startswith("\ufeff"):
                line = line[1:]
            yield lineno, line.rstrip("\r\n")
