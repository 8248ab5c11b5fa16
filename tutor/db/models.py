"""The service's tables. Every row belongs to one organisation, directly or through its parent.

Alembic owns the schema (``tutor/db/migrations/``); a test checks that autogenerate finds no
difference between these models and the migrations.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# BIGINT keys on PostgreSQL, INTEGER (rowid alias, autoincrementing) on SQLite
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Organisation(Base):
    __tablename__ = "organisations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    #: per-organisation overrides of the recommendation settings (policy, target_success, ...)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    active_model_id: Mapped[int | None] = mapped_column(
        ForeignKey("models.id", use_alter=True, ondelete="SET NULL")
    )
    #: bumped whenever items, concepts or prerequisites change (invalidates caches)
    catalogue_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def bump_catalogue(self) -> None:
        """Mark the catalogue changed: an atomic SQL increment at the next flush, so that
        concurrent changes never collapse into one version."""
        self.catalogue_version = Organisation.catalogue_version + 1


class Group(Base):
    __tablename__ = "groups"
    __table_args__ = (UniqueConstraint("org_id", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Learner(Base):
    __tablename__ = "learners"
    __table_args__ = (UniqueConstraint("org_id", "external_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200), default="")
    #: time of the learner's first answer: models measure time in days since it
    first_seen: Mapped[datetime | None]
    #: answers stored; a learner state that folded fewer is stale and gets rebuilt
    n_answers: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class GroupMembership(Base):
    __tablename__ = "group_memberships"

    group_id: Mapped[int] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    learner_id: Mapped[int] = mapped_column(
        ForeignKey("learners.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Concept(Base):
    __tablename__ = "concepts"
    __table_args__ = (UniqueConstraint("org_id", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(500), default="")
    #: the organisation's teaching level (e.g. the school grade where it is taught): lower is
    #: taught earlier; the curriculum designer orders by it where given (tutor.recommend)
    level: Mapped[float | None] = mapped_column(Float)


class PrerequisiteEdge(Base):
    """``prerequisite_id`` must be mastered before ``concept_id`` (given by the organisation)."""

    __tablename__ = "prerequisite_edges"

    org_id: Mapped[int] = mapped_column(
        ForeignKey("organisations.id", ondelete="CASCADE"), index=True
    )
    prerequisite_id: Mapped[int] = mapped_column(
        ForeignKey("concepts.id", ondelete="CASCADE"), primary_key=True
    )
    concept_id: Mapped[int] = mapped_column(
        ForeignKey("concepts.id", ondelete="CASCADE"), primary_key=True
    )
    weight: Mapped[float] = mapped_column(Float, default=1.0)


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("org_id", "external_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(200))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=True)

    concepts: Mapped[list[Concept]] = relationship(secondary="item_concepts", lazy="selectin")


class ItemConcept(Base):
    __tablename__ = "item_concepts"

    item_id: Mapped[int] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE"), primary_key=True
    )
    concept_id: Mapped[int] = mapped_column(
        ForeignKey("concepts.id", ondelete="CASCADE"), primary_key=True, index=True
    )


#: the source of answers imported without a clock (:data:`tutor.importer.SOURCE_UNTIMED`)
UNTIMED = "import-untimed"


class Interaction(Base):
    """One answer. ``(learner_id, event_id)`` is the client's idempotency key: an event id is
    unique per learner, so that no key can claim (or probe) another learner's event ids."""

    __tablename__ = "interactions"
    __table_args__ = (
        UniqueConstraint("learner_id", "event_id"),
        Index("ix_interactions_learner_order", "learner_id", "timestamp", "event_id"),
        # each learner's latest answer with a real time (the analytics' last activity): a
        # partial index, so that learners imported without a clock cost nothing to skip
        Index(
            "ix_interactions_learner_timed",
            "learner_id",
            "timestamp",
            sqlite_where=text(f"source <> '{UNTIMED}'"),
            postgresql_where=text(f"source <> '{UNTIMED}'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    learner_id: Mapped[int] = mapped_column(ForeignKey("learners.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    event_id: Mapped[str] = mapped_column(String(200))
    correct: Mapped[int] = mapped_column(SmallInteger)
    timestamp: Mapped[datetime]
    elapsed_ms: Mapped[int | None] = mapped_column(BigInteger)
    attempt: Mapped[int | None] = mapped_column(SmallInteger)
    source: Mapped[str] = mapped_column(String(40), default="api")
    #: the response returned when the answer was applied, replayed for a repeated event id
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    """A registered checkpoint. The checkpoint bytes live in the database so that every API
    worker (and every machine) loads the same model without a shared file system."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(40))
    label: Mapped[str] = mapped_column(String(200), default="")
    sha256: Mapped[str] = mapped_column(String(64))
    checkpoint: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    vocab_fingerprint: Mapped[str] = mapped_column(String(32))
    info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LearnerState(Base):
    """A learner's incremental model state for one model version (serialised tensors)."""

    __tablename__ = "learner_states"

    learner_id: Mapped[int] = mapped_column(
        ForeignKey("learners.id", ondelete="CASCADE"), primary_key=True
    )
    model_id: Mapped[int] = mapped_column(
        ForeignKey("models.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    state: Mapped[bytes] = mapped_column(LargeBinary)
    #: answers folded into the state, and the (timestamp, event id) of the last one
    n_applied: Mapped[int] = mapped_column(Integer, default=0)
    last_timestamp: Mapped[datetime | None]
    last_event_id: Mapped[str | None] = mapped_column(String(200))
    #: the learner's own evidence per concept (tutor.evidence): {concept external id:
    #: [answers, correct, run, evidence mastery, day, answers that day]}; null: not built yet
    #: (rows from before migration 0002: rebuilt on their next read)
    evidence: Mapped[dict[str, Any] | None] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    learner_id: Mapped[int | None] = mapped_column(ForeignKey("learners.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]

    groups: Mapped[list[Group]] = relationship(secondary="api_key_groups", lazy="selectin")


class ApiKeyGroup(Base):
    """The groups a teacher key may see."""

    __tablename__ = "api_key_groups"

    key_id: Mapped[int] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    group_id: Mapped[int] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )


class XAPIStatement(Base):
    """An xAPI statement as received (xAPI 1.0.3 §2.2: the LRS keeps statements immutable)."""

    __tablename__ = "xapi_statements"
    __table_args__ = (UniqueConstraint("org_id", "statement_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    statement_id: Mapped[str] = mapped_column(String(36))
    statement: Mapped[dict[str, Any]] = mapped_column(JSON)
    learner_id: Mapped[int | None] = mapped_column(
        ForeignKey("learners.id", ondelete="SET NULL"), index=True
    )
    interaction_id: Mapped[int | None] = mapped_column(
        ForeignKey("interactions.id", ondelete="SET NULL")
    )
    verb: Mapped[str] = mapped_column(Text)
    stored: Mapped[datetime] = mapped_column(default=utcnow, index=True)
