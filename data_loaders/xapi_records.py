"""Reading xAPI statement records out of one input file, with real line numbers.

Each input file (a file, or a file of the input directory or .zip) is one of

* JSON lines (``.jsonl``, ``.ndjson``, ``.json``): one statement per line;
* a JSON array of statements (the file's first non-space character is ``[``);
* an LRS ``StatementResult`` (``{"statements": [...], "more": "..."}``), as ``GET /statements``
  returns it, or one pretty-printed statement (first line ``{`` alone);

gzip-compressed or not (detected from the bytes). Line numbers in ``rejected.parquet`` are the
real line numbers in every layout (the line where the statement starts).

Bounds: a record (a line of a JSON-lines file, or one statement of a document) longer than
``max_line_bytes`` (default :data:`~data_loaders.inputs.MAX_LINE_BYTES`, 1 MiB) is rejected
(``line too long``; a JSON-lines file's long line is read through in bounded chunks, never held
whole), and one whose arrays and objects nest deeper than :data:`MAX_DEPTH` levels is rejected
(``nested too deep``) without being parsed, so that no record can exhaust the parser's
recursion. (A document layout is read whole, as before: a JSON array cannot be split into
records without parsing it.)
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

from .errors import IngestError
from .inputs import (
    GZIP_MAGIC,
    MAX_LINE_BYTES,
    InputFile,
    LongLine,
    decode,
    split_lines,
    too_long_detail,
)

RAW_LIMIT = 2000
_WS = " \t\r\n"
#: The deepest nesting of arrays and objects a record may have. A statement nests about 6
#: levels (a SubStatement with extensions about 10); a deeper record is rejected before it
#: is parsed (Python's JSON parser recurses once per level and would fail at about 1000).
MAX_DEPTH = 100
_NEST_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
NESTED_TOO_DEEP = "nested too deep"


class BadRecord:
    """A record that was not parsed: the reason (a short category) and the message."""

    def __init__(self, message: str, reason: str = "invalid JSON") -> None:
        self.message = message
        self.reason = reason


def nesting_exceeds(
    text: str, limit: int = MAX_DEPTH, start: int = 0, end: int | None = None
) -> bool:
    """Whether the JSON text ``text[start:end]`` nests arrays and objects deeper than ``limit``
    (brackets inside strings do not count). Linear, without recursion; records with at most
    ``limit`` brackets are answered from two counts."""
    end = len(text) if end is None else end
    if text.count("[", start, end) + text.count("{", start, end) <= limit:
        return False
    depth = 0
    for m in _NEST_TOKEN.finditer(text, start, end):
        ch = text[m.start()]
        if ch == "[" or ch == "{":
            depth += 1
            if depth > limit:
                return True
        elif ch == "]" or ch == "}":
            depth -= 1
    return False


def _too_deep(rest_unread: bool = False) -> BadRecord:
    tail = "; the rest of the file could not be read" if rest_unread else ""
    return BadRecord(
        f"arrays and objects nested deeper than {MAX_DEPTH} levels{tail}", NESTED_TOO_DEEP
    )


def _checked(text: str, start: int, end: int, max_bytes: int) -> BadRecord | None:
    """Why the parsed record ``text[start:end]`` of a document is rejected, or None."""
    if nesting_exceeds(text, MAX_DEPTH, start, end):
        return _too_deep()
    if end - start > max_bytes // 4:  # may exceed the limit in UTF-8 bytes
        size = len(text[start:end].encode("utf-8"))
        if size > max_bytes:
            return BadRecord(too_long_detail(size, max_bytes, "statement"), LongLine.REASON)
    return None


# ---------------------------------------------------------------------- reading records
class _Lines:
    """Line number of a character offset, counted incrementally (offsets only grow)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1

    def at(self, pos: int) -> int:
        if pos > self.pos:
            self.line += self.text.count("\n", self.pos, pos)
            self.pos = pos
        return self.line


def _skip_ws(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos] in _WS:
        pos += 1
    return pos


