"""What every analytics view reads first: the request's context (the active model, the
catalogue and the model's view of it), the organisation's item index (items, their model
indexes and concepts), a group's members (answer counts, first and last answers) with the
group-result cache keyed on them, and the ordered answer fetch behind the replays."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Float, cast, func, literal_column, select
from sqlalchemy.orm import Session

from .. import recommend
from ..db import Group, GroupMembership, Interaction, Item, ItemConcept, Learner, Organisation
from ..errors import listed
from ..runtime import LoadedModel
from ..service import Invalid, NotFound, active_model, as_utc, db_scope
from .cache import _GROUP, _ITEMS


@dataclass
class _Context:
    model: LoadedModel
    cat: recommend.Catalogue
    view: dict[str, Any]
    scope: str

    def model_ref(self) -> dict[str, Any]:
        m = self.model
        return {"id": m.model_id, "name": m.name, "forgets": m.forgets}

    def concept_order(self) -> list[int]:
        """Positions of the organisation's concepts the model knows, in curriculum order."""
        cidx = self.view["concept_idx"]
        return [int(p) for p in self.view["curriculum_pos"] if cidx[p] > 0]

    def concept_refs(self, positions: list[int] | np.ndarray) -> list[dict[str, str]]:
        return [
            {"concept_id": self.cat.concept_ext[p], "name": self.cat.name(p)} for p in positions
        ]


def _context(session: Session, org: Organisation) -> _Context:
    model = active_model(session, org=org)
    if model is None:
        raise NotFound("no active model for this organisation")
    cat = recommend.catalogue(session, org)
    return _Context(model, cat, recommend.model_view(cat, model), db_scope(session))


def _concept_positions(ctx: _Context, ids: list[str]) -> list[int]:
    """Catalogue positions of concept ids (each once, in the given order); :class:`Invalid`
    names the unknown ones."""
    pos = {c: k for k, c in enumerate(ctx.cat.concept_ext)}
    unknown = [c for c in ids if c not in pos]
    if unknown:
        raise Invalid(f"unknown concept(s): {listed(unknown)}")
    return [pos[c] for c in dict.fromkeys(ids)]


def _group_ref(group: Group, n: int) -> dict[str, Any]:
    return {"id": group.external_id, "name": group.name, "learners": n}


# ---------------------------------------------------------------------- items
@dataclass
class _ItemIndex:
    """Every item of the organisation (active or not), by database id."""

    db_ids: np.ndarray  # [I] sorted
    ext: list[str]
    model_idx: np.ndarray  # [I] model item index, 0 = unknown to the model
    link_start: np.ndarray  # [I + 1] CSR offsets into link_concept
    link_concept: np.ndarray  # concept positions (in the catalogue's concept order)

    def positions(self, item_db: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.db_ids, item_db)


def _item_index(session: Session, org: Organisation, ctx: _Context) -> _ItemIndex:
    key = (ctx.scope, org.id, ctx.cat.version, ctx.model.model_id)
    hit = _ITEMS.get(key)
    if hit is not None:
        return hit
    rows = session.execute(
        select(Item.id, Item.external_id).where(Item.org_id == org.id).order_by(Item.id)
    ).all()
    db_ids = np.array([r[0] for r in rows], dtype=np.int64)
    ext = [r[1] for r in rows]
    links = np.array(
        session.execute(
            select(ItemConcept.item_id, ItemConcept.concept_id)
            .join(Item, Item.id == ItemConcept.item_id)
            .where(Item.org_id == org.id)
        ).all(),
        dtype=np.int64,
    ).reshape(-1, 2)
    cdb = ctx.cat.concept_db
    ipos = np.searchsorted(db_ids, links[:, 0])
    cpos = np.searchsorted(cdb, links[:, 1])
    ok = (cpos < len(cdb)) & (cdb[np.minimum(cpos, max(len(cdb) - 1, 0))] == links[:, 1])
    ipos, cpos = ipos[ok], cpos[ok]
    order = np.lexsort((cpos, ipos))
    ipos, cpos = ipos[order], cpos[order]
    start = np.zeros(len(db_ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(ipos, minlength=len(db_ids)), out=start[1:])
    idx = _ItemIndex(db_ids, ext, ctx.model.item_idx(ext), start, cpos.astype(np.int64))
    return _ITEMS.put(key, idx)


# ---------------------------------------------------------------------- group members
@dataclass
class _Members:
    ids: np.ndarray  # [L] learner db ids, ordered by external id
    ext: list[str]
    names: list[str]
    n_answers: np.ndarray  # [L]
    first_seen: np.ndarray  # [L] epoch seconds (nan: none)
    #: the last answer with a real time (imported answers of learners without a clock carry
    #: a synthetic one, :data:`tutor.importer.SOURCE_UNTIMED`, and do not count)
    last_answer: list[datetime | None]

    @property
    def fingerprint(self) -> tuple[int, int, str]:
        """Who the members are and how many answers each has (a digest of both arrays): a
        cached result for the group is current exactly when this is unchanged."""
        h = hashlib.blake2b(self.ids.tobytes(), digest_size=16)
        h.update(self.n_answers.astype(np.int64).tobytes())
        return (len(self.ids), int(self.n_answers.sum()), h.hexdigest())

    def label(self, k: int) -> str:
        """What a teacher reads: the display name where the organisation gave one."""
        return self.names[k] or self.ext[k]

    @property
    def latest(self) -> datetime | None:
        """The group's own latest timed answer (its clock, for imported histories)."""
        times = [t for t in self.last_answer if t is not None]
        return max(times) if times else None


def _members(session: Session, group: Group) -> _Members:
    from ..importer import SOURCE_UNTIMED

    # the newest answer with a real time: the (learner, time) index read backwards, stopping
    # at the first answer not imported without a clock
    last = (
        select(Interaction.timestamp)
        .where(
            Interaction.learner_id == Learner.id,
            # a literal, not a bound parameter: the planners match it to the partial index
            # ix_interactions_learner_timed only then
            Interaction.source != literal_column(f"'{SOURCE_UNTIMED}'"),
        )
        .order_by(Interaction.timestamp.desc())
        .limit(1)
        .correlate(Learner)
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            Learner.id,
            Learner.external_id,
            Learner.name,
            Learner.n_answers,
            Learner.first_seen,
            last,
        )
        .join(GroupMembership, GroupMembership.learner_id == Learner.id)
        .where(GroupMembership.group_id == group.id)
        .order_by(Learner.external_id)
    ).all()
    return _Members(
        ids=np.array([r[0] for r in rows], dtype=np.int64),
        ext=[r[1] for r in rows],
        names=[r[2] or "" for r in rows],
        n_answers=np.array([r[3] or 0 for r in rows], dtype=np.int64),
        first_seen=np.array(
            [as_utc(r[4]).timestamp() if r[4] is not None else np.nan for r in rows],
            dtype=np.float64,
        ),
        last_answer=[as_utc(r[5]) if isinstance(r[5], datetime) else _parse(r[5]) for r in rows],
    )


