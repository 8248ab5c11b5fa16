"""The HTTP API (FastAPI): ``/v1`` routes, xAPI statements, health and readiness.

:func:`create_app` is loaded on first use: ``tutor serve``'s supervisor process imports only
:mod:`tutor.api.server` (the standard library and uvicorn), not the application with its
models (torch, FastAPI, SQLAlchemy: about 290 MB of memory it would hold for nothing)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
