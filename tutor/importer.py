"""Bulk import of a canonical Parquet dataset (``tutor ingest``) into the service database.

:func:`import_dataset` loads, for one organisation, the dataset's concepts (with their names),
items (with their concept links and the extra columns of ``items.parquet`` as metadata),
learners and the whole interaction history, in one transaction: a failure leaves nothing.

* **Event ids** are deterministic, ``import:<learner>:<seq>`` with ``seq`` zero-padded to ten
  digits (so that the service's order, ``(timestamp, event_id)``, keeps the dataset's order
  among answers of equal timestamp). Importing the same dataset again inserts nothing: answers
  whose event id the learner already has are skipped and counted. Learner ids longer than 180
  characters are replaced by ``h`` + their SHA-1 in the event id.
* **Expanded multi-skill rows** (``tutor ingest --keep-expanded``: one row per skill of an
  answer) are one answer again, as in training: a row equal to the learner's previous row in
  item and answer is dropped and counted (``merged_expanded``).
* **Timestamps**: the service orders answers by timestamp, so every answer needs one. A learner
  without any timestamp gets a synthetic, strictly increasing time: ``2000-01-01T00:00:00Z``
  plus ``seq`` seconds, and its answers the source ``import-untimed`` (:data:`SOURCE_UNTIMED`)
  so that nothing reads that clock as a date (the analytics' last activity and inactivity).
  Inside a learner that has timestamps, a missing one takes the previous answer's (the
  first known one for leading gaps), as training does. Both are counted.
  Timestamps are otherwise kept as they are: where a dataset's order disagrees with its clock,
  the service follows the clock.
* **Speed**: partitions are streamed with pyarrow, ids are mapped to database ids through
  dictionary encodings and numpy, and interactions are written in chunks of
  :data:`CHUNK_ROWS`: on SQLite a Core ``insert()`` compiled once and executemany'd with plain
  tuples (timestamps pre-formatted in SQLAlchemy's storage format), on PostgreSQL
  ``COPY ... FROM STDIN`` (CSV) through psycopg.
* Afterwards every learner of the organisation gets ``n_answers`` (answers stored) and
  ``first_seen`` (earliest answer) from one ``UPDATE ... FROM`` aggregate, and the
  organisation's ``catalogue_version`` is bumped.

Learner states are not built here: they are rebuilt lazily (a state that folded fewer answers
than ``n_answers`` is stale) or eagerly by ``tutor states rebuild``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import Connection, Engine, column, insert, select, table, text, update
from sqlalchemy.orm import Session

from data_loaders import Dataset
from data_loaders.progress import NoProgress, Progress

from .db import Concept, Interaction, Item, ItemConcept, Learner, Organisation
from .db.models import UNTIMED
from .operations import ensure_org, get_org

#: the synthetic clock of learners without timestamps: this instant plus ``seq`` seconds
SYNTHETIC_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
SEQ_WIDTH = 10
MAX_USER_IN_EVENT_ID = 180
SOURCE = "import"
#: the source of imported answers whose time is synthetic (their learner had no clock)
SOURCE_UNTIMED = UNTIMED
#: rows per executemany (SQLite) / per COPY buffer (PostgreSQL)
CHUNK_ROWS = 50_000
_INTERACTION_COLUMNS = (
    "org_id",
    "learner_id",
    "item_id",
    "event_id",
    "correct",
    "timestamp",
    "elapsed_ms",
    "attempt",
    "source",
    "received_at",
)
#: the interactions table with untyped columns: timestamps go in pre-formatted
_RAW_INTERACTIONS = table("interactions", *(column(c) for c in _INTERACTION_COLUMNS))


def import_dataset(
    target: Engine | Session,
    *,
    org_slug: str,
    dataset_dir: Path | str,
    create_org: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Import the dataset at ``dataset_dir`` into organisation ``org_slug`` (see the module
    docstring).

    ``target`` is an engine (the import runs and commits its own transaction) or a session
    (the import runs in the session's transaction; the caller commits). ``create_org`` creates
    a missing organisation, otherwise a missing one is an :class:`~tutor.operations.OperationError`.
    ``progress`` gets ``start(description, total)``, ``advance(rows)`` and ``finish()``.

    Returns counts: ``concepts``, ``items``, ``learners`` (rows created), ``item_concepts``
    (links added), ``interactions`` (answers inserted), ``skipped`` (answers already stored),
    ``rows`` (rows in the dataset), ``merged_expanded`` (per-skill copies of one answer, see
    the module doc), ``synthetic_timestamps`` and ``filled_timestamps``,
    ``catalogue_version`` (bumped when anything was written) and ``seconds``.
    """
    ds = Dataset.open(dataset_dir)  # DatasetError names a bad directory before any write
    if isinstance(target, Session):
        return _import(target, ds, org_slug, create_org, progress or NoProgress())
    with Session(target) as session, session.begin():
        return _import(session, ds, org_slug, create_org, progress or NoProgress())


