"""xAPI (Experience API 1.0.3) statements: what a learning platform's LRS exports.

Input: a file, a directory or a .zip of

* JSON lines (``.jsonl``, ``.ndjson``, ``.json``): one statement per line;
* a JSON array of statements (the file's first non-space character is ``[``);
* an LRS ``StatementResult`` (``{"statements": [...], "more": "..."}``), as ``GET /statements``
  returns it, or one pretty-printed statement (first line ``{`` alone);

gzip-compressed or not (detected from the bytes). Line numbers in ``rejected.parquet`` are the
real line numbers in every layout (the line where the statement starts).

How a statement becomes an interaction
--------------------------------------
* ``user_id`` from the actor's identifier (spec 2.4.2.1, an Agent or an identified Group):
  ``mbox`` -> the address without ``mailto:`` (``alice@example.org``); ``mbox_sha1sum`` ->
  ``sha1:<hex>``; ``openid`` -> the URI; ``account`` -> ``<homePage host and path>|<name>``
  (``https://lms.example.org/`` + ``alice`` -> ``lms.example.org|alice``). When an actor
  carries several identifiers (the spec forbids it) the first of that list wins.
* the verb decides: a verb whose IRI's last path segment (or whole IRI) is in the ``verbs``
  option (default ``answered,completed``, the ADL verbs ``http://adlnet.gov/expapi/verbs/...``)
  is an answer; ``voided`` statements are skipped (reason ``verb voided``) and so are the
  statements they void (reason ``voided``, option ``apply_voiding``); every other verb is
  counted and skipped as ``verb <name>`` (see ``skipped_by_reason`` in the manifest).
* ``item_id`` = ``object.id`` (the activity IRI); the object must be an Activity.
* ``correct`` = ``result.success``. Without it, ``result.score.scaled`` (or
  ``(raw - min) / (max - min)`` when only raw and max are given, min defaulting to 0) counts as
  correct when it is at least ``score_threshold`` (default 1.0: full marks only, as in the
  ASSISTments convention where partial credit is incorrect). With neither, the statement is
  rejected (``no success or score``): an answer without an outcome cannot train a model.
* ``timestamp`` = ``timestamp`` (ISO 8601, converted to UTC milliseconds; a timestamp without
  an offset is read as UTC, as the spec allows an LRS to do), else ``stored``, else null. The
  answers of a learner are ordered by it (file order among equal or missing timestamps).
* ``elapsed_ms`` = ``result.duration`` (ISO 8601 duration, ``PT1M3.5S`` -> 63500; a year counts
  365 days, a month 30). An unreadable duration leaves ``elapsed_ms`` null and is counted in the
  manifest note ``xapi_bad_durations``; the answer is kept.
* ``concept_ids`` from the extension named by ``concept_extension`` (default
  :data:`DEFAULT_CONCEPT_EXTENSION`) in ``object.definition.extensions`` and in
  ``context.extensions`` (both are read, in that order, without repeats); the value is a string
  (one concept) or a list of strings (numbers are turned into strings).
* the statement ``id`` (a UUID, compared case-insensitively) marks replays: a later statement
  of the same learner with an id already seen is rejected as a duplicate.
* the items table gets the activity's ``definition.name`` (``en-US``, ``en`` or the first
  language given) and ``definition.interactionType``.

Rejected (with file, line, reason, detail and the raw text cut at 2000 characters): a line that
is not JSON or not a JSON object, a statement without an identified actor, without a verb id,
without an object id, with a non-Activity object on an answer verb, with a bad ``timestamp`` or
``stored`` value, with a ``result.success`` that is not a boolean, with concepts that are not a
string or a list, or an answer without success or score. Statements are validated (actor, verb,
object, timestamp) before the verb decides whether they are skipped, so an invalid statement is
rejected whatever its verb. Undecodable bytes stop the ingest with an error naming the line
(pass ``--encoding`` for files that are not UTF-8).

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
import functools
import gzip
import hashlib
import json
import re
import zipfile
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from .base import Loader, Option
from .errors import IngestError
from .inputs import (
    GZIP_MAGIC,
    MAX_LINE_BYTES,
    InputFile,
    LongLine,
    decode,
    list_files,
    split_lines,
    too_long_detail,
)

#: The default extension IRI that carries an answer's concepts (knowledge components).
DEFAULT_CONCEPT_EXTENSION = "https://w3id.org/xapi/kt/extensions/concepts"
VOIDED = "voided"
CHUNK_ROWS = 100_000
RAW_LIMIT = 2000
_PATTERNS = ("*.json", "*.jsonl", "*.ndjson", "*.json.gz", "*.jsonl.gz", "*.ndjson.gz")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NUM = r"(\d+(?:[.,]\d+)?)"
_DURATION_RE = re.compile(
    rf"^P(?:{_NUM}Y)?(?:{_NUM}M)?(?:{_NUM}W)?(?:{_NUM}D)?"
    rf"(?:T(?:{_NUM}H)?(?:{_NUM}M)?(?:{_NUM}S)?)?$"
)
_DURATION_MS = (
    365 * 86_400_000,
    30 * 86_400_000,
    7 * 86_400_000,
    86_400_000,
    3_600_000,
    60_000,
    1000,
)
_WS = " \t\r\n"
#: The deepest nesting of arrays and objects a record may have. A statement nests about 6
#: levels (a SubStatement with extensions about 10); a deeper record is rejected before it
#: is parsed (Python's JSON parser recurses once per level and would fail at about 1000).
MAX_DEPTH = 100
_NEST_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
NESTED_TOO_DEEP = "nested too deep"


class _Reject(Exception):
    """A statement that fails validation: reason (a short category) and detail."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class _BadJSON:
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