def _iter_array(
    text: str, pos: int, lines: _Lines, max_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, str, Any]]:
    """Elements of the JSON array starting at ``text[pos] == '['`` with their line numbers.

    A syntax error (or nesting too deep for the parser) yields one ``BadRecord`` record at its
    line and ends the array; an element nested deeper than :data:`MAX_DEPTH` or longer than
    ``max_bytes`` is yielded as a ``BadRecord`` record and the array goes on.
    """
    dec = json.JSONDecoder()
    pos = _skip_ws(text, pos + 1)
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        start = pos
        try:
            obj, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            line = lines.at(start)
            yield (
                line,
                text[start : start + RAW_LIMIT],
                BadRecord(
                    f"{exc.msg} at line {exc.lineno} column {exc.colno}; the rest of the file "
                    "could not be read"
                ),
            )
            return
        except RecursionError:
            yield lines.at(start), text[start : start + RAW_LIMIT], _too_deep(rest_unread=True)
            return
        bad = _checked(text, start, end, max_bytes)
        yield lines.at(start), text[start:end], bad if bad is not None else obj
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            return
        yield (
            lines.at(pos),
            text[pos : pos + RAW_LIMIT],
            BadRecord(
                "expected ',' or ']' after an array element; the rest of the file could not be read"
            ),
        )
        return


def _iter_document(text: str, max_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, str, Any]]:
    """A whole-file JSON document: an array, a StatementResult or one statement."""
    lines = _Lines(text)
    pos = _skip_ws(text, 0)
    if pos >= len(text):
        return
    if text[pos] == "[":
        yield from _iter_array(text, pos, lines, max_bytes)
        return
    dec = json.JSONDecoder()
    try:
        obj, end = dec.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        yield (
            lines.at(pos),
            text[pos : pos + RAW_LIMIT],
            BadRecord(f"{exc.msg} at line {exc.lineno} column {exc.colno}"),
        )
        return
    except RecursionError:
        # too deep for the parser: a StatementResult's statements can still be read one by one
        # up to the deep one; anything else is one record
        try:
            start = _statements_array_pos(text, pos)
        except (ValueError, IndexError, RecursionError):
            start = None
        if start is not None and text[start : start + 1] == "[":
            yield from _iter_array(text, start, lines, max_bytes)
        else:
            yield lines.at(pos), text[pos : pos + RAW_LIMIT], _too_deep(rest_unread=True)
        return
    if isinstance(obj, dict) and isinstance(obj.get("statements"), list) and "actor" not in obj:
        # a StatementResult: walk the top-level object to the statements array's position
        start = _statements_array_pos(text, pos)
        if start is None:  # pragma: no cover - raw_decode succeeded, so the walk does too
            for i, st in enumerate(obj["statements"], start=1):
                yield i, json.dumps(st)[:RAW_LIMIT], st
        else:
            yield from _iter_array(text, start, lines, max_bytes)
        more = obj.get("more")
        if isinstance(more, str) and more:
            yield 0, more, ("more", more)
    else:
        bad = _checked(text, pos, end, max_bytes)
        yield lines.at(pos), text[pos:end], bad if bad is not None else obj
    rest = _skip_ws(text, end)
    if rest < len(text):
        yield (
            lines.at(rest),
            text[rest : rest + RAW_LIMIT],
            BadRecord("extra data after the JSON document"),
        )