# ---------------------------------------------------------------------- the import
def _import(
    session: Session, ds: Dataset, org_slug: str, create_org: bool, progress: Progress
) -> dict[str, Any]:
    t0 = time.perf_counter()
    org = ensure_org(session, slug=org_slug) if create_org else get_org(session, org_slug)
    session.flush()
    org_id = org.id
    conn = session.connection()
    counts: dict[str, Any] = {"org": org_slug}
    concept_ids, counts["concepts"], renamed = _import_concepts(conn, org_id, ds.concepts())
    item_ids, counts["items"], counts["item_concepts"], updated = _import_items(
        conn, org_id, ds.items(), concept_ids
    )
    learner_ids: dict[str, int] = {
        ext: lid
        for ext, lid in conn.execute(
            select(Learner.external_id, Learner.id).where(Learner.org_id == org_id)
        )
    }
    preexisting = set(learner_ids.values())
    stats = dict.fromkeys(
        ("learners", "interactions", "skipped", "rows", "synthetic", "fill", "merged"), 0
    )
    expanded = ds.manifest.get("notes", {}).get("multi_skill") == "expanded"
    total = int(ds.manifest.get("counts", {}).get("interactions") or 0) or None
    progress.start("importing interactions", total)
    try:
        received = datetime.now(UTC)
        cols = ["user_id", "item_id", "correct", "timestamp", "seq", "elapsed_ms", "attempt"]
        for part in ds.iter_partitions(cols):
            if part.num_rows == 0:
                continue
            _import_partition(
                conn,
                org_id,
                part,
                learner_ids=learner_ids,
                preexisting=preexisting,
                item_ids=item_ids,
                received=received,
                expanded=expanded,
                stats=stats,
                progress=progress,
            )
    finally:
        progress.finish()
    if stats["interactions"]:
        _update_learners(conn, org_id)
    changed = renamed + updated + counts["concepts"] + counts["items"] + counts["item_concepts"]
    if changed or stats["learners"] or stats["interactions"]:
        conn.execute(
            update(Organisation)
            .where(Organisation.id == org_id)
            .values(catalogue_version=Organisation.catalogue_version + 1)
        )
        session.expire(org)  # the ORM's copy of the organisation is stale
    counts.update(
        learners=stats["learners"],
        interactions=stats["interactions"],
        skipped=stats["skipped"],
        rows=stats["rows"],
        synthetic_timestamps=stats["synthetic"],
        filled_timestamps=stats["fill"],
        merged_expanded=stats["merged"],
        catalogue_version=session.scalar(
            select(Organisation.catalogue_version).where(Organisation.id == org_id)
        ),
        seconds=round(time.perf_counter() - t0, 3),
    )
    return counts