def _too_deep(rest_unread: bool = False) -> _BadJSON:
    tail = "; the rest of the file could not be read" if rest_unread else ""
    return _BadJSON(
        f"arrays and objects nested deeper than {MAX_DEPTH} levels{tail}", NESTED_TOO_DEEP
    )


def _checked(text: str, start: int, end: int, max_bytes: int) -> _BadJSON | None:
    """Why the parsed record ``text[start:end]`` of a document is rejected, or None."""
    if nesting_exceeds(text, MAX_DEPTH, start, end):
        return _too_deep()
    if end - start > max_bytes // 4:  # may exceed the limit in UTF-8 bytes
        size = len(text[start:end].encode("utf-8"))
        if size > max_bytes:
            return _BadJSON(too_long_detail(size, max_bytes, "statement"), LongLine.REASON)
    return None


# ---------------------------------------------------------------------- field helpers
def actor_id(actor: Any) -> str | None:
    """The learner id of an actor (Agent or identified Group), or None when it has none."""
    if not isinstance(actor, dict):
        return None
    mbox = actor.get("mbox")
    if isinstance(mbox, str) and mbox.strip():
        mbox = mbox.strip()
        return mbox[7:] if mbox.lower().startswith("mailto:") else mbox
    sha = actor.get("mbox_sha1sum")
    if isinstance(sha, str) and sha.strip():
        return "sha1:" + sha.strip().lower()
    openid = actor.get("openid")
    if isinstance(openid, str) and openid.strip():
        return openid.strip()
    account = actor.get("account")
    if isinstance(account, dict):
        name = account.get("name")
        home = account.get("homePage")
        if isinstance(name, str) and name != "":
            if isinstance(home, str) and home.strip():
                return f"{_home_key(home)}|{name}"
            return name
    return None


def _home_key(home: str) -> str:
    """``https://lms.example.org/`` -> ``lms.example.org``; the path is kept, the scheme not."""
    home = home.strip()
    if "://" in home:
        home = home.split("://", 1)[1]
    return home.rstrip("/")


@functools.lru_cache(maxsize=1024)
def verb_name(verb_iri: str) -> str:
    """The verb's last path segment: ``http://adlnet.gov/expapi/verbs/answered`` -> answered."""
    tail = verb_iri.rstrip("/#")
    for sep in ("/", "#", ":"):
        if sep in tail:
            tail = tail.rsplit(sep, 1)[1]
    return tail.lower() or verb_iri


