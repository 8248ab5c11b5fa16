"""The service's errors: :class:`ServiceError` and its subclasses, each with the HTTP status
the API answers it with (404 / 409 / 413 / 422). The domain modules raise them; nothing here
knows about HTTP beyond the number."""

from __future__ import annotations


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
