"""Administrative operations shared by the CLI, the admin API, the demo and the tests:
organisations and their recommendation settings, catalogue upserts, model registration,
listing and activation, state rebuilds; and the helpers of the API's administration services
(:mod:`tutor.catalogue_admin`, :mod:`tutor.learners_admin`): the organisation lock, lookups by
external id, counts.

Every function takes a session and leaves committing to the caller. The functions the CLI
calls raise :class:`OperationError`; those written for the API raise :mod:`tutor.errors`'
errors, which carry their HTTP status.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import torch
from sqlalchemy import Select, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from kt_models.metrics import json_safe

from .db import (
    Concept,
    Group,
    GroupMembership,
    Item,
    ItemConcept,
    Learner,
    LearnerState,
    ModelVersion,
    Organisation,
    PrerequisiteEdge,
)
from .errors import Conflict, Invalid, NotFound, listed
from .runtime import LoadedModel, sha256
from .settings import MASTERY_SCALES, POLICIES, Settings

T = TypeVar("T")

log = logging.getLogger(__name__)


class OperationError(ValueError):
    """A bad administrative request (unknown organisation, unreadable run directory...)."""


def get_org(session: Session, slug: str) -> Organisation:
    org = session.scalar(select(Organisation).where(Organisation.slug == slug))
    if org is None:
        raise OperationError(f"organisation {slug!r} does not exist (create it: tutor orgs create)")
    return org


def create_org(session: Session, *, slug: str, name: str | None = None) -> Organisation:
    if session.scalar(select(Organisation).where(Organisation.slug == slug)) is not None:
        raise OperationError(f"organisation {slug!r} already exists")
    org = Organisation(slug=slug, name=name or slug, settings={}, catalogue_version=0)
    session.add(org)
    session.flush()
    return org


def ensure_org(session: Session, *, slug: str, name: str | None = None) -> Organisation:
    org = session.scalar(select(Organisation).where(Organisation.slug == slug))
    return org if org is not None else create_org(session, slug=slug, name=name)


def lock_org(session: Session, org: Organisation) -> None:
    """Serialise the organisation's catalogue and settings writers on its row, so that two
    cannot bump the catalogue version to the same number (PostgreSQL; a no-op on SQLite,
    whose writers are serialised anyway)."""
    session.refresh(org, with_for_update=True)


def lookup(session: Session, model: type[T], *, org: Organisation, external_id: str) -> T | None:
    """The organisation's row of ``model`` (concept, item, learner, group) with this external
    id, or None."""
    return session.scalar(
        select(model).where(model.org_id == org.id, model.external_id == external_id)
    )


def by_external_id(
    session: Session, model: type[T], *, org: Organisation, external_ids: Iterable[str]
) -> dict[str, T]:
    """The organisation's rows of ``model`` with these external ids (those that exist), by
    id."""
    q = select(model).where(model.org_id == org.id, model.external_id.in_(list(external_ids)))
    return {row.external_id: row for row in session.scalars(q)}


def find(session: Session, model: type[T], *, org: Organisation, external_id: str) -> T:
    """:func:`lookup`, with :class:`~tutor.errors.NotFound` naming the row for none."""
    row = lookup(session, model, org=org, external_id=external_id)
    if row is None:
        raise NotFound(f"{model.__name__.lower()} {external_id!r} not found")
    return row


def count_rows(session: Session, q: Select) -> int:
    """How many rows a query selects (a listing's total, before its page is cut)."""
    return int(session.scalar(select(func.count()).select_from(q.subquery())) or 0)


def upsert_concepts(
    session: Session, *, org: Organisation, concepts: Iterable[tuple[str, str]]
) -> dict[str, Concept]:
    """Create or rename concepts ``(external_id, name)``; returns all of the org's concepts."""
    existing = {
        c.external_id: c for c in session.scalars(select(Concept).where(Concept.org_id == org.id))
    }
    changed = False
    for cid, name in concepts:
        c = existing.get(cid)
        if c is None:
            c = existing[cid] = Concept(org_id=org.id, external_id=cid, name=name or "")
            session.add(c)
            changed = True
        elif name and c.name != name:
            c.name, changed = name, True
    if changed:
        org.bump_catalogue()
        session.flush()
    return existing


def set_concept_levels(
    session: Session, *, org: Organisation, levels: dict[str, float | None]
) -> None:
    """Set concepts' teaching levels (e.g. school grades; None clears one). Unknown concepts
    and non-finite levels are an :class:`OperationError`; nothing changes then."""
    existing = {
        c.external_id: c for c in session.scalars(select(Concept).where(Concept.org_id == org.id))
    }
    for cid, level in levels.items():
        if cid not in existing:
            raise OperationError(f"concept level for {cid!r}: unknown concept")
        if level is not None and not (isinstance(level, int | float) and math.isfinite(level)):
            raise OperationError(f"concept level for {cid!r}: expected a finite number")
    changed = False
    for cid, level in levels.items():
        value = None if level is None else float(level)
        if existing[cid].level != value:
            existing[cid].level, changed = value, True
    if changed:
        org.bump_catalogue()
        session.flush()


def upsert_items(
    session: Session,
    *,
    org: Organisation,
    items: Iterable[tuple[str, list[str], dict[str, Any]]],
) -> int:
    """Create items ``(external_id, concept ids, metadata)`` and link their concepts (missing
    concepts are created). Existing items get their concept links replaced. Returns the
    number of items created."""
    items = list(items)
    concepts = upsert_concepts(
        session, org=org, concepts=[(c, "") for _, cs, _ in items for c in cs]
    )
    existing = {
        i.external_id: i
        for i in session.scalars(
            select(Item).where(Item.org_id == org.id).execution_options(populate_existing=False)
        )
    }
    created = 0
    for ext, cids, meta in items:
        it = existing.get(ext)
        if it is None:
            it = Item(org_id=org.id, external_id=ext, meta=meta or {}, active=True)
            session.add(it)
            existing[ext] = it
            created += 1
        elif meta:
            it.meta = {**(it.meta or {}), **meta}
        it.concepts = [concepts[c] for c in dict.fromkeys(cids)]
    org.bump_catalogue()
    session.flush()
    return created


def set_prerequisites(
    session: Session, *, org: Organisation, edges: Iterable[tuple[str, str]], replace: bool = True
) -> int:
    """Set the organisation's prerequisite graph from ``(prerequisite, concept)`` id pairs.
    A cycle or an unknown concept is refused (nothing changes)."""
    from .curriculum import design_curriculum

    concepts = {
        c.external_id: c for c in session.scalars(select(Concept).where(Concept.org_id == org.id))
    }
    edges = list(dict.fromkeys(edges))
    for a, b in edges:
        for cid in (a, b):
            if cid not in concepts:
                raise OperationError(f"prerequisite edge ({a!r}, {b!r}): unknown concept {cid!r}")
    try:  # the designer validates the graph (cycles named)
        design_curriculum(None, list(concepts), prerequisites=edges)
    except ValueError as exc:
        raise OperationError(str(exc)) from exc
    if replace:
        for e in session.scalars(select(PrerequisiteEdge).where(PrerequisiteEdge.org_id == org.id)):
            session.delete(e)
        session.flush()
    for a, b in edges:
        session.add(
            PrerequisiteEdge(
                org_id=org.id, prerequisite_id=concepts[a].id, concept_id=concepts[b].id
            )
        )
    org.bump_catalogue()
    session.flush()
    return len(edges)


def register_model(
    session: Session,
    *,
    org: Organisation,
    run_dir: Path | str,
    checkpoint: str = "best.pt",
    label: str = "",
    activate: bool = False,
    add_catalogue: bool = True,
    mapping: dict[str, dict[str, str]] | None = None,
) -> ModelVersion:
    """Register a trained run's checkpoint (stored in the database); optionally make it the
    organisation's active model. The model's items and concepts are added to the catalogue
    (``add_catalogue``) so that it can serve them at once. A model trained under other ids
    than the catalogue's takes ``mapping`` (:func:`read_mapping`), kept with the version and
    applied wherever it is loaded; without it, a model that does not fit the catalogue is
    refused (:func:`catalogue_differences`)."""
    run_dir = Path(run_dir)
    path = run_dir / checkpoint if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise OperationError(
            f"{path}: no checkpoint (train first: tutor train ... --out {run_dir})"
        )
    blob = path.read_bytes()
    try:
        loaded = LoadedModel.from_bytes(-1, blob, mapping)
    except Exception as exc:  # CheckpointError and friends: name the file
        raise OperationError(f"{path}: not a usable checkpoint: {exc}") from exc
    diffs = catalogue_differences(session, org=org, loaded=loaded)
    if diffs:
        raise ModelMismatch(f"{path}: trained on another catalogue: " + "; ".join(diffs))
    # the run's directory name, not the server's path (the model card shows it to teachers)
    info: dict[str, Any] = {"path": path.parent.name, "time_unit": loaded.time_unit}
    if mapping:
        info["mapping"] = mapping
    for name in ("results.json", "run.json"):
        f = path.parent / name
        if f.is_file():
            with contextlib.suppress(json.JSONDecodeError):
                info[name.removesuffix(".json")] = json.loads(f.read_text())
    info = json_safe(info)  # PostgreSQL's JSON refuses NaN (empty calibration bins...)
    mv = ModelVersion(
        org_id=org.id,
        name=loaded.name,
        label=label or path.parent.name,
        sha256=sha256(blob),
        checkpoint=blob,
        vocab_fingerprint=loaded.model.vocab.fingerprint(),
        info=info,
    )
    session.add(mv)
    session.flush()
    if add_catalogue:
        vocab = loaded.model.vocab
        concepts = loaded.concept_ids  # the catalogue's ids (mapped)
        items = loaded.item_ids
        upsert_concepts(session, org=org, concepts=[(c, "") for c in concepts])
        have = set(session.scalars(select(Item.external_id).where(Item.org_id == org.id)).all())
        new = [
            (it, [concepts[c - 1] for c in vocab.item_concepts[k + 1] if c > 0], {})
            for k, it in enumerate(items)
            if it not in have
        ]
        if new:
            upsert_items(session, org=org, items=new)
    if activate:
        activate_model(session, org=org, model_id=mv.id)
    return mv


def read_mapping(path: Path | str) -> dict[str, dict[str, str]]:
    """An id mapping for a model trained under other ids: a CSV file with the header
    ``kind,model_id,catalogue_id`` (``kind``: ``item`` or ``concept``), one row per renamed id
    (ids not listed keep theirs). :class:`OperationError` naming the row otherwise."""
    import csv

    path = Path(path)
    out: dict[str, dict[str, str]] = {"items": {}, "concepts": {}}
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = csv.DictReader(f)
            if rows.fieldnames != ["kind", "model_id", "catalogue_id"]:
                raise OperationError(
                    f"{path}: expected the header kind,model_id,catalogue_id, got "
                    f"{','.join(rows.fieldnames or [])}"
                )
            for n, row in enumerate(rows, start=2):
                kind = (row.get("kind") or "").strip()
                src, dst = (row.get("model_id") or "").strip(), (row.get("catalogue_id") or "")
                dst = dst.strip()
                if kind not in ("item", "concept") or not src or not dst:
                    raise OperationError(
                        f"{path}, line {n}: expected kind item or concept and two ids, got "
                        f"{kind!r}, {src!r}, {dst!r}"
                    )
                table = out["items" if kind == "item" else "concepts"]
                if src in table and table[src] != dst:
                    raise OperationError(f"{path}, line {n}: {kind} {src!r} mapped twice")
                table[src] = dst
    except (OSError, UnicodeDecodeError) as exc:
        raise OperationError(f"{path}: cannot read the mapping ({exc})") from exc
    for kind, table in out.items():
        if len(set(table.values())) != len(table):
            raise OperationError(f"{path}: two model {kind} map to the same catalogue id")
    return out


class ModelMismatch(OperationError):
    """A model version that must not serve this organisation (does not load, checksum, or
    another catalogue): the API's 409, with the differences."""


#: activation refuses a model whose item -> concept links disagree with the catalogue's on
#: more than this share of the items they have in common
LINK_MISMATCH_SHARE = 0.01


def catalogue_differences(session: Session, *, org: Organisation, loaded: LoadedModel) -> list[str]:
    """How a model's vocabulary disagrees with the organisation's catalogue (empty: it fits).
    A model fits an empty catalogue; otherwise some of its items must be in the catalogue and
    the items in both must link (almost) the same concepts (:data:`LINK_MISMATCH_SHARE`)."""
    links: dict[str, set[str]] = {}
    for item, concept in session.execute(
        select(Item.external_id, Concept.external_id)
        .outerjoin(ItemConcept, ItemConcept.item_id == Item.id)
        .outerjoin(Concept, Concept.id == ItemConcept.concept_id)
        .where(Item.org_id == org.id)
    ):
        links.setdefault(item, set())
        if concept is not None:
            links[item].add(concept)
    if not links:
        return []
    vocab = loaded.model.vocab
    items = loaded.item_ids  # mapped ids
    concepts = loaded.concept_ids
    common = [(k, it) for k, it in enumerate(items) if it in links]
    if not common:
        sample = ", ".join(repr(i) for i in items[:3])
        return [
            f"none of the model's {len(items)} items (e.g. {sample}) is in the "
            f"organisation's catalogue of {len(links)} items; register it with an id mapping "
            "(tutor models register --mapping FILE) if it was trained under other ids"
        ]
    wrong = []
    for k, it in common:
        mine = {concepts[c - 1] for c in vocab.item_concepts[k + 1] if c > 0}
        if mine != links[it]:
            wrong.append((it, sorted(mine), sorted(links[it])))
    if len(wrong) > LINK_MISMATCH_SHARE * len(common):
        shown = "; ".join(f"item {i!r}: model {m}, catalogue {c}" for i, m, c in wrong[:3])
        return [
            f"{len(wrong)} of the {len(common)} items the model shares with the catalogue "
            f"link other concepts ({shown})"
        ]
    return []


def check_model(session: Session, *, org: Organisation, mv: ModelVersion) -> LoadedModel:
    """The version's checkpoint loads, matches its checksum and fits the catalogue, else
    :class:`ModelMismatch` naming what is wrong."""
    blob = session.scalar(select(ModelVersion.checkpoint).where(ModelVersion.id == mv.id))
    mapping = (mv.info or {}).get("mapping")
    if not blob or sha256(blob) != mv.sha256:
        raise ModelMismatch(
            f"model {mv.id}: its stored checkpoint does not match its checksum "
            f"(sha256 {mv.sha256[:12]}...): register it again"
        )
    try:
        loaded = LoadedModel.from_bytes(mv.id, blob, mapping)
    except Exception as exc:  # noqa: BLE001 - CheckpointError and friends
        raise ModelMismatch(f"model {mv.id}: its checkpoint does not load ({exc})") from exc
    diffs = catalogue_differences(session, org=org, loaded=loaded)
    if diffs:
        raise ModelMismatch(f"model {mv.id} was trained on another catalogue: " + "; ".join(diffs))
    return loaded


def activate_model(session: Session, *, org: Organisation, model_id: int) -> ModelVersion:
    """Make a registered version the organisation's active model (hot swap: states of the
    new version are rebuilt lazily, or eagerly by :func:`rebuild_states`) once
    :func:`check_model` has verified it."""
    mv = session.get(ModelVersion, model_id)
    if mv is None or mv.org_id != org.id:
        raise OperationError(f"model {model_id} is not registered in organisation {org.slug!r}")
    check_model(session, org=org, mv=mv)
    org.active_model_id = mv.id
    session.flush()
    return mv


def add_members(session: Session, *, group: Group, learners: Iterable[Learner]) -> None:
    have = set(
        session.scalars(
            select(GroupMembership.learner_id).where(GroupMembership.group_id == group.id)
        )
    )
    for learner in learners:
        if learner.id not in have:
            session.add(GroupMembership(group_id=group.id, learner_id=learner.id))
            have.add(learner.id)
    session.flush()


@torch.no_grad()
def rebuild_states(
    session: Session,
    *,
    org: Organisation,
    model_id: int | None = None,
    batch_size: int = 256,
    progress: Any = None,
) -> int:
    """Eagerly (re)build every learner's state for a model version (default: the active
    one), replaying histories in batches through the model's serving form (one history
    query per batch; one torch thread: batches of small steps gain nothing from more, and on
    a busy machine the extra threads' spin-waits made it several times slower).

    All of it in the caller's one transaction: for a database nobody else writes meanwhile
    (an import, the demo's set-up). On a database that serves, an answer stored during the
    rebuild would be undone by the stale replay: :func:`rebuild_states_live` is for that."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _rebuild_states(
            session, org=org, model_id=model_id, batch_size=batch_size, progress=progress
        )
    finally:
        torch.set_num_threads(threads)


def _rebuild_states(
    session: Session,
    *,
    org: Organisation,
    model_id: int | None,
    batch_size: int,
    progress: Any,
) -> int:
    from .states import concepts_of_items
    from .states import rebuild_states as rebuild

    mid, model = _rebuild_model(session, org, model_id)
    learners = list(session.scalars(select(Learner).where(Learner.org_id == org.id)))
    concepts_of = concepts_of_items(session, org_id=org.id)
    existing = {
        s.learner_id: s
        for s in session.scalars(select(LearnerState).where(LearnerState.model_id == mid))
    }
    done = 0
    for start in range(0, len(learners), batch_size):
        chunk = learners[start : start + batch_size]
        rebuild(
            session,
            model=model,
            learners=chunk,
            update_learners=True,
            keep_after_read=False,
            concepts_of=concepts_of,
            rows={lr.id: existing.get(lr.id) for lr in chunk},  # None: none yet
        )
        session.flush()
        done += len(chunk)
        if progress is not None:
            progress(len(chunk))
    return done


def _rebuild_model(
    session: Session, org: Organisation, model_id: int | None
) -> tuple[int, LoadedModel]:
    """The version a rebuild replays (default: the active one) and its loaded model, loaded
    as the service loads it: with its id mapping (a model loaded without it would replay
    under the wrong ids, and the model cache would then serve it so)."""
    from .service import MODELS, db_scope

    mid = model_id or org.active_model_id
    if mid is None:
        raise OperationError(f"organisation {org.slug!r} has no active model")
    mv = session.get(ModelVersion, mid)
    if mv is None or mv.org_id != org.id:
        raise OperationError(f"model {mid} is not registered in organisation {org.slug!r}")
    load = lambda: (mv.checkpoint, (mv.info or {}).get("mapping"))  # noqa: E731
    return mid, MODELS.get(mid, load, scope=db_scope(session))


#: learners per batch of :func:`rebuild_states_live` (a batch's write holds the database's
#: write lock, on SQLite, for a few milliseconds)
LIVE_BATCH = 64


def rebuild_states_live(
    read_factory: Callable[[], Session],
    write_factory: Callable[[], Session],
    *,
    org_id: int,
    model_id: int | None = None,
    batch_size: int | None = None,
    progress: Any = None,
) -> tuple[int, int]:
    """:func:`rebuild_states` for a database that is serving: returns (states rebuilt,
    learners skipped).

    :func:`rebuild_states` runs in its caller's one transaction, which on SQLite holds the
    database's write lock from its first write to its commit: every answer of every learner
    waited for the whole rebuild (2.4 s for the demo's 900 learners on an idle machine), and
    a client calling it again and again (a fuzzer did) kept other writes waiting past the
    busy timeout (503); on PostgreSQL an answer stored meanwhile was undone in its
    learner's state and answer count by the stale replay.

    Here each batch of ``batch_size`` learners is read and replayed outside any write
    (``read_factory``: a read transaction on SQLite, autocommit on PostgreSQL), then
    written in a short transaction of its own (``write_factory``) that locks the batch's
    learners (in external id order, as answers lock them) and writes a learner's state, and
    corrects its answer count and first-seen time, only where no answer was stored since
    the read. The others are skipped: the answer path keeps the active model's states
    current, and any stale state is rebuilt at its learner's next request."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as rebuild_states
    try:
        return _rebuild_states_live(
            read_factory,
            write_factory,
            org_id=org_id,
            model_id=model_id,
            batch_size=batch_size or LIVE_BATCH,
            progress=progress,
        )
    finally:
        torch.set_num_threads(threads)


def _rebuild_states_live(
    read_factory: Callable[[], Session],
    write_factory: Callable[[], Session],
    *,
    org_id: int,
    model_id: int | None,
    batch_size: int,
    progress: Any,
) -> tuple[int, int]:
    from .states import concepts_of_items
    from .states import rebuild_states as rebuild

    with read_factory() as s:
        org = s.get(Organisation, org_id)
        if org is None:
            raise OperationError(f"organisation {org_id} not found")
        mid, model = _rebuild_model(s, org, model_id)
        ids = list(
            s.scalars(select(Learner.id).where(Learner.org_id == org.id).order_by(Learner.id))
        )
        concepts_of = concepts_of_items(s, org_id=org.id)
    rebuilt = skipped = 0
    failed: Exception | None = None
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        with read_factory() as rs:
            learners = list(rs.scalars(select(Learner).where(Learner.id.in_(chunk))))
            seen = {lr.id: lr.n_answers for lr in learners}
            out = rebuild(
                rs,
                model=model,
                learners=learners,
                update_learners=True,
                keep_after_read=False,
                concepts_of=concepts_of,
            )
            # (the read session never flushes: nothing of this is written here)
            done = {
                lr.id: (
                    row.state,
                    row.evidence,
                    row.n_applied,
                    row.last_timestamp,
                    row.last_event_id,
                    lr.first_seen,
                    lr.n_answers,
                )
                for lr, (_, row) in zip(learners, out, strict=True)
            }
        try:
            n, k = _write_batch(write_factory, mid, done, seen)
        except OperationalError as exc:
            # a lock not granted (SQLite's busy timeout, a PostgreSQL deadlock with another
            # writer): this batch is left for the lazy rebuild, the others go on
            log.warning("rebuilding states: a batch of %d learners not written: %s", len(done), exc)
            failed, n, k = exc, 0, len(done)
        rebuilt, skipped = rebuilt + n, skipped + k
        skipped += len(chunk) - len(done)  # deleted before the batch was read
        if progress is not None:
            progress(len(chunk))
    if failed is not None and not rebuilt:
        raise failed  # nothing could be written: the database is the problem
    return rebuilt, skipped


def _write_batch(
    write_factory: Callable[[], Session],
    model_id: int,
    done: dict[int, tuple[Any, ...]],
    seen: dict[int, int],
) -> tuple[int, int]:
    """One batch of :func:`rebuild_states_live` in a short write transaction: (written,
    skipped). The learners are locked ``FOR NO KEY UPDATE`` in external id order: that
    serialises with answers (``FOR UPDATE``, the same order) but not with inserts that
    reference them (foreign keys take ``FOR KEY SHARE``)."""
    rebuilt = skipped = 0
    with write_factory() as ws, ws.begin():
        locked = {
            lr.id: lr
            for lr in ws.scalars(
                select(Learner)
                .where(Learner.id.in_(list(done)))
                .order_by(Learner.external_id)
                .with_for_update(key_share=True)
            )
        }
        rows = {
            r.learner_id: r
            for r in ws.scalars(
                select(LearnerState).where(
                    LearnerState.model_id == model_id, LearnerState.learner_id.in_(list(done))
                )
            )
        }
        for lid, (blob, evid, n, ts, ev, first, n_answers) in done.items():
            lr = locked.get(lid)
            if lr is None or lr.n_answers != seen[lid]:  # deleted, or answered meanwhile
                skipped += 1
                continue
            row = rows.get(lid)
            if row is None:
                row = LearnerState(learner_id=lid, model_id=model_id, state=blob)
                ws.add(row)
            row.state, row.evidence, row.n_applied = blob, evid, n
            row.last_timestamp, row.last_event_id = ts, ev
            if lr.first_seen != first:
                lr.first_seen = first
            if lr.n_answers != n_answers:
                lr.n_answers = n_answers
            rebuilt += 1
    return rebuilt, skipped


# ---------------------------------------------------------------------- model versions (API)
def model_metrics(info: dict[str, Any] | None) -> dict[str, float | None] | None:
    """The test metrics of the run's ``results.json`` kept with a version (None: it was not
    evaluated); a non-finite metric is None."""
    test = ((info or {}).get("results") or {}).get("test")
    if not isinstance(test, dict):
        return None
    out: dict[str, float | None] = {}
    for k, v in test.items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[k] = float(v) if math.isfinite(v) else None
    return out


def model_versions(
    session: Session, *, org: Organisation, model_id: int | None = None
) -> list[tuple[ModelVersion, int]]:
    """The organisation's versions (or the one ``model_id``), oldest first, each with how
    many learner states were built for it."""
    n = (
        select(LearnerState.model_id, func.count().label("n"))
        .group_by(LearnerState.model_id)
        .subquery()
    )
    q = (
        select(ModelVersion, func.coalesce(n.c.n, 0))
        .outerjoin(n, n.c.model_id == ModelVersion.id)
        .where(ModelVersion.org_id == org.id)
        .order_by(ModelVersion.id)
    )
    if model_id is not None:
        q = q.where(ModelVersion.id == model_id)
    return [(mv, int(k)) for mv, k in session.execute(q).all()]


def model_version(
    session: Session, *, org: Organisation, model_id: int
) -> tuple[ModelVersion, int]:
    """One version of the organisation with its state count; :class:`~tutor.errors.NotFound`
    for an unknown id or another organisation's."""
    rows = model_versions(session, org=org, model_id=model_id)
    if not rows:
        raise NotFound(f"model {model_id!r} not found")
    return rows[0]


def activate_version(
    session: Session, *, org: Organisation, model_id: int
) -> tuple[ModelVersion, int]:
    """:func:`activate_model` for the API, under the organisation lock: an unknown version is
    :class:`~tutor.errors.NotFound`, one that must not serve (:class:`ModelMismatch`) a
    :class:`~tutor.errors.Conflict` naming why. Returns the version as
    :func:`model_version` does."""
    lock_org(session, org)
    model_version(session, org=org, model_id=model_id)
    try:
        activate_model(session, org=org, model_id=model_id)
    except ModelMismatch as exc:
        raise Conflict(str(exc)) from None
    return model_version(session, org=org, model_id=model_id)


def rebuild_version_states(
    *,
    org_id: int,
    model_id: int,
    read_factory: Callable[[], Session],
    write_factory: Callable[[], Session],
) -> tuple[int, int]:
    """:func:`rebuild_states_live` for the API: an unknown version is
    :class:`~tutor.errors.NotFound` (checked in a read session: no write lock is taken to
    find out), a refused rebuild :class:`~tutor.errors.Invalid`."""
    with read_factory() as s:
        org = s.get(Organisation, org_id)
        if org is None:
            raise NotFound(f"organisation {org_id} not found")
        model_version(s, org=org, model_id=model_id)
    try:
        return rebuild_states_live(read_factory, write_factory, org_id=org_id, model_id=model_id)
    except OperationError as exc:
        raise Invalid(str(exc)) from None


# ---------------------------------------------------------------------- organisation settings
#: the recommendation settings an organisation may override (PATCH /v1/organisation/settings)
SETTING_KEYS = (
    "default_policy",
    "target_success",
    "mastery_threshold",
    "mastery_scale",
    "mastery_min_answers",
    "struggle_run",
    "struggle_answers",
    "concept_daily_cap",
    "review_threshold",
    "recent_exclusion",
    "risk_low_mastery",
    "risk_mastery_drop",
    "risk_window_answers",
    "risk_inactive_days",
    "item_flag_min_attempts",
    "item_flag_z",
    "item_flag_min_learners",
    "curve_min_learners",
)
MAX_RECENT_EXCLUSION = 10_000
#: settings that are positive integers / positive numbers (the rest not named here are
#: probabilities strictly between 0 and 1)
INT_SETTINGS = {
    "recent_exclusion",
    "risk_window_answers",
    "item_flag_min_attempts",
    "item_flag_min_learners",
    "curve_min_learners",
    "mastery_min_answers",
    "struggle_run",
    "struggle_answers",
    "concept_daily_cap",
}
#: integer settings where 0 means "off"
ZERO_OK_SETTINGS = {"recent_exclusion", "concept_daily_cap"}
POSITIVE_SETTINGS = {"risk_inactive_days", "item_flag_z"}


def check_setting(key: str, value: Any) -> Any:
    """The value to store for one known setting; :class:`~tutor.errors.Invalid` naming the
    key and the value otherwise."""

    def bad(why: str) -> Invalid:
        return Invalid(f"setting {key!r}: {why}, got {value!r}")

    if key == "default_policy":
        if value not in POLICIES:
            raise bad(f"expected one of {', '.join(POLICIES)}")
        return value
    if key == "mastery_scale":
        if value not in MASTERY_SCALES:
            raise bad(f"expected one of {', '.join(MASTERY_SCALES)}")
        return value
    if key in INT_SETTINGS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("expected an integer")
        low = 0 if key in ZERO_OK_SETTINGS else 1
        if not low <= value <= MAX_RECENT_EXCLUSION:
            raise bad(f"expected {low} <= value <= {MAX_RECENT_EXCLUSION}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad("expected a number")
    if key in POSITIVE_SETTINGS:
        if not (math.isfinite(value) and value > 0):
            raise bad("expected a positive number")
        return float(value)
    if not (math.isfinite(value) and 0 < value < 1):
        raise bad("expected a number strictly between 0 and 1")
    return float(value)


def update_settings(session: Session, *, org: Organisation, changes: dict[str, Any]) -> None:
    """Apply setting overrides under the organisation lock (``None`` removes one: the
    service default applies again). Unknown keys and bad values are
    :class:`~tutor.errors.Invalid` naming the key; nothing changes then."""
    lock_org(session, org)
    unknown = [k for k in changes if k not in SETTING_KEYS]
    if unknown:
        raise Invalid(f"unknown setting(s) {listed(unknown)}; expected {', '.join(SETTING_KEYS)}")
    new = dict(org.settings or {})
    for k, v in changes.items():
        if v is None:
            new.pop(k, None)
        else:
            new[k] = check_setting(k, v)
    org.settings = new  # a new dict: the JSON column sees the change
    session.flush()


def effective_settings(org: Organisation, settings: Settings) -> dict[str, Any]:
    """Every overridable setting's value in effect: the organisation's override, else the
    service default."""
    own = org.settings or {}
    return {k: own.get(k, getattr(settings, k)) for k in SETTING_KEYS}
