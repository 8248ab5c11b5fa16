"""xAPI 1.0.3 statements for the live service: validation, comparison, and the mapping of a
statement to an answer.

The mapping is the one the file loader (:mod:`data_loaders.xapi`) applies, built from its
helpers, so that a statement gives the same answer whether it arrives in an exported file or at
``POST /xapi/statements``:

* learner id: :func:`data_loaders.xapi.actor_id` (``mbox`` -> the address, ``mbox_sha1sum``
  -> ``sha1:<hex>``, ``openid`` -> the URI, ``account`` -> ``<homePage host/path>|<name>``);
* an answer is a statement whose verb's last path segment is ``answered`` or ``completed``
  (the loader's default ``verbs``), whose object is an Activity and that has an outcome;
* item id: ``object.id`` as given;
* correct: ``result.success``; without it ``result.score.scaled`` (or ``(raw - min) / (max -
  min)``) of at least 1.0 (the loader's default ``score_threshold``);
* timestamp: ``timestamp``, else the statement's own ``stored``, else none (the caller uses the
  time the LRS stores it); a timestamp without an offset is read as UTC;
* elapsed_ms: ``result.duration`` (ISO 8601); an unreadable duration leaves it empty.

Where the live endpoint differs from the file loader, because an LRS must accept every valid
statement: an answer verb without an outcome, or with an object that is not an Activity, is
stored as a plain statement (the loader rejects it; neither makes an answer), and voiding is
not applied (the loader skips voided statements).
"""

from __future__ import annotations

import contextlib
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from data_loaders.xapi import (
    DEFAULT_CONCEPT_EXTENSION,
    VOIDED,
    _concepts,
    _is_number,
    _Reject,
    actor_id,
    parse_duration_ms,
    parse_timestamp_ms,
    verb_name,
)

from .answer import Answer

#: the version this service speaks (``X-Experience-API-Version`` of every response)
VERSION = "1.0.3"
#: the file loader's default answer verbs (last path segment of the verb IRI)
ANSWER_VERBS = frozenset({"answered", "completed"})
#: the file loader's default: without result.success, a scaled score at least this is correct
SCORE_THRESHOLD = 1.0
#: properties the LRS assigns or may overwrite (xAPI 1.0.3 Data §2.3.1): not compared
LRS_PROPERTIES = ("stored", "authority", "version")
#: the longest learner or item id the database holds
MAX_ID_LEN = 200

_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_IRI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_OBJECT_TYPES = ("Activity", "Agent", "Group", "SubStatement", "StatementRef")
_MAX_MS = 2**62


class StatementError(ValueError):
    """A statement that is not valid xAPI (or not usable here): the field and why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass
class XAPIAnswer(Answer):
    """What an answer statement says, in the terms of :class:`tutor.service.AnswerIn`."""

    concept_ids: list[str] = field(default_factory=list)


def is_uuid(value: Any) -> bool:
    return isinstance(value, str) and _UUID_RE.match(value) is not None


def parse_timestamp(value: Any) -> datetime:
    """An ISO 8601 timestamp as an aware UTC datetime (no offset: UTC), as the loader reads it."""
    ms, _ = parse_timestamp_ms(value)
    return _EPOCH + timedelta(milliseconds=ms)


def parse_instant(value: Any) -> datetime:
    """An ISO 8601 timestamp as an aware UTC datetime at full (microsecond) precision."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("not a string")
    dt = datetime.fromisoformat(value.strip())
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def validate_statement(st: Any) -> dict[str, Any]:
    """The minimum a statement needs here (xAPI 1.0.3 Data §2.4); a copy with the id (if any)
    in lower case. Raises :class:`StatementError` naming the field."""
    if not isinstance(st, dict):
        raise StatementError("statement", f"expected a JSON object, got {type(st).__name__}")
    st = dict(st)
    sid = st.get("id")
    if sid is not None:
        if not is_uuid(sid):
            raise StatementError("id", f"{sid!r} is not a UUID")
        st["id"] = sid.lower()
    actor = st.get("actor")
    if not isinstance(actor, dict):
        raise StatementError("actor", "missing or not an object")
    if actor_id(actor) is None:
        raise StatementError(
            "actor", "no identifier (mbox, mbox_sha1sum, openid or account with a name)"
        )
    verb = st.get("verb")
    verb_iri = verb.get("id") if isinstance(verb, dict) else None
    if not isinstance(verb_iri, str) or not _IRI_RE.match(verb_iri):
        raise StatementError("verb.id", f"missing or not an IRI: {verb_iri!r}")
    obj = st.get("object")
    if not isinstance(obj, dict):
        raise StatementError("object", "missing or not an object")
    kind = obj.get("objectType", "Activity")
    if kind not in _OBJECT_TYPES:
        raise StatementError("object.objectType", f"unknown object type {kind!r}")
    if kind in ("Activity", "StatementRef"):
        oid = obj.get("id")
        if not isinstance(oid, str) or not oid.strip():
            raise StatementError("object.id", "missing")
        if kind == "StatementRef" and not is_uuid(oid):
            raise StatementError("object.id", f"a StatementRef needs a UUID, got {oid!r}")
    if st.get("timestamp") is not None:
        try:
            parse_timestamp(st["timestamp"])
        except (ValueError, TypeError, OverflowError) as exc:
            raise StatementError(
                "timestamp", f"{st['timestamp']!r} is not an ISO 8601 timestamp ({exc})"
            ) from None
    result = st.get("result")
    if result is not None:
        if not isinstance(result, dict):
            raise StatementError("result", "not an object")
        success = result.get("success")
        if success is not None and not isinstance(success, bool):
            raise StatementError("result.success", f"must be true or false, got {success!r}")
    return st


