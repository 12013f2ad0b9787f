"""Liveness and readiness (no authentication)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.api.deps import get_services
from app.container import Services
from app.schemas import HealthOut, ReadyOut

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> HealthOut:
    """The process is up."""
    return HealthOut(status="ok")


def _check(fn) -> str:
    try:
        fn()
    except Exception as exc:  # any failure means "not ready"; report it rather than raise
        return f"error: {type(exc).__name__}: {str(exc)[:300]}"
    return "ok"


@router.get("/readyz", responses={503: {"model": ReadyOut, "description": "A dependency is unreachable."}})
def readyz(services: Annotated[Services, Depends(get_services)]) -> JSONResponse:
    """The database, the object store and the broker are reachable (503 with the failing checks otherwise)."""

    def database() -> None:
        with services.session_factory() as db:
            db.execute(text("SELECT 1"))

    checks = {
        "database": _check(database),
        "object_store": _check(services.object_store.ping),
        "broker": _check(services.queue.ping),
    }
    ready = all(v == "ok" for v in checks.values())
    body = ReadyOut(status="ready" if ready else "not_ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
