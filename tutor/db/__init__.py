"""Database: SQLAlchemy 2.0 models, engine and sessions (SQLite or PostgreSQL)."""

from .models import (
    ApiKey,
    ApiKeyGroup,
    Base,
    Concept,
    Group,
    GroupMembership,
    Interaction,
    Item,
    ItemConcept,
    Learner,
    LearnerState,
    ModelVersion,
    Organisation,
    PrerequisiteEdge,
    XAPIStatement,
)
from .session import create_db_engine, db_scope, make_sessionmaker, session_scope

__all__ = [
    "ApiKey",
    "ApiKeyGroup",
    "Base",
    "Concept",
    "Group",
    "GroupMembership",
    "Interaction",
    "Item",
    "ItemConcept",
    "Learner",
    "LearnerState",
    "ModelVersion",
    "Organisation",
    "PrerequisiteEdge",
    "XAPIStatement",
    "create_db_engine",
    "db_scope",
    "make_sessionmaker",
    "session_scope",
]