def parse_timestamp_ms(value: Any) -> tuple[int, bool]:
    """ISO 8601 timestamp -> (milliseconds since the epoch UTC, whether it had no offset)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("not a string")
    dt = datetime.fromisoformat(value.strip())
    naive = dt.tzinfo is None
    if naive:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1), naive


def parse_duration_ms(value: Any) -> int:
    """ISO 8601 duration -> milliseconds (``PT1M3.5S`` -> 63500); ValueError when unreadable."""
    if not isinstance(value, str):
        raise ValueError("not a string")
    s = value.strip().upper()
    m = _DURATION_RE.match(s)
    if m is None or s in ("P", "PT") or s.endswith("T"):
        raise ValueError(f"not an ISO 8601 duration: {value!r}")
    total = 0.0
    for part, unit in zip(m.groups(), _DURATION_MS, strict=True):
        if part is not None:
            total += float(part.replace(",", ".")) * unit
    return int(round(total))


def _concepts(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, bool):
        raise _Reject("bad concepts", f"concept extension holds {value!r}")
    if isinstance(value, (int, float)):
        return [str(value)]
    if isinstance(value, list):
        out = []
        for v in value:
            if isinstance(v, str):
                if v.strip():
                    out.append(v)
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                out.append(str(v))
            else:
                raise _Reject("bad concepts", f"concept list holds {v!r}")
        return out
    raise _Reject("bad concepts", f"expected a string or a list of strings, got {value!r}"[:300])


def _lang(value: Any) -> str | None:
    """A language map's text: en-US, en, or the first language given."""
    if isinstance(value, str):
        return value
    if not isinstance(value, dict) or not value:
        return None
    for key in ("en-US", "en", "en-GB"):
        if isinstance(value.get(key), str):
            return value[key]
    first = next(iter(value.values()))
    return first if isinstance(first, str) else None