def _statements_array_pos(text: str, pos: int) -> int | None:
    """Offset of the '[' of the top-level "statements" member of the object at ``pos``."""
    dec = json.JSONDecoder()
    pos = _skip_ws(text, pos + 1)
    while pos < len(text) and text[pos] != "}":
        key, pos = dec.raw_decode(text, pos)
        pos = _skip_ws(text, pos)
        if text[pos] != ":":
            return None
        pos = _skip_ws(text, pos + 1)
        if key == "statements":
            return pos
        _, pos = dec.raw_decode(text, pos)
        pos = _skip_ws(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
    return None


@contextlib.contextmanager
def _open_stream(f: InputFile) -> Iterator[BinaryIO]:
    """The file's decompressed bytes as a stream; every handle is closed on exit.

    (``InputFile.open_binary`` leaves the underlying file of a gzip stream, and the archive of
    a zip member, open until garbage collection.)
    """
    with contextlib.ExitStack() as stack:
        fh: Any
        if f.member is None:
            fh = stack.enter_context(open(f.path, "rb"))  # noqa: SIM115
        else:
            zf = stack.enter_context(zipfile.ZipFile(f.path))
            fh = stack.enter_context(zf.open(f.member))
        if fh.peek(2)[:2] == GZIP_MAGIC:
            fh = stack.enter_context(gzip.GzipFile(fileobj=fh))
        try:
            yield fh
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise IngestError(f"corrupt or truncated gzip data ({exc})", file=f.name) from exc


def _first_line(f: InputFile) -> bytes:
    """The first non-blank line of the (decompressed) file, at most 1 MiB of it."""
    with _open_stream(f) as fh:
        while True:
            line = fh.readline(1 << 20)
            if not line:
                return b""
            if line.strip():
                return line


def _layout(f: InputFile) -> str:
    """'lines' (one statement per line) or 'document' (array, StatementResult, one object)."""
    first = _first_line(f).lstrip(b"\xef\xbb\xbf").strip()
    if first.startswith(b"["):
        return "document"
    if first == b"{":
        return "document"  # a pretty-printed object
    if first.startswith(b"{"):
        try:
            text = first.decode("utf-8")
            if nesting_exceeds(text, MAX_DEPTH):
                # too deep to parse whole: a StatementResult still shows its statements array
                start = _statements_array_pos(text, 0)
                return (
                    "document" if start is not None and text[start : start + 1] == "[" else "lines"
                )
            obj = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError, IndexError):
            return "lines"
        if isinstance(obj, dict) and isinstance(obj.get("statements"), list):
            return "document"
    return "lines"


def iter_records(
    f: InputFile,
    encoding: str = "utf-8",
    only_with: bytes | None = None,
    max_bytes: int = MAX_LINE_BYTES,
) -> Iterator[tuple[int, str, Any]]:
    """``(line, raw text, parsed value or BadRecord)`` for every record of one input file.

    ``only_with``: in JSON-lines files, lines without these bytes are not parsed and not
    yielded (a cheap pre-filter). A record longer than ``max_bytes`` or nested deeper than
    :data:`MAX_DEPTH` comes as a ``BadRecord`` (reason ``line too long`` or ``nested too deep``)
    without being parsed; a JSON-lines file is read in lines of at most ``max_bytes``.
    """
    if _layout(f) == "document":
        text = f.read_text(encoding)
        if only_with is not None and only_with.decode() not in text:
            return
        yield from _iter_document(text, max_bytes)
        return
    with _open_stream(f) as fh:
        for lineno, raw_bytes in enumerate(split_lines(fh, max_bytes), start=1):
            if isinstance(raw_bytes, LongLine):
                if only_with is None:
                    yield (
                        lineno,
                        raw_bytes.preview(encoding),
                        BadRecord(raw_bytes.detail, LongLine.REASON),
                    )
                continue
            if only_with is not None and only_with not in raw_bytes:
                continue
            if not raw_bytes.strip():
                continue
            try:
                raw = decode(raw_bytes, f.name, encoding)
            except IngestError as exc:
                raise IngestError(exc.message, file=f.name, line=lineno) from None
            raw = raw.rstrip("\r\n")
            if nesting_exceeds(raw, MAX_DEPTH):
                yield lineno, raw, _too_deep()
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                obj = BadRecord(f"{exc.msg} at column {exc.colno}")
            except RecursionError:  # pragma: no cover - nesting_exceeds rejects it first
                obj = _too_deep()
            yield lineno, raw, obj