def _parse(v: Any) -> datetime | None:
    """A timestamp a scalar subquery returned as text (SQLite without type information)."""
    if v is None:
        return None
    return as_utc(datetime.fromisoformat(str(v)))


def _current(key: tuple, members: _Members) -> Any:
    """A group's cached result if it was computed for these members and answer counts (one
    slot per group and kind: a new answer replaces the entry instead of adding one)."""
    hit = _GROUP.get(key)
    return hit[1] if hit is not None and hit[0] == members.fingerprint else None


def _keep(key: tuple, members: _Members, value: Any) -> Any:
    _GROUP.put(key, (members.fingerprint, value))
    return value


# ---------------------------------------------------------------------- answers
def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _epoch(session: Session, col: Any) -> Any:
    """Seconds since 1970 (UTC) of a timestamp column, computed by the database."""
    if _dialect(session) == "sqlite":
        return (func.julianday(col) - 2440587.5) * 86400.0
    return cast(func.extract("epoch", col), Float)


def _fetch_answers(
    session: Session, *, group_id: int | None = None, learner_ids: np.ndarray | None = None
) -> np.ndarray:
    """``[N, 4]`` float64 (learner id, item id, correct, epoch seconds) in event order per
    learner (learners in id order): one ordered query over the (learner, time) index."""
    cols = (
        Interaction.learner_id,
        Interaction.item_id,
        Interaction.correct,
        _epoch(session, Interaction.timestamp),
    )
    order = (Interaction.learner_id, Interaction.timestamp, Interaction.event_id)
    queries = []
    if group_id is not None:
        queries.append(
            select(*cols)
            .join(GroupMembership, GroupMembership.learner_id == Interaction.learner_id)
            .where(GroupMembership.group_id == int(group_id))
            .order_by(*order)
        )
    else:
        ids = np.sort(np.asarray(learner_ids, dtype=np.int64))
        for s in range(0, len(ids), 500):
            chunk = [int(x) for x in ids[s : s + 500]]
            queries.append(select(*cols).where(Interaction.learner_id.in_(chunk)).order_by(*order))
    parts = [_raw_rows(session, q) for q in queries]
    n = sum(len(p) for p in parts)
    flat = itertools.chain.from_iterable(itertools.chain.from_iterable(parts))
    return np.fromiter(flat, dtype=np.float64, count=4 * n).reshape(n, 4)


def _raw_rows(session: Session, stmt: Any) -> list[tuple]:
    """Rows of a query as the driver's plain tuples, in the session's transaction (no
    per-row result objects: 200,000 rows cost the driver's time only). The statement's
    parameters are integers, rendered inline."""
    conn = session.connection()
    sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    cur = conn.connection.cursor()
    try:
        cur.execute(sql)
        return cur.fetchall()
    finally:
        cur.close()
