"""answers' event ids unique per learner, not per organisation

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 12:00:00

The idempotency key of an answer becomes (learner, event id): a key of one learner can
neither claim event ids that another learner's client will use nor learn, from a conflict,
what another learner answered. Every existing row stays valid (unique per organisation
implies unique per learner).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_interactions_org_id"), type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_interactions_learner_id"), ["learner_id", "event_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_interactions_learner_id"), type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_interactions_org_id"), ["org_id", "event_id"]
        )
