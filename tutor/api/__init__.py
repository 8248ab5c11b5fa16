"""The HTTP API (FastAPI): ``/v1`` routes, xAPI statements, health and readiness."""

from .app import create_app

__all__ = ["create_app"]
