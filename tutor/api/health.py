"""Liveness and readiness probes (no key needed)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import func, select, text

from ..db import ModelVersion, Organisation
from ..service import MODELS, db_scope

router = APIRouter(tags=["health"])


@router.get("/health")
def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/ready")
def ready(request: Request) -> JSONResponse:
    """Readiness: the database answers and every organisation's active model loads."""
    checks: dict[str, str] = {}
    ok = True
    try:
        with request.app.state.read_sessionmaker() as session:
            session.execute(text("SELECT 1"))
            checks["database"] = "ok"
            active = (
                session.execute(
                    select(Organisation.active_model_id).where(
                        Organisation.active_model_id.is_not(None)
                    )
                )
                .scalars()
                .all()
            )
            if not active:
                ok = False
                checks["model"] = "no active model in any organisation"
            for mid in active:

                def load(mid: int = mid) -> bytes:
                    return session.scalar(
                        select(ModelVersion.checkpoint).where(ModelVersion.id == mid)
                    )

                MODELS.get(mid, load, scope=db_scope(session))
            if active:
                checks["model"] = f"{len(active)} active model(s) loaded"
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
