"""GET /v1/jobs/{id}/events: a job's state, step, loss and progress as Server-Sent Events, until it ends.

Authenticated like every ``/v1/`` route, with ``Authorization: Bearer <key>``. Browsers' ``EventSource`` cannot send
that header, and a key in the URL would end up in logs and history, so the web page reads this stream with
``fetch()`` and a ``ReadableStream`` reader; any SSE client that sets headers works (curl -N, httpx).

Events (``text/event-stream``):

    event: job      data: the job, as GET /v1/jobs/{id} returns it; sent at once, then on every change of state,
                    progress, step, loss, error or evaluation (the workers write progress at most once a second)
    event: end      data: the final job; the stream closes after it (the job is promoted, rejected, failed or
                    cancelled)
    event: gone     the job was deleted (its speaker erased); the stream closes
    event: timeout  the stream reached its time limit while the job is still active: reconnect to go on
    : keep-alive    a comment every ``KEEPALIVE_S`` seconds without a change, so that proxies keep it open

The database is read every ``POLL_INTERVAL_S`` in the thread pool with a short session of its own: a stream holds
no connection between reads.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from app import errors
from app.api.deps import DbSession, get_services
from app.api.views import job_out
from app.container import Services
from app.error_handlers import error_responses
from app.security import CurrentTenant
from app.services import jobs as job_service

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

POLL_INTERVAL_S = 0.5
KEEPALIVE_S = 15.0
STREAM_LIMIT_S = 3600.0  # then "timeout": the client reconnects (no stream is held open forever)
RETRY_MS = 2000  # how long an SSE client waits before reconnecting

_TERMINAL = {"promoted", "rejected", "failed", "cancelled"}
_CHANGES = ("state", "progress", "step", "total_steps", "loss", "error", "head_id", "attempts")


def sse(event: str, data: Any, event_id: int | None = None) -> bytes:
    """One Server-Sent Event; ``data`` as one line of JSON."""
    lines = [f"id: {event_id}"] if event_id is not None else []
    lines += [f"event: {event}", f"data: {json.dumps(data, separators=(',', ':'))}"]
    return ("\n".join(lines) + "\n\n").encode()


def _read(services: Services, tenant_id: uuid.UUID, job_id: uuid.UUID) -> dict[str, Any] | None:
    with services.session_factory() as db:
        try:
            job = job_service.get_job(db, tenant_id, job_id)
        except errors.JobNotFound:
            return None
        return job_out(job).model_dump(mode="json")


def _signature(job: dict[str, Any]) -> tuple:
    return (*(job.get(k) for k in _CHANGES), job.get("evaluation") is not None)


async def job_event_stream(
    services: Services, tenant_id: uuid.UUID, first: dict[str, Any], job_id: uuid.UUID
) -> AsyncIterator[bytes]:
    yield f"retry: {RETRY_MS}\n\n".encode()
    job: dict[str, Any] | None = first
    seq, sent, started = 0, None, time.monotonic()
    last_write = started
    while True:
        if job is None:
            yield sse("gone", {"id": str(job_id)}, seq + 1)
            return
        if job["state"] in _TERMINAL:
            yield sse("end", job, seq + 1)
            return
        signature = _signature(job)
        now = time.monotonic()
        if signature != sent:
            seq += 1
            sent, last_write = signature, now
            yield sse("job", job, seq)
        elif now - last_write >= KEEPALIVE_S:
            last_write = now
            yield b": keep-alive\n\n"
        if now - started >= STREAM_LIMIT_S:
            yield sse("timeout", {"id": str(job_id), "state": job["state"]}, seq + 1)
            return
        await asyncio.sleep(POLL_INTERVAL_S)
        job = await run_in_threadpool(_read, services, tenant_id, job_id)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "Server-Sent Events `job` (on every change), then `end` with the final job; see the "
            "route's description.",
        },
        **error_responses(errors.JobNotFound),
    },
)
def job_events(
    job_id: uuid.UUID,
    tenant: CurrentTenant,
    db: DbSession,
    services: Annotated[Services, Depends(get_services)],
) -> StreamingResponse:
    """Follow a job live: its state, progress (0..1), step and loss as Server-Sent Events until it ends.

    `event: job` carries the job as `GET /v1/jobs/{id}` returns it, at once and on every change; `event: end` the
    final job, then the stream closes. Send the key in the `Authorization` header (read the stream with `fetch`,
    not `EventSource`, in a browser). Polling `GET /v1/jobs/{id}` gives the same data."""
    first = job_out(job_service.get_job(db, tenant.id, job_id)).model_dump(mode="json")
    tenant_id = tenant.id
    db.close()  # the stream reads with short sessions of its own; hold no connection while it runs
    return StreamingResponse(
        job_event_stream(services, tenant_id, first, job_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )

