"""Time as the service keeps it: aware UTC datetimes, now (:func:`utcnow`) and read back from
the database (:func:`as_utc`: SQLite returns them naive)."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(dt: datetime | None) -> datetime | None:
    """Datetimes read back from SQLite are naive; all of ours are UTC."""
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def utcnow() -> datetime:
    """Now, as an aware UTC datetime."""
    return datetime.now(UTC)