def _dup_key(statement_id: str) -> int:
    digest = hashlib.blake2b(statement_id.strip().lower().encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


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

    A syntax error (or nesting too deep for the parser) yields one ``_BadJSON`` record at its
    line and ends the array; an element nested deeper than :data:`MAX_DEPTH` or longer than
    ``max_bytes`` is yielded as a ``_BadJSON`` record and the array goes on.
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
                _BadJSON(
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
            _BadJSON(
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
            _BadJSON(f"{exc.msg} at line {exc.lineno} column {exc.colno}"),
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
            _BadJSON("extra data after the JSON document"),
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
):
    """``(line, raw text, parsed value or _BadJSON)`` for every record of one input file.

    ``only_with``: in JSON-lines files, lines without these bytes are not parsed and not
    yielded (a cheap pre-filter). A record longer than ``max_bytes`` or nested deeper than
    :data:`MAX_DEPTH` comes as a ``_BadJSON`` (reason ``line too long`` or ``nested too deep``)
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
                        _BadJSON(raw_bytes.detail, LongLine.REASON),
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
                obj = _BadJSON(f"{exc.msg} at column {exc.colno}")
            except RecursionError:  # pragma: no cover - nesting_exceeds rejects it first
                obj = _too_deep()
            yield lineno, raw, obj


# ---------------------------------------------------------------------- the loader
class XAPILoader(Loader):
    name = "xapi"
    summary = "xAPI 1.0.3 statements: JSON lines, JSON array or StatementResult (LRS export)"
    options = (
        Option(
            "verbs",
            str,
            "answered,completed",
            "comma-separated answer verbs: a verb IRI's last path segment or the whole IRI",
        ),
        Option(
            "concept_extension",
            str,
            DEFAULT_CONCEPT_EXTENSION,
            "extension IRI (context or activity definition) holding the concept ids",
        ),
        Option(
            "score_threshold",
            float,
            1.0,
            "without result.success, a scaled score at least this counts as correct",
        ),
        Option(
            "apply_voiding",
            bool,
            True,
            "skip statements voided by a 'voided' statement (reads every file twice)",
        ),
        Option(
            "max_line_bytes",
            int,
            MAX_LINE_BYTES,
            "records (lines, or statements of a document) longer than this are rejected",
        ),
    )

    def load(self) -> None:
        root = self.ctx.input
        files = list_files(root, _PATTERNS)
        if not files:
            raise IngestError(
                "no statement files (.json, .jsonl, .ndjson, optionally .gz) found",
                file=str(root),
            )
        verbs = [v.strip() for v in str(self.opts["verbs"]).split(",") if v.strip()]
        self._verb_iris = {v for v in verbs if "://" in v}
        self._verb_names = {v.lower() for v in verbs if "://" not in v}
        self._concept_iri = str(self.opts["concept_extension"])
        self._threshold = float(self.opts["score_threshold"])
        self._max_bytes = int(self.opts["max_line_bytes"])
        if self._max_bytes < 1:
            raise IngestError(f"option 'max_line_bytes' must be positive, got {self._max_bytes}")
        self._voided: set[str] = set()
        if self.opts["apply_voiding"]:
            self._voided = self._voided_ids(files)
        self._reset_rows()
        self._rej: list[list[Any]] = [[], [], [], [], []]
        self._items: dict[str, tuple[str | None, str | None]] = {}
        self._bad_durations = 0
        self._first_bad_duration: str | None = None
        self._naive = 0
        self._more: list[str] = []
        self.start_progress(files)
        for f in files:
            idx = self.register(f)
            self._file(f, idx)
            with contextlib.suppress(OSError):
                self.writer.progress.advance(f.size())
        self._flush()
        self._flush_rejects()
        self._finish_notes()

    # ------------------------------------------------------------------ passes
    def _voided_ids(self, files: list[InputFile]) -> set[str]:
        """Ids of the statements that some 'voided' statement voids (spec 2.3.2)."""
        out: set[str] = set()
        for f in files:
            for _, _, obj in iter_records(
                f, self.ctx.encoding, only_with=b"voided", max_bytes=self._max_bytes
            ):
                if not isinstance(obj, dict):
                    continue
                verb = obj.get("verb")
                vid = verb.get("id") if isinstance(verb, dict) else None
                if not isinstance(vid, str) or verb_name(vid) != VOIDED:
                    continue
                target = obj.get("object")
                if isinstance(target, dict) and isinstance(target.get("id"), str):
                    out.add(target["id"].strip().lower())
        return out

    def _file(self, f: InputFile, idx: int) -> None:
        count = 0
        for line, raw, obj in iter_records(f, self.ctx.encoding, max_bytes=self._max_bytes):
            if isinstance(obj, tuple) and obj and obj[0] == "more":
                self._more.append(f"{f.name}: {obj[1]}")
                continue
            count += 1
            if isinstance(obj, _BadJSON):
                self._reject(idx, line, obj.reason, raw, obj.message)
                continue
            try:
                self._statement(obj, idx, line, f)
            except _Reject as rej:
                self._reject(idx, line, rej.reason, raw, rej.detail)
            if len(self._user) >= CHUNK_ROWS:
                self._flush()
            if len(self._rej[0]) >= CHUNK_ROWS:
                self._flush_rejects()
        self.writer.count_read(count)

    # ------------------------------------------------------------------ one statement
    def _statement(self, st: Any, idx: int, line: int, f: InputFile) -> None:
        if not isinstance(st, dict):
            raise _Reject("not a statement", f"expected a JSON object, got {type(st).__name__}")
        if "actor" not in st or st["actor"] is None:
            raise _Reject("missing actor", "the statement has no 'actor'")
        user = actor_id(st["actor"])
        if user is None:
            raise _Reject(
                "actor without identifier",
                "actor has no mbox, mbox_sha1sum, openid or account {homePage, name}",
            )
        verb = st.get("verb")
        verb_iri = verb.get("id") if isinstance(verb, dict) else None
        if not isinstance(verb_iri, str) or not verb_iri.strip():
            raise _Reject("missing verb", "the statement has no 'verb.id'")
        obj = st.get("object")
        if not isinstance(obj, dict):
            raise _Reject("missing object", "the statement has no 'object'")
        object_id = obj.get("id")
        if not isinstance(object_id, str) or not object_id.strip():
            kind = obj.get("objectType", "Activity")
            if kind not in ("Agent", "Group", "SubStatement"):
                raise _Reject("missing object id", "the statement's object has no 'id'")
        ts = None
        for key in ("timestamp", "stored"):
            if st.get(key) is None:
                continue
            try:
                ts, naive = parse_timestamp_ms(st[key])
            except (ValueError, TypeError, OverflowError) as exc:
                raise _Reject(
                    "bad timestamp", f"{key} {st[key]!r} is not an ISO 8601 timestamp ({exc})"
                ) from None
            self._naive += naive
            break

        name = verb_name(verb_iri)
        if name == VOIDED:
            self.writer.skip("verb voided")
            return
        if name not in self._verb_names and verb_iri not in self._verb_iris:
            self.writer.skip(f"verb {name}")
            return
        sid = st.get("id")
        if isinstance(sid, str) and sid.strip().lower() in self._voided:
            self.writer.skip("voided")
            return
        if obj.get("objectType", "Activity") != "Activity":
            raise _Reject(
                "object not an activity",
                f"an answer's object must be an Activity, got {obj.get('objectType')!r}",
            )

        result = st.get("result")
        result = result if isinstance(result, dict) else {}
        correct = self._correct(result)
        elapsed = None
        if result.get("duration") is not None:
            try:
                elapsed = parse_duration_ms(result["duration"])
            except ValueError:
                self._bad_durations += 1
                if self._first_bad_duration is None:
                    self._first_bad_duration = f"{f.name}, line {line}: {result['duration']!r}"

        definition = obj.get("definition")
        definition = definition if isinstance(definition, dict) else {}
        context = st.get("context")
        context = context if isinstance(context, dict) else {}
        concepts: list[str] = []
        for ext in (definition.get("extensions"), context.get("extensions")):
            if isinstance(ext, dict) and self._concept_iri in ext:
                for c in _concepts(ext[self._concept_iri]):
                    if c not in concepts:
                        concepts.append(c)

        if object_id not in self._items:
            itype = definition.get("interactionType")
            self._items[object_id] = (
                _lang(definition.get("name")),
                itype if isinstance(itype, str) else None,
            )
        self._user.append(user)
        self._item.append(object_id)
        self._conc.append(concepts)
        self._corr.append(correct)
        self._ts.append(ts)
        self._el.append(elapsed)
        self._file_col.append(idx)
        self._line.append(line)
        self._dup.append(_dup_key(sid) if isinstance(sid, str) and sid.strip() else None)

    def _correct(self, result: dict[str, Any]) -> int:
        success = result.get("success")
        if success is not None:
            if not isinstance(success, bool):
                raise _Reject("bad success", f"result.success must be true or false: {success!r}")
            return int(success)
        score = result.get("score")
        if isinstance(score, dict):
            scaled = score.get("scaled")
            if _is_number(scaled):
                return int(float(scaled) >= self._threshold)
            raw, lo, hi = score.get("raw"), score.get("min", 0), score.get("max")
            if _is_number(raw) and _is_number(hi) and _is_number(lo) and hi > lo:
                return int((float(raw) - float(lo)) / (float(hi) - float(lo)) >= self._threshold)
        raise _Reject(
            "no success or score",
            "an answer needs result.success, result.score.scaled or result.score raw and max",
        )

    # ------------------------------------------------------------------ output
    def _reset_rows(self) -> None:
        self._user: list[str] = []
        self._item: list[str] = []
        self._conc: list[list[str]] = []
        self._corr: list[int] = []
        self._ts: list[int | None] = []
        self._el: list[int | None] = []
        self._file_col: list[int] = []
        self._line: list[int] = []
        self._dup: list[int | None] = []

    def _flush(self) -> None:
        if not self._user:
            return
        ts = pa.array(self._ts, pa.int64())
        table = pa.table(
            {
                "user_id": pa.array(self._user, pa.string()),
                "item_id": pa.array(self._item, pa.string()),
                "concept_ids": pa.array(self._conc, pa.list_(pa.string())),
                "correct": pa.array(np.asarray(self._corr, dtype=np.int8)),
                "timestamp": ts,
                "elapsed_ms": pa.array(self._el, pa.int64()),
                "_file": pa.array(np.asarray(self._file_col, dtype=np.int32)),
                "_line": pa.array(np.asarray(self._line, dtype=np.int64)),
                "_order": ts,
                "_dup": pa.array(self._dup, pa.uint64()),
            }
        )
        self.writer.add_interactions(table)
        self._reset_rows()

    def _reject(self, idx: int, line: int, reason: str, raw: str, detail: str | None) -> None:
        for col, v in zip(self._rej, (idx, line, reason, raw[:RAW_LIMIT], detail), strict=True):
            col.append(v)

    def _flush_rejects(self) -> None:
        files, lines, reasons, raws, details = self._rej
        if files:
            self.writer.reject_many(files, lines, reasons, raws, details)
        self._rej = [[], [], [], [], []]

    def _finish_notes(self) -> None:
        if self._items:
            ids = list(self._items)
            self.writer.add_items(
                pa.table(
                    {
                        "item_id": pa.array(ids, pa.string()),
                        "concept_ids": pa.array([[] for _ in ids], pa.list_(pa.string())),
                        "name": pa.array([self._items[i][0] for i in ids], pa.string()),
                        "interaction_type": pa.array([self._items[i][1] for i in ids], pa.string()),
                    }
                )
            )
        self.writer.note(
            "xapi",
            {
                "user_id": "mbox address | sha1:<mbox_sha1sum> | openid | <homePage host>|<name>",
                "concept_extension": self._concept_iri,
                "voided_statement_ids": len(self._voided),
                "timestamps_without_offset_read_as_utc": self._naive,
            },
        )
        if self._bad_durations:
            self.writer.note(
                "xapi_bad_durations",
                {"count": self._bad_durations, "first": self._first_bad_duration},
            )
        if self._more:
            self.writer.note("xapi_unfollowed_more_links", self._more[:20])


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
