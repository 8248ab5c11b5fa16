"""EdNet KT2 / KT3 (``timestamp, action_type, item_id, source, user_answer, platform``) and
KT4 (the same plus ``cursor_time``): action logs, from which the answers are derived.

The rules every EdNet format shares (learner ids, questions.csv, correctness, rejected rows)
are in :mod:`.ednet`. The action logs in particular:

* Every well-formed action row (``enter``, ``respond``, ``submit``, ``quit``, media,
  ``erase_choice``, ``pay``, lectures and explanations included, ``respond`` too) is kept in
  ``events.parquet``: the answers are derived from them, not taken out of them.
* Answers: a ``respond`` to question q is pending until the ``submit`` of q's bundle
  (``bundle_id`` in questions.csv). At the submit, every pending question of that bundle
  becomes one interaction with the *last* response given to it (earlier ones are counted as
  skipped, "response superseded"). ``timestamp`` = the submit's time (when the answer became
  final); ``elapsed_ms`` = submit time - time of the last ``enter`` of that bundle (null when
  the bundle was not entered); the row points (``_line``) at the winning ``respond``, and the
  answers of one submit are in the order of their winning responses.
  Entering a bundle again drops its pending responses, and responses still pending at the end
  of the file were never submitted: both are counted as skipped ("response never
  submitted"), not as answers. Rows are processed in timestamp order (ties in file order).
* Every other action is counted as skipped ("<action> action (kept in events)"), so that
  rows read = interactions + rejected + skipped. Values are trimmed; empty text fields are
  null in events.parquet. These files are small: each is parsed on its own (one pyarrow
  call, or line by line when that cannot be trusted) and walked once in Python.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .ednet import EdNetLoader
from .ednet_files import LearnerFile, parse_ints, raw_lines


class _ActionLoader(EdNetLoader):
    """KT2-KT4: action logs; answers derived at the submit of their bundle."""

    need_bundle = True
    required: ClassVar[tuple[str, ...]] = ("timestamp", "action_type", "item_id", "user_answer")
    options = ()
    flush_rows: ClassVar[int] = 200_000

    def load(self) -> None:
        q, inputs = self._setup()
        self.q = q
        ids = q.ids.to_pylist()
        bundles = q.bundle.to_pylist() if q.bundle is not None else [None] * len(ids)
        self._qindex: dict[str, int] = {}
        for i, qid in enumerate(ids):
            self._qindex.setdefault(qid, i)
        self._bundle_of = bundles
        self._answers: dict[str, list[Any]] = {
            k: [] for k in ("user", "qi", "answer", "ts", "elapsed", "file", "line")
        }
        self._events: list[pa.Table] = []
        self._event_rows = 0
        self._empty = 0
        try:
            for f in inputs.files:
                size = f.size
                idx = self.writer.register_file(f.name, size)
                self._file(f, idx, inputs.read(f))
                self.writer.progress.advance(size)
        finally:
            inputs.close()
        self._flush_answers()
        self._flush_events()
        self._note_empty_answers(self._empty)
        self.writer.note(
            "answers_from_actions",
            "one interaction per question at the submit of its bundle, last response wins; "
            "timestamp = submit time, elapsed_ms = submit - last enter of the bundle; all "
            "raw actions are in events.parquet",
        )

    def _file(self, f: LearnerFile, idx: int, data: bytes) -> None:
        what = f"an EdNet {self.name} file"
        read = self._parse(data, f.name, self.ctx.encoding, self.required, what)
        if read is None:
            return
        parsed, ts, bad_ts = read
        t, bad = parsed.table, list(parsed.bad)
        n = t.num_rows
        no_ts = pc.is_null(ts).to_numpy(zero_copy_only=False) & ~bad_ts
        if "cursor_time" in t.column_names:
            cursor, bad_cur = parse_ints(t.column("cursor_time"))
        else:
            cursor, bad_cur = pa.nulls(n, pa.int64()), np.zeros(n, dtype=bool)
        actions = pc.utf8_trim_whitespace(t.column("action_type")).combine_chunks()
        no_action = pc.equal(actions, "").to_numpy(zero_copy_only=False)
        drop = bad_ts | no_ts | bad_cur | no_action
        if drop.any():
            rows = np.flatnonzero(drop)
            raws = raw_lines(parsed.data, parsed.lines[rows].tolist())
            for r, raw in zip(rows, raws, strict=True):
                if bad_ts[r] or no_ts[r]:
                    value = t.column("timestamp")[int(r)].as_py()
                    reason = "bad timestamp" if bad_ts[r] else "missing timestamp"
                    detail = f"timestamp {value!r}"
                elif bad_cur[r]:
                    reason = "bad cursor_time"
                    detail = f"cursor_time {t.column('cursor_time')[int(r)].as_py()!r}"
                else:
                    reason, detail = "missing action_type", "action_type is empty"
                bad.append((int(parsed.lines[r]), reason, raw, detail))
        self._reject_rows(idx, bad)
        keep = ~drop
        if not keep.any():
            return
        mask = pa.array(keep)
        lines = parsed.lines[keep]
        ts_np = ts.filter(mask).to_numpy(zero_copy_only=False).astype(np.int64)
        order = np.argsort(ts_np, kind="stable")
        take = pa.array(order)

        def col(name: str, empty_null: bool = True) -> pa.Array:
            if name not in t.column_names:
                return pa.nulls(len(order), pa.string())
            c = pc.utf8_trim_whitespace(t.column(name)).combine_chunks().filter(mask).take(take)
            if empty_null:
                c = pc.if_else(pc.equal(c, ""), pa.scalar(None, pa.string()), c)
            return c

        action_col = actions.filter(mask).take(take)
        item_col = col("item_id")
        answer_col = col("user_answer")
        ts_np, lines = ts_np[order], lines[order]
        m = len(order)
        self._events.append(
            pa.table(
                {
                    "user_id": pa.DictionaryArray.from_arrays(
                        pa.array(np.zeros(m, dtype=np.int32)), pa.array([f.stem])
                    ),
                    "timestamp": pa.array(ts_np),
                    "action_type": action_col,
                    "item_id": item_col,
                    "source": col("source"),
                    "platform": col("platform"),
                    "cursor_time": cursor.filter(mask).take(take),
                    "user_answer": answer_col,
                }
            )
        )
        self._event_rows += m
        if self._event_rows >= self.flush_rows:
            self._flush_events()
        self._derive(
            f.stem,
            idx,
            action_col.to_pylist(),
            item_col.to_pylist(),
            answer_col.to_pylist(),
            ts_np.tolist(),
            lines.tolist(),
            data,
        )

    def _derive(
        self,
        user: str,
        idx: int,
        actions: list[str],
        items: list[str | None],
        answers: list[str | None],
        stamps: list[int],
        lines: list[int],
        data: bytes,
    ) -> None:
        """The sequential pass: pending responses resolved at their bundle's submit."""
        qindex, bundle_of = self._qindex, self._bundle_of
        pending: dict[int, int] = {}  # question row -> position of its last response
        entered: dict[str, int] = {}  # bundle -> time of its last enter
        out = self._answers  # one submit's answers: in the order of their winning responses
        superseded = never = 0
        other: dict[str, int] = {}
        unknown: list[int] = []
        for i, action in enumerate(actions):
            if action == "respond":
                qi = qindex.get(items[i] or "")
                if qi is None:
                    unknown.append(i)
                    continue
                if qi in pending:
                    superseded += 1
                pending[qi] = i
                continue
            other[action] = other.get(action, 0) + 1
            item = items[i]
            if item is None:
                continue
            if action == "enter":
                entered[item] = stamps[i]
                drop = [qi for qi in pending if bundle_of[qi] == item]
                for qi in drop:
                    del pending[qi]
                never += len(drop)
            elif action == "submit" and pending:
                resolved = sorted((pos, qi) for qi, pos in pending.items() if bundle_of[qi] == item)
                start = entered.get(item)
                elapsed = stamps[i] - start if start is not None else None
                for pos, qi in resolved:
                    del pending[qi]
                    out["user"].append(user)
                    out["qi"].append(qi)
                    out["answer"].append(answers[pos] or "")
                    out["ts"].append(stamps[i])
                    out["elapsed"].append(elapsed)
                    out["file"].append(idx)
                    out["line"].append(lines[pos])
        never += len(pending)
        if superseded:
            self.writer.skip("response superseded by a later response", superseded)
        if never:
            self.writer.skip("response never submitted", never)
        for action, n in other.items():
            self.writer.skip(f"{action} action (kept in events)", n)
        if unknown:
            raws = raw_lines(data, [lines[i] for i in unknown])
            self.writer.reject_many(
                np.full(len(unknown), idx, dtype=np.int32),
                [lines[i] for i in unknown],
                "unknown question",
                raws,
                [f"question_id {items[i]!r} is not in questions.csv" for i in unknown],
            )
        if len(out["user"]) >= self.flush_rows:
            self._flush_answers()

    def _flush_answers(self) -> None:
        out = self._answers
        if not out["user"]:
            return
        qi = pa.array(out["qi"], pa.int64())
        answers = pa.array(out["answer"], pa.string())
        self._empty += int(pc.sum(pc.cast(pc.equal(answers, ""), pa.int64())).as_py() or 0)
        correct = pc.cast(
            pc.fill_null(pc.equal(answers, self.q.correct_answer.take(qi)), False), pa.int8()
        )
        ts = pa.array(out["ts"], pa.int64())
        self.writer.add_interactions(
            pa.table(
                {
                    "user_id": pa.array(out["user"], pa.string()),
                    "item_id": self.q.ids.take(qi),
                    "concept_ids": self.q.tags.take(qi),
                    "correct": correct,
                    "timestamp": ts,
                    "elapsed_ms": pa.array(out["elapsed"], pa.int64()),
                    "_file": pa.array(out["file"], pa.int32()),
                    "_line": pa.array(out["line"], pa.int64()),
                    "_order": ts,
                }
            )
        )
        for v in out.values():
            v.clear()

    def _flush_events(self) -> None:
        if self._events:
            self.writer.add_events(pa.concat_tables(self._events, promote_options="permissive"))
            self._events, self._event_rows = [], 0


class EdNetKT2Loader(_ActionLoader):
    name = "ednet-kt2"
    summary = "EdNet KT2 action logs (enter/respond/submit) + questions.csv; answers at submit"


class EdNetKT3Loader(_ActionLoader):
    name = "ednet-kt3"
    summary = "EdNet KT3 action logs (with lectures, explanations) + questions.csv"


class EdNetKT4Loader(_ActionLoader):
    name = "ednet-kt4"
    summary = "EdNet KT4 action logs (all actions, cursor_time) + questions.csv"
    required = ("timestamp", "action_type", "item_id", "cursor_time", "user_answer")