def _import_concepts(
    conn: Connection, org_id: int, concepts: pa.Table
) -> tuple[dict[str, int], int, int]:
    """Create the dataset's new concepts, rename existing ones whose name it gives; returns
    external id -> database id (all of the organisation's), created, renamed."""
    existing = {
        ext: (cid, name)
        for cid, ext, name in conn.execute(
            select(Concept.id, Concept.external_id, Concept.name).where(Concept.org_id == org_id)
        )
    }
    ids = concepts.column("concept_id").to_pylist()
    names = (
        concepts.column("name").to_pylist()
        if "name" in concepts.column_names
        else [None] * len(ids)
    )
    new, renamed = [], []
    for ext, name in zip(ids, names, strict=True):
        if ext in existing:
            cid, old = existing[ext]
            if name and name != old:
                renamed.append({"b_id": cid, "b_name": name})
        else:
            new.append({"org_id": org_id, "external_id": ext, "name": name or ""})
            existing[ext] = (None, name or "")
    if renamed:
        t = Concept.__table__
        conn.execute(
            t.update().where(t.c.id == _bind("b_id")).values(name=_bind("b_name")), renamed
        )
    out = {ext: cid for ext, (cid, _) in existing.items() if cid is not None}
    out.update(_insert_returning(conn, Concept.__table__, new))
    return out, len(new), len(renamed)


def _import_items(
    conn: Connection, org_id: int, items: pa.Table, concept_ids: dict[str, int]
) -> tuple[dict[str, int], int, int, int]:
    """Create the dataset's new items, merge its metadata into existing ones, add missing
    concept links (never removes one); returns external id -> database id, items created,
    links added, items updated."""
    existing = {
        ext: (iid, meta or {})
        for iid, ext, meta in conn.execute(
            select(Item.id, Item.external_id, Item.meta).where(Item.org_id == org_id)
        )
    }
    ext_ids = items.column("item_id").to_pylist()
    concept_lists = items.column("concept_ids").to_pylist()
    extra = [c for c in items.column_names if c not in ("item_id", "concept_ids")]
    metas = _metadata(items, extra)
    new, changed = [], []
    for ext, meta in zip(ext_ids, metas, strict=True):
        if ext in existing:
            iid, old = existing[ext]
            merged = {**old, **meta}
            if merged != old:
                changed.append({"b_id": iid, "b_meta": merged})
        else:
            new.append({"org_id": org_id, "external_id": ext, "metadata": meta, "active": True})
    if changed:
        t = Item.__table__
        conn.execute(
            t.update()
            .where(t.c.id == _bind("b_id"))
            .values(metadata=_bind("b_meta", t.c.metadata.type)),
            changed,
        )
    out = {ext: iid for ext, (iid, _) in existing.items()}
    out.update(_insert_returning(conn, Item.__table__, new))
    # concept links: add the dataset's missing ones (never removes a link)
    missing_concepts = sorted({c for cs in concept_lists for c in cs or () if c not in concept_ids})
    if missing_concepts:  # items.parquet names a concept concepts.parquet lacks
        concept_ids.update(
            _insert_returning(
                conn,
                Concept.__table__,
                [{"org_id": org_id, "external_id": c, "name": ""} for c in missing_concepts],
            )
        )
    have = {
        (iid, cid)
        for iid, cid in conn.execute(
            select(ItemConcept.item_id, ItemConcept.concept_id)
            .join(Item, Item.id == ItemConcept.item_id)
            .where(Item.org_id == org_id)
        )
    }
    links = []
    for ext, cs in zip(ext_ids, concept_lists, strict=True):
        iid = out[ext]
        for c in dict.fromkeys(cs or ()):
            pair = (iid, concept_ids[c])
            if pair not in have:
                have.add(pair)
                links.append({"item_id": pair[0], "concept_id": pair[1]})
    for start in range(0, len(links), CHUNK_ROWS):
        conn.execute(insert(ItemConcept.__table__), links[start : start + CHUNK_ROWS])
    return out, len(new), len(links), len(changed)


