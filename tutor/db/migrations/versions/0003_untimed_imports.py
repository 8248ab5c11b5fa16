"""imported answers with a synthetic time get the source ``import-untimed``

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 11:10:00

A data migration, no schema change. ``tutor import`` gives the answers of a learner without
any timestamp a synthetic clock (2000-01-01T00:00:00Z plus ``seq`` seconds, where ``seq`` is
the last 10 digits of the event id ``import:<learner>:<seq>``). From now on such answers carry
the source ``import-untimed`` so that the analytics do not read that clock as dates; this
marks the ones imported before. An answer is marked only where its time is exactly the
synthetic one of its event id (imported answers with real times in 2000 are left alone).
Downgrade puts ``import`` back.
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
SEQ_WIDTH = 10
interactions = sa.table(
    "interactions",
    sa.column("id", sa.BigInteger),
    sa.column("event_id", sa.String),
    sa.column("timestamp", sa.DateTime(timezone=True)),
    sa.column("source", sa.String),
)


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(interactions.c.id, interactions.c.event_id, interactions.c.timestamp).where(
            interactions.c.source == "import",
            interactions.c.timestamp >= EPOCH,
            interactions.c.timestamp < EPOCH + timedelta(days=366),
        )
    ).all()
    marked = []
    for id_, event_id, ts in rows:
        seq = event_id[-SEQ_WIDTH:]
        if seq.isdigit() and _utc(ts) == EPOCH + timedelta(seconds=int(seq)):
            marked.append(id_)
    for start in range(0, len(marked), 500):
        conn.execute(
            sa.update(interactions)
            .where(interactions.c.id.in_(marked[start : start + 500]))
            .values(source="import-untimed")
        )


def downgrade() -> None:
    op.get_bind().execute(
        sa.update(interactions)
        .where(interactions.c.source == "import-untimed")
        .values(source="import")
    )
