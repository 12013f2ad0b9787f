"""Housekeeping: jobs whose worker stopped reporting go back to a queue, a bounded number of times.

A worker that dies mid-job (kill -9, OOM, a lost machine) leaves its job ``training`` or ``evaluating`` with a
heartbeat that no longer moves; with the embedded SQLite broker its message may be gone too. ``reap_stale_jobs``
finds jobs whose heartbeat is older than ``settings.job_stale_after_seconds`` and

* ``training``: back to ``queued`` and re-enqueued (the next claim counts an attempt); ``failed`` once
  ``settings.task_max_attempts`` attempts were used;
* ``evaluating``: re-enqueued for evaluation, counting an attempt (evaluation is idempotent); ``failed`` once the
  attempts are used up;
* ``queued`` for longer than that (its message was lost, or the enqueue after commit failed): re-enqueued; a
  duplicate message is harmless, since the claim is conditional.

Every change is a conditional UPDATE on the state and heartbeat it saw, so concurrent reapers do not collide.
Run it with ``hra jobs reap`` or let the workers run it periodically (``start_reaper_thread``).
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, func, select, update

from app.container import Services
from app.services import jobs as job_service
from app.services.job_states import check_transition
from app.services.queue import QueueUnavailable
from storage.models import AdaptationJob, JobState, utcnow

logger = logging.getLogger(__name__)


@dataclass
class ReapReport:
    requeued_training: list[uuid.UUID] = field(default_factory=list)
    requeued_evaluation: list[uuid.UUID] = field(default_factory=list)
    resent_queued: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"requeued for training: {len(self.requeued_training)}, requeued for evaluation: "
            f"{len(self.requeued_evaluation)}, queued jobs re-sent: {len(self.resent_queued)}, "
            f"failed: {len(self.failed)}"
        )


def _last_seen():
    return func.coalesce(AdaptationJob.heartbeat_at, AdaptationJob.started_at, AdaptationJob.created_at)


def reap_stale_jobs(services: Services, now: datetime | None = None) -> ReapReport:
    settings = services.settings
    now = now or utcnow()
    cutoff = now - timedelta(seconds=settings.job_stale_after_seconds)
    report = ReapReport()
    with services.session_factory() as db:
        stale = list(
            db.scalars(
                select(AdaptationJob)
                .where(
                    AdaptationJob.state.in_([JobState.queued, JobState.training, JobState.evaluating]),
                    _last_seen() < cutoff,
                )
                .order_by(AdaptationJob.created_at)
            )
        )
    for job in stale:
        try:
            _reap_one(services, job, now, report)
        except QueueUnavailable as exc:
            logger.warning("reaper: broker unavailable, will retry: %s", exc)
            break
    if any((report.requeued_training, report.requeued_evaluation, report.resent_queued, report.failed)):
        logger.info("reaper: %s", report.summary())
    return report


def _seen_matches(job: AdaptationJob):
    """The WHERE clause "the job is still exactly as the reaper saw it"."""
    if job.heartbeat_at is None:
        seen = AdaptationJob.heartbeat_at.is_(None)
    else:
        seen = AdaptationJob.heartbeat_at == job.heartbeat_at
    return and_(
        AdaptationJob.id == job.id,
        AdaptationJob.state == job.state,
        AdaptationJob.attempts == job.attempts,
        seen,
    )


def _reap_one(services: Services, job: AdaptationJob, now: datetime, report: ReapReport) -> None:
    settings = services.settings
    silent_for = (now - (job.heartbeat_at or job.started_at or job.created_at)).total_seconds()
    with services.session_factory() as db:
        if job.state is not JobState.queued and job.attempts >= settings.task_max_attempts:
            reason = (
                f"gave up after {job.attempts} attempts: the worker stopped reporting while {job.state.value} "
                f"(no heartbeat for {silent_for:.0f} s)"
            )
            if job_service.transition(db, job.id, {job.state}, JobState.failed, at_attempt=job.attempts, error=reason):
                db.commit()
                report.failed.append(job.id)
            return
        note = f"{job.state.value} job silent for {silent_for:.0f} s; re-queued at {now.isoformat(timespec='seconds')}"
        values: dict = {"heartbeat_at": now, "updated_at": now}
        if job.state is JobState.training:
            check_transition(JobState.training, JobState.queued)
            values.update(state=JobState.queued, error=f"worker stopped: {note}")
        elif job.state is JobState.evaluating:
            values.update(attempts=job.attempts + 1, error=f"worker stopped: {note}")
        result = db.execute(
            update(AdaptationJob)
            .where(_seen_matches(job))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            db.rollback()
            return
        db.commit()
    if job.state is JobState.evaluating:
        services.queue.enqueue_evaluation(job.id)
        report.requeued_evaluation.append(job.id)
    elif job.state is JobState.training:
        services.queue.enqueue_training(job.id)
        report.requeued_training.append(job.id)
    else:
        services.queue.enqueue_training(job.id)
        report.resent_queued.append(job.id)


def reap_interval_s(stale_after_s: float) -> float:
    return min(60.0, max(1.0, stale_after_s / 4))


def start_reaper_thread(services: Services, stop: threading.Event | None = None) -> threading.Thread:
    """A daemon thread that reaps every ``reap_interval_s`` until ``stop`` is set."""
    stop = stop or threading.Event()
    interval = reap_interval_s(services.settings.job_stale_after_seconds)

    def loop() -> None:
        while not stop.wait(interval):
            try:
                reap_stale_jobs(services)
            except Exception:  # keep reaping after a database or broker outage
                logger.exception("reaper: pass failed")

    thread = threading.Thread(target=loop, name="hra-reaper", daemon=True)
    thread.start()
    return thread
