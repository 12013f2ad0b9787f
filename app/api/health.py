"""Liveness and readiness (no authentication).

``/healthz`` answers from the process alone (no dependency is called): cheap enough for any polling rate.
``/readyz`` probes the database, the object store and the broker, and says only which of them is down, by name
and with a code: the reason (host names, driver messages) goes to the log, never to an unauthenticated caller.
Probes are shared: for ``readiness_cache_seconds`` every caller gets the last result, and concurrent callers
wait for one probe rather than each starting their own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.api.deps import get_services
from app.container import Services
from app.schemas import HealthOut, ReadyOut

logger = logging.getLogger(__name__)
router = APIRouter(tags=["health"])

OK = "ok"


@router.get("/healthz")
def healthz() -> HealthOut:
    """The process is up (no dependency is called)."""
    return HealthOut(status="ok")


def _probe(name: str, check: Callable[[], None]) -> str:
    try:
        check()
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready": report which, log why
        logger.warning("readiness: %s unavailable: %s: %s", name, type(exc).__name__, exc)
        return f"{name}_unavailable"
    return OK


class Readiness:
    """The dependencies' state, probed at most once per ``ttl_seconds``."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._lock = threading.Lock()
        self._checks: dict[str, str] | None = None
        self._probed_at = 0.0

    def checks(self) -> dict[str, str]:
        """Each dependency's state: ``"ok"`` or ``"<name>_unavailable"`` (blocking: call from a worker thread)."""
        with self._lock:  # one probe at a time; callers arriving meanwhile take its result
            fresh = time.monotonic() - self._probed_at < self._services.settings.readiness_cache_seconds
            if self._checks is None or not fresh:
                self._checks = self._probe_all()
                self._probed_at = time.monotonic()
            return dict(self._checks)

    def _probe_all(self) -> dict[str, str]:
        services = self._services

        def database() -> None:
            with services.session_factory() as db:
                db.execute(text("SELECT 1"))

        return {
            "database": _probe("database", database),
            "object_store": _probe("object_store", services.object_store.ping),
            "broker": _probe("broker", services.queue.ping),
        }


def get_readiness(request: Request, services: Annotated[Services, Depends(get_services)]) -> Readiness:
    readiness = getattr(request.app.state, "readiness", None)
    if readiness is None:  # the first request creates it; a race only costs one extra probe
        readiness = request.app.state.readiness = Readiness(services)
    return readiness


@router.get("/readyz", responses={503: {"model": ReadyOut, "description": "A dependency is unreachable."}})
def readyz(readiness: Annotated[Readiness, Depends(get_readiness)]) -> JSONResponse:
    """The database, the object store and the broker are reachable (503 naming the ones that are not)."""
    checks = readiness.checks()
    ready = all(state == OK for state in checks.values())
    body = ReadyOut(status="ready" if ready else "not_ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