def _correct(result: dict[str, Any], threshold: float) -> int | None:
    """The loader's rule (``XAPILoader._correct``); None where the statement has no outcome."""
    success = result.get("success")
    if isinstance(success, bool):
        return int(success)
    score = result.get("score")
    if isinstance(score, dict):
        scaled = score.get("scaled")
        if _is_number(scaled):
            return int(float(scaled) >= threshold)
        raw, lo, hi = score.get("raw"), score.get("min", 0), score.get("max")
        if _is_number(raw) and _is_number(hi) and _is_number(lo) and hi > lo:
            return int((float(raw) - float(lo)) / (float(hi) - float(lo)) >= threshold)
    return None


def statement_to_answer(
    st: dict[str, Any],
    *,
    verbs: frozenset[str] = ANSWER_VERBS,
    concept_extension: str = DEFAULT_CONCEPT_EXTENSION,
    score_threshold: float = SCORE_THRESHOLD,
) -> XAPIAnswer | None:
    """The answer a statement records, or None for a statement that is not an answer.

    ``st`` must have passed :func:`validate_statement` and carry its ``id``. Raises
    :class:`StatementError` for an answer that cannot be stored (an id longer than the database
    holds, a concept extension that is not a string or a list of strings).
    """
    verb_iri = st["verb"]["id"]
    name = verb_name(verb_iri)
    if name == VOIDED or (name not in verbs and verb_iri not in verbs):
        return None
    obj = st["object"]
    if obj.get("objectType", "Activity") != "Activity":
        return None
    result = st.get("result") if isinstance(st.get("result"), dict) else {}
    correct = _correct(result, score_threshold)
    if correct is None:
        return None
    learner = actor_id(st["actor"])
    item = obj["id"]
    if learner is None:  # pragma: no cover - validate_statement refuses it
        raise StatementError("actor", "no identifier")
    if len(learner) > MAX_ID_LEN:
        raise StatementError("actor", f"learner id longer than {MAX_ID_LEN} characters")
    if len(item) > MAX_ID_LEN:
        raise StatementError("object.id", f"item id longer than {MAX_ID_LEN} characters")
    timestamp = None
    for key in ("timestamp", "stored"):
        if st.get(key) is None:
            continue
        try:
            timestamp = parse_timestamp(st[key])
        except (ValueError, TypeError, OverflowError):
            if key == "timestamp":  # pragma: no cover - validate_statement refuses it
                raise StatementError("timestamp", "not an ISO 8601 timestamp") from None
            continue  # a client's unreadable 'stored' is the LRS's to overwrite
        break
    elapsed = None
    if result.get("duration") is not None:
        try:
            elapsed = parse_duration_ms(result["duration"])
        except ValueError:
            elapsed = None
        if elapsed is not None and not 0 <= elapsed < _MAX_MS:
            elapsed = None
    concepts: list[str] = []
    definition = obj.get("definition") if isinstance(obj.get("definition"), dict) else {}
    context = st.get("context") if isinstance(st.get("context"), dict) else {}
    for where, ext in (
        ("object.definition.extensions", definition.get("extensions")),
        ("context.extensions", context.get("extensions")),
    ):
        if isinstance(ext, dict) and concept_extension in ext:
            try:
                found = _concepts(ext[concept_extension])
            except _Reject as rej:
                raise StatementError(f"{where}[{concept_extension}]", rej.detail or "") from None
            concepts.extend(c for c in found if c not in concepts)
    return XAPIAnswer(
        event_id=st["id"],
        learner_id=learner,
        item_id=item,
        correct=correct,
        timestamp=timestamp,
        elapsed_ms=elapsed,
        concept_ids=concepts,
    )


# ---------------------------------------------------------------------- comparison
_LANG_MAP_KEYS = ("display", "name", "description")


def _canon(value: Any, key: str | None = None) -> Any:
    if isinstance(value, dict):
        lang_map = key in _LANG_MAP_KEYS and all(isinstance(v, str) for v in value.values())
        out = {}
        for k, v in value.items():
            if v is None:
                continue  # null and absent are the same
            out[k.lower() if lang_map else k] = _canon(v, k)
        if isinstance(out.get("member"), list):  # the members of a Group have no order
            out["member"] = sorted(out["member"], key=repr)
        if out.get("objectType") == "StatementRef" and isinstance(out.get("id"), str):
            out["id"] = out["id"].lower()
        return out
    if isinstance(value, list):
        return [_canon(v) for v in value]
    return value


def canonical(st: dict[str, Any]) -> dict[str, Any]:
    """A statement in the form two statements are compared in (xAPI 1.0.3 Data §2.3.1,
    Statement Comparison Requirements): without what the LRS sets (stored, authority, version),
    UUIDs in lower case, the timestamp as an instant, language tags in lower case, Group
    members unordered, null members dropped."""
    out = {k: v for k, v in st.items() if k not in LRS_PROPERTIES}
    if isinstance(out.get("id"), str):
        out["id"] = out["id"].lower()
    if out.get("timestamp") is not None:
        with contextlib.suppress(ValueError, TypeError, OverflowError):
            out["timestamp"] = parse_instant(out["timestamp"]).isoformat()
    context = out.get("context")
    if isinstance(context, dict) and isinstance(context.get("registration"), str):
        out["context"] = {**context, "registration": context["registration"].lower()}
    return _canon(out)


def same_statement(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return canonical(a) == canonical(b)


def new_statement_id() -> str:
    return str(uuid.uuid4())