def _import_partition(
    conn: Connection,
    org_id: int,
    part: pa.Table,
    *,
    learner_ids: dict[str, int],
    preexisting: set[int],
    item_ids: dict[str, int],
    received: datetime,
    expanded: bool,
    stats: dict[str, int],
    progress: Progress,
) -> None:
    n_rows = part.num_rows
    stats["rows"] += n_rows
    part = part.take(pc.sort_indices(part, [("user_id", "ascending"), ("seq", "ascending")]))
    # learners: dictionary-encode, create the new ones, map to database ids
    users = pc.dictionary_encode(part.column("user_id")).combine_chunks()
    user_names = users.dictionary.to_pylist()
    new = [u for u in user_names if u not in learner_ids]
    if new:
        rows = [
            {"org_id": org_id, "external_id": u, "name": "", "n_answers": 0, "created_at": received}
            for u in new
        ]
        learner_ids.update(_insert_returning(conn, Learner.__table__, rows))
        stats["learners"] += len(new)
    user_code = users.indices.to_numpy(zero_copy_only=False)
    user_db = np.array([learner_ids[u] for u in user_names], dtype=np.int64)
    learner_col = user_db[user_code]
    # items: the same (items only the interactions know are created bare)
    items = pc.dictionary_encode(part.column("item_id")).combine_chunks()
    item_names = items.dictionary.to_pylist()
    unknown = [i for i in item_names if i not in item_ids]
    if unknown:
        item_ids.update(
            _insert_returning(
                conn,
                Item.__table__,
                [
                    {"org_id": org_id, "external_id": i, "metadata": {}, "active": True}
                    for i in unknown
                ],
            )
        )
    item_db = np.array([item_ids[i] for i in item_names], dtype=np.int64)
    item_col = item_db[items.indices.to_numpy(zero_copy_only=False)]
    # event ids: import:<learner>:<seq, zero-padded>
    prefixes = pa.array([_event_prefix(u) for u in user_names], pa.string())
    seq = part.column("seq").combine_chunks()
    seq_txt = pc.utf8_lpad(pc.cast(seq, pa.string()), SEQ_WIDTH, "0")
    event_ids = pc.binary_join_element_wise(prefixes.take(users.indices), seq_txt, "")
    # timestamps (int64 ms since the epoch, every row filled; see the module doc)
    ts_ms, synth, n_fill = _fill_timestamps(
        part.column("timestamp").combine_chunks(),
        user_code,
        seq.to_numpy(zero_copy_only=False),
    )
    stats["synthetic"] += int(synth.sum())
    stats["fill"] += n_fill
    keep = np.ones(n_rows, dtype=bool)
    if expanded:
        # a multi-skill answer kept as one row per skill (ingest --keep-expanded) is one answer
        # here, as in training: drop a row equal to the previous one in learner, item, answer
        item_code = items.indices.to_numpy(zero_copy_only=False)
        correct = part.column("correct").to_numpy()
        keep[1:] = ~(
            (user_code[1:] == user_code[:-1])
            & (item_code[1:] == item_code[:-1])
            & (correct[1:] == correct[:-1])
        )
        stats["merged"] += int((~keep).sum())
    # answers already stored: only learners that existed before this import can have them
    old = [int(x) for x in np.unique(learner_col) if int(x) in preexisting]
    if old:
        # event ids are unique per learner: an id is "already stored" only for its own
        # learner (another learner's answer with the same id is no reason to skip)
        stored: list[str] = []
        for start in range(0, len(old), 500):
            stored += [
                f"{lid}\x1f{ev}"
                for lid, ev in conn.execute(
                    select(Interaction.learner_id, Interaction.event_id).where(
                        Interaction.org_id == org_id,
                        Interaction.learner_id.in_(old[start : start + 500]),
                    )
                )
            ]
        if stored:
            keys = pc.binary_join_element_wise(pa.array(learner_col.astype(str)), event_ids, "\x1f")
            there = pc.is_in(keys, value_set=pa.array(stored, pa.string())).to_numpy(
                zero_copy_only=False
            )
            stats["skipped"] += int((keep & there).sum())
            keep &= ~there
    idx = np.flatnonzero(keep)
    if len(idx) == 0:
        progress.advance(n_rows)
        return
    sel = pa.array(idx)
    ts = pa.array(ts_ms[idx], pa.timestamp("ms", tz="UTC"))
    batch = pa.table(
        {
            "org_id": pa.array(np.full(len(idx), org_id, dtype=np.int64)),
            "learner_id": pa.array(learner_col[idx]),
            "item_id": pa.array(item_col[idx]),
            "event_id": event_ids.take(sel),
            "correct": pc.cast(part.column("correct").take(sel), pa.int16()),
            "timestamp": ts,
            "elapsed_ms": pc.cast(part.column("elapsed_ms").take(sel), pa.int64()),
            "attempt": pc.cast(part.column("attempt").take(sel), pa.int16()),
            "source": pa.array(np.where(synth[idx], SOURCE_UNTIMED, SOURCE), pa.string()),
            "received_at": pa.array(np.full(len(idx), _ms(received)), pa.timestamp("ms", tz="UTC")),
        }
    )
    skipped_here = n_rows - len(idx)
    if skipped_here:
        progress.advance(skipped_here)
    for start in range(0, batch.num_rows, CHUNK_ROWS):
        chunk = batch.slice(start, CHUNK_ROWS)
        _insert_interactions(conn, chunk)
        stats["interactions"] += chunk.num_rows
        progress.advance(chunk.num_rows)


