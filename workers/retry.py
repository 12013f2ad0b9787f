"""Transient errors (database or object store unreachable): a run is retried in place, with backoff, for up to
``settings.transient_retry_window_seconds`` (10 min by default), and its job's heartbeat is kept alive meanwhile.

Retrying in the task (rather than re-publishing it with a countdown) keeps the job's attempt: the run records the
attempt it claimed in a ``Held``; the next try resumes that attempt (``jobs.claim_training(resume_attempt=...)``;
an evaluation re-reads its plan at the same attempt) instead of counting a new one, and while it waits the job
keeps beating, so the reaper does not take it over. The backoff doubles from ``FIRST_BACKOFF_S`` to
``MAX_BACKOFF_S``. The window runs from the first error of an outage; an error that comes more than a window
after the previous one (the run went on working in between) starts a new outage.

Past the window the job fails with the reason (fenced by the held attempt). A run that never claimed its job
(the database was down from the start) leaves it to the reaper, which re-sends a silent job.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from app.container import Services
from app.services import jobs
from storage.db import session_scope
from storage.models import JobState
from workers.progress import TRANSIENT_ERRORS, Outcome, fail_job, keep_alive_interval_s

logger = logging.getLogger(__name__)

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0


@dataclass
class Held:
    """The job state and attempt a delivery's run owns (set by the run once it has claimed the job)."""

    state: JobState | None = None
    attempt: int | None = None

    def hold(self, state: JobState, attempt: int) -> None:
        self.state, self.attempt = state, attempt

    def resume_attempt(self, state: JobState) -> int | None:
        """The attempt to resume if the run stopped while holding the job in ``state``."""
        return self.attempt if self.state is state else None


def backoff_s(failures: int) -> float:
    """The wait after the ``failures``-th error in a row (1-based): 1, 2, 4, ... 30 s."""
    return min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** max(0, failures - 1))


def _keep_holding(services: Services, job_id: uuid.UUID, held: Held, seconds: float) -> bool:
    """Wait ``seconds``, heartbeating the held job (if any); ``False`` once the job was cancelled or taken over."""
    deadline = time.monotonic() + seconds
    interval = keep_alive_interval_s(services.settings.job_stale_after_seconds)
    while True:
        if held.state is not None and held.attempt is not None:
            try:
                with session_scope(services.session_factory) as db:
                    if not jobs.heartbeat(db, job_id, held.state, held.attempt):
                        return False
            except TRANSIENT_ERRORS:  # the database is the one down: nothing to beat on
                pass
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        time.sleep(min(interval, remaining))


def _give_up(services: Services, job_id: uuid.UUID, held: Held, failures: int, outage_s: float,
             exc: BaseException) -> Outcome:
    reason = (
        f"gave up after {failures} tries over {outage_s:.0f} s (transient_retry_window_seconds="
        f"{services.settings.transient_retry_window_seconds:g}): {type(exc).__name__}: {exc}"
    )
    if held.attempt is None:
        logger.error("job %s: %s; never claimed: left to the reaper", job_id, reason)
        return Outcome("deferred", reason)
    try:
        fail_job(services, job_id, reason, attempts=held.attempt)
    except TRANSIENT_ERRORS:
        logger.exception("job %s: could not record the failure (the reaper will take the job over)", job_id)
    return Outcome("failed", reason)


def run_with_retries(services: Services, job_id: uuid.UUID, run: Callable[[Held], Outcome]) -> Outcome:
    """``run(held)`` until it returns; transient errors are retried as the module docstring says."""
    held = Held()
    window = services.settings.transient_retry_window_seconds
    first_error = last_error = None
    failures = 0
    while True:
        try:
            return run(held)
        except TRANSIENT_ERRORS as exc:
            now = time.monotonic()
            if first_error is None or last_error is None or now - last_error > window:
                first_error, failures = now, 0
            failures += 1
            last_error = now
            outage_s = now - first_error
            if outage_s >= window:
                return _give_up(services, job_id, held, failures, outage_s, exc)
            delay = min(backoff_s(failures), window - outage_s)
            logger.warning(
                "job %s: transient error (try %d, %.0f s into the outage), retrying in %.1f s: %s: %s",
                job_id, failures, outage_s, delay, type(exc).__name__, exc,
            )
            if not _keep_holding(services, job_id, held, delay):
                return Outcome("noop", "the job was cancelled or taken over during the outage")
