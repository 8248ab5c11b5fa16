"""xAPI (Experience API 1.0.3) statements: what a learning platform's LRS exports.

This module holds the format's contract and the parsing of a statement's fields (also used by
the tutor's LRS endpoint, :mod:`tutor.xapi`). Reading statement records out of files (JSON
lines, arrays, StatementResults; size and nesting bounds) is :mod:`.xapi_records`; the loader
is :mod:`.xapi_loader`.

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
"""

from __future__ import annotations

import functools
import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

#: The default extension IRI that carries an answer's concepts (knowledge components).
DEFAULT_CONCEPT_EXTENSION = "https://w3id.org/xapi/kt/extensions/concepts"
VOIDED = "voided"
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


class _Reject(Exception):
    """A statement that fails validation: reason (a short category) and detail."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


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


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
