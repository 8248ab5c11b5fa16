"""The research benchmark file formats most published knowledge-tracing numbers are on.

* ``three-line``: ``length`` / comma-separated ids / comma-separated answers per learner
  (DKVMN and original DKT files; trailing commas allowed). The first line may also be
  ``index,user`` (AKT's ASSIST2015 folds), in which case the user id is kept.
* ``four-line``: AKT's ``pid`` files: ``index,user`` / problem ids / skill ids / answers.
* ``pykt``: pyKT's split CSV ``fold,uid,concepts,responses[,questions,...]`` with the sequences
  comma-joined in one cell; the fold is kept (fold -1 = the test learners).
* ``tabular``: tab-separated ``user item timestamp correct skill`` files (with a header),
  with an optional ``q_mat.npz`` item x skill matrix giving every item's skills.
* ``dkt-synthetic``: DKT's synthetic rows: one student per line, 0/1 answers to questions
  0..Q-1 in a fixed order, concepts from the matching ``info/*_info.txt`` file.

Where a file name carries a split or a fold (``train``, ``valid``, ``test``, a trailing
number), it is kept in the ``split`` and ``fold`` columns so that evaluation can use exactly
the published split.

Ids in these files are integers re-indexed by whoever prepared them; they are kept as
strings, as the source names them. Learners without an id of their own are named
``<file stem>:<record number>`` so that ids are unique across files.

A line longer than ``max_line_bytes`` (every loader here has the option; default
:data:`~data_loaders.inputs.MAX_LINE_BYTES`, 1 MiB) is not held in memory: its record is
rejected (``line too long``) and the ingest goes on. Timestamps (``tabular``, pyKT's
``timestamps``) are milliseconds since 1970-01-01 UTC and must be whole numbers in
[1970-01-01, 2200-01-01) (:data:`TIMESTAMP_MAX_MS`: the canonical ``timestamp[ms]`` column,
and pandas' nanosecond timestamps which end in 2262, hold every such value); anything else is
a rejected row (``bad timestamp``: not a finite whole number, e.g. ``nan``, ``1e400``, ``1.5``;
``timestamp out of range``), never a silent null.

This module holds what the formats share (file listing, split names, answer and timestamp
cells, concept-name side files). The loaders are in :mod:`.benchmark_lines` (the
line-oriented DKT / DKVMN / AKT / pyKT formats and DKT's synthetic rows) and
:mod:`.benchmark_tabular` (tab-separated tables).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from .base import Option
from .errors import IngestError
from .inputs import MAX_LINE_BYTES, InputFile, list_files

_SPLIT_RE = re.compile(r"(train|valid|validation|dev|test)[_-]?(\d+)?", re.IGNORECASE)
_SIDE_FILE_RE = re.compile(
    r"(qid_sid|qname_qid|sname_sid|skill_mapping|keyid2idx|info|readme|\.json|\.npz|\.md)",
    re.IGNORECASE,
)


#: ``-o max_line_bytes=N``: every benchmark loader reads lines of at most this many bytes.
MAX_LINE_OPTION = Option(
    "max_line_bytes",
    int,
    MAX_LINE_BYTES,
    "lines longer than this many bytes are rejected ('line too long') without being parsed",
)
#: Timestamps are milliseconds since 1970-01-01 UTC in [0, TIMESTAMP_MAX_MS): 2200-01-01.
TIMESTAMP_MAX_MS = 7_258_118_400_000
BAD_TIMESTAMP = "bad timestamp"
TIMESTAMP_OUT_OF_RANGE = "timestamp out of range"


def parse_timestamp(text: str, field: str = "timestamp") -> int | tuple[str, str]:
    """A timestamp cell (milliseconds since 1970-01-01 UTC) -> its value, or (reason, detail).

    Whole numbers, also written as decimals (``1600000000000.0``, ``1.6e12``), are accepted;
    ``nan``, infinities, fractions and text are ``bad timestamp``; values outside
    [1970-01-01, 2200-01-01) are ``timestamp out of range``.
    """
    t = text.strip()
    try:
        value = int(t)
    except ValueError:
        try:
            f = float(t)
        except ValueError:
            return BAD_TIMESTAMP, f"{field}={text[:100]!r} is not a number"
        if not math.isfinite(f) or not f.is_integer():
            return BAD_TIMESTAMP, (
                f"{field}={text[:100]!r} is not a finite whole number of milliseconds"
            )
        value = int(f)
    if not 0 <= value < TIMESTAMP_MAX_MS:
        return TIMESTAMP_OUT_OF_RANGE, (
            f"{field}={text[:100]!r} is outside 1970-01-01..2200-01-01 UTC "
            f"(0 <= milliseconds < {TIMESTAMP_MAX_MS})"
        )
    return value


def split_from_name(name: str) -> tuple[str | None, int | None]:
    """``assist2009_pid_train1.csv`` -> ('train', 1); ``builder_test.csv`` -> ('test', None)."""
    m = _SPLIT_RE.search(Path(name).name)
    if not m:
        return None, None
    word = m.group(1).lower()
    split = {"validation": "valid", "dev": "valid"}.get(word, word)
    fold = int(m.group(2)) if m.group(2) else None
    return split, fold


def parse_tokens(text: str) -> list[str]:
    """Comma-separated tokens, tolerating a trailing comma and spaces."""
    return [t.strip() for t in text.strip().rstrip(",").split(",") if t.strip() != ""]


def data_files(root: Path) -> list[InputFile]:
    """The data files of an input; a directory's or archive's side files are left out."""
    files = list_files(root)
    if root.is_dir() or (root.is_file() and root.suffix == ".zip"):
        files = [f for f in files if not _SIDE_FILE_RE.search(Path(f.member or f.path).name)]
    return files


def parse_answers(tokens: list[str]) -> list[int] | str:
    """0/1 answers, or the reason they are not."""
    out = []
    for t in tokens:
        if t == "0" or t == "1":
            out.append(int(t))
        elif t in ("0.0", "1.0"):
            out.append(int(float(t)))
        else:
            return f"answer {t!r} is not 0 or 1"
    return out


def load_concept_names(root: Path, given: Path | None) -> dict[str, str]:
    """Concept id -> name from a side file: ``--concepts`` or one found beside the data.

    Understood: JSON objects mapping name -> id (AKT's ``skill.json``) or id -> name, and
    two-column tab-separated files (DKVMN's ``*_sname_sid``, ``*skill_mapping.txt``) in
    either column order (the integer column is the id).
    """
    if given is not None:
        candidates = [Path(given)]
        if not candidates[0].is_file():
            raise IngestError("concepts file not found", file=str(given))
    else:
        base = root if root.is_dir() else root.parent
        candidates = sorted(
            [*base.glob("skill.json"), *base.glob("*sname_sid"), *base.glob("*skill_mapping.txt")]
        )
    if not candidates:
        return {}
    path = candidates[0]
    text = InputFile(name=str(path), path=path).read_text()
    out: dict[str, str] = {}
    if path.suffix == ".json" or text.lstrip().startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise IngestError(f"not valid JSON: {exc}", file=str(path)) from exc
        if not isinstance(obj, dict):
            raise IngestError("expected a JSON object of concept names", file=str(path))
        for k, v in obj.items():
            if isinstance(v, int) or (isinstance(v, str) and v.isdigit() and not k.isdigit()):
                out[str(v)] = str(k).strip()
            else:
                out[str(k)] = str(v).strip()
        return out
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) < 2:
            raise IngestError(
                "expected two tab-separated columns (name, id)", file=str(path), line=lineno
            )
        a, b = parts[0], parts[1]
        if b.isdigit() and not a.isdigit():
            out[b] = a
        else:
            out[a] = b
    return out
