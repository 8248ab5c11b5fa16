"""The service's errors: :class:`ServiceError` and its subclasses, each with the HTTP status
the API answers it with (404 / 409 / 413 / 422). The domain modules raise them; nothing here
knows about HTTP beyond the number."""

from __future__ import annotations

from collections.abc import Sequence

#: ids an error message lists at most (the rest are counted): a request with thousands of
#: unknown ids gets a short answer, not one that repeats its whole body
LISTED = 10


def listed(ids: Sequence[str], limit: int = LISTED) -> str:
    """``ids`` for an error message: the first ``limit``, quoted, then how many more."""
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


class ServiceError(Exception):
    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class Invalid(ServiceError):
    status = 422


class TooLarge(ServiceError):
    status = 413