def _insert_interactions(conn: Connection, chunk: pa.Table) -> None:
    """Write one chunk of interaction rows (columns ``_INTERACTION_COLUMNS``)."""
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        _copy_postgresql(conn, chunk)
        return
    stamp = {name: _sql_time(chunk.column(name)) for name in ("timestamp", "received_at")}
    if conn.dialect.name == "postgresql":  # another driver: tell it the time zone
        stamp = {k: pc.binary_join_element_wise(v, "+00", "") for k, v in stamp.items()}
    cols = [
        stamp[name].to_pylist() if name in stamp else chunk.column(name).to_pylist()
        for name in _INTERACTION_COLUMNS
    ]
    rows = list(zip(*cols, strict=True))
    stmt = insert(_RAW_INTERACTIONS)
    if conn.dialect.positional:
        # the Core statement compiled once, the rows as tuples straight to the driver's
        # executemany: SQLAlchemy's per-row parameter processing would cost as much as
        # SQLite's own work
        sql = str(stmt.compile(dialect=conn.dialect, column_keys=list(_INTERACTION_COLUMNS)))
        conn.exec_driver_sql(sql, rows)
    else:
        conn.execute(stmt, [dict(zip(_INTERACTION_COLUMNS, r, strict=True)) for r in rows])


def _copy_postgresql(conn: Connection, chunk: pa.Table) -> None:
    buf = io.BytesIO()
    out = chunk.set_column(
        chunk.column_names.index("timestamp"),
        "timestamp",
        _pg_time(chunk.column("timestamp")),
    )
    out = out.set_column(
        out.column_names.index("received_at"), "received_at", _pg_time(chunk.column("received_at"))
    )
    pacsv.write_csv(out, buf, write_options=pacsv.WriteOptions(include_header=False))
    raw = conn.connection.driver_connection
    sql = f"COPY interactions ({', '.join(_INTERACTION_COLUMNS)}) FROM STDIN (FORMAT csv)"
    with raw.cursor() as cur, cur.copy(sql) as copy:
        copy.write(buf.getvalue())


