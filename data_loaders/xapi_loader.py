"""The xAPI loader: statements -> interactions, as :mod:`.xapi` describes.

Two passes over the files when ``apply_voiding`` is on (the first finds the voided statement
ids); statements are validated before the verb decides whether they are answers, so that an
invalid statement is rejected whatever its verb.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pyarrow as pa

from .base import Loader, Option
from .errors import IngestError
from .inputs import MAX_LINE_BYTES, InputFile, list_files, max_line_bytes
from .xapi import (
    DEFAULT_CONCEPT_EXTENSION,
    VOIDED,
    _concepts,
    _dup_key,
    _is_number,
    _lang,
    _Reject,
    actor_id,
    parse_duration_ms,
    parse_timestamp_ms,
    verb_name,
)
from .xapi_records import RAW_LIMIT, BadRecord, iter_records

CHUNK_ROWS = 100_000
_PATTERNS = ("*.json", "*.jsonl", "*.ndjson", "*.json.gz", "*.jsonl.gz", "*.ndjson.gz")


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
        self._max_bytes = max_line_bytes(self.opts)
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
            if isinstance(obj, BadRecord):
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
