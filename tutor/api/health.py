"""Liveness and readiness probes (no key needed)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import func, select, text

from .. import recommend
from ..db import Organisation

router = APIRouter(tags=["health"])


@router.get("/health")
def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/ready")
def ready(request: Request) -> JSONResponse:
    """Readiness: the database answers, and every organisation's active model and its
    catalogue load (:func:`tutor.recommend.warm`)."""
    checks: dict[str, str] = {}
    ok = True
    try:
        with request.app.state.read_sessionmaker() as session:
            session.execute(text("SELECT 1"))
            checks["database"] = "ok"
            # the models (with their id mappings), catalogues and views, as requests use them
            n = recommend.warm(session)
            if not n:
                ok = False
                checks["model"] = "no active model in any organisation"
            else:
                checks["model"] = f"{n} active model(s) loaded"
            checks["organisations"] = str(
                session.scalar(select(func.count()).select_from(Organisation))
            )
    except Exception as exc:  # noqa: BLE001 - report, do not crash the probe
        ok = False
        checks.setdefault("database", f"error: {type(exc).__name__}: {exc}")
        if "database" in checks and checks["database"] == "ok":
            checks["model"] = f"error: {type(exc).__name__}: {exc}"
    return JSONResponse(
        {"status": "ready" if ok else "not ready", "checks": checks}, status_code=200 if ok else 503
    )