def _sql_time(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """UTC timestamps as ``YYYY-MM-DD HH:MM:SS.ffffff`` (SQLAlchemy's SQLite format)."""
    return pc.cast(pc.cast(col, pa.timestamp("us")), pa.string())


def _pg_time(col: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.binary_join_element_wise(_sql_time(col), "+00", "")


def _update_learners(conn: Connection, org_id: int) -> None:
    """Every learner of the organisation: ``n_answers`` and ``first_seen`` from its answers."""
    conn.execute(
        text(
            "UPDATE learners SET n_answers = agg.n, first_seen = CASE "
            "WHEN learners.first_seen IS NULL OR agg.first_ts < learners.first_seen "
            "THEN agg.first_ts "
            "ELSE learners.first_seen END "
            "FROM (SELECT learner_id, count(*) AS n, min(timestamp) AS first_ts FROM interactions "
            "WHERE org_id = :org GROUP BY learner_id) AS agg "
            "WHERE learners.id = agg.learner_id AND learners.org_id = :org"
        ),
        {"org": org_id},
    )


# ---------------------------------------------------------------------- helpers
def _fill_timestamps(
    ts: pa.Array, user_code: np.ndarray, seq: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """Milliseconds since the epoch for every row (rows sorted by learner, then seq), which
    rows got a synthetic time, and how many were filled from a neighbour."""
    n = len(ts)
    valid = ~np.asarray(ts.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    ms = pc.cast(ts, pa.int64()).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    if valid.all():
        return ms, np.zeros(n, dtype=bool), 0
    starts = np.flatnonzero(np.r_[True, user_code[1:] != user_code[:-1]])
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, n]))
    group_start = starts[group]
    group_end = np.r_[starts[1:], n][group] - 1
    pos = np.arange(n)
    prev = np.maximum.accumulate(np.where(valid, pos, -1))
    nxt = np.minimum.accumulate(np.where(valid, pos, n)[::-1])[::-1]
    has_prev = prev >= group_start
    has_next = nxt <= group_end
    out = ms.copy()
    fill = ~valid & has_prev
    out[fill] = ms[prev[fill]]
    lead = ~valid & ~has_prev & has_next
    out[lead] = ms[nxt[lead]]
    synth = ~valid & ~has_prev & ~has_next
    out[synth] = _ms(SYNTHETIC_EPOCH) + seq[synth].astype(np.int64) * 1000
    return out, synth, int(fill.sum() + lead.sum())


def _event_prefix(user: str) -> str:
    if len(user) > MAX_USER_IN_EVENT_ID:
        user = "h" + hashlib.sha1(user.encode()).hexdigest()
    return f"import:{user}:"


def _ms(dt: datetime) -> int:
    return int(round(dt.timestamp() * 1000))


def _bind(name: str, type_: Any = None):  # noqa: ANN202
    from sqlalchemy import bindparam

    return bindparam(name, type_=type_)


def _insert_returning(conn: Connection, tbl: Any, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert rows with an ``external_id``; returns external id -> new database id."""
    out: dict[str, int] = {}
    stmt = insert(tbl).returning(tbl.c.external_id, tbl.c.id)
    for start in range(0, len(rows), 5000):
        out.update((ext, rid) for ext, rid in conn.execute(stmt, rows[start : start + 5000]))
    return out


def _metadata(items: pa.Table, extra: Iterable[str]) -> list[dict[str, Any]]:
    """The extra columns of ``items.parquet`` as one JSON-able dict per item (nulls left out)."""
    extra = list(extra)
    out: list[dict[str, Any]] = [{} for _ in range(items.num_rows)]
    for name in extra:
        for k, v in enumerate(items.column(name).to_pylist()):
            v = _jsonable(v)
            if v is not None:
                out[k][name] = v
    return out


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (str, bool, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None  # (JSON has no NaN or infinity)
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, bytes):
        return v.hex()
    try:
        json.dumps(v)
    except TypeError:
        return str(v)
    return v
