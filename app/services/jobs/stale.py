"""Jobs whose worker stopped reporting go back to a queue, a bounded number of times.

A worker that dies mid-job (kill -9, OOM, a lost machine) leaves its job ``training`` or ``evaluating`` with a
heartbeat that no longer moves; with the embedded SQLite broker its message may be gone too. ``reap_stale_jobs``
finds jobs silent for longer than ``settings.job_stale_after_seconds`` and

* ``training``: back to ``queued`` and re-enqueued (the next claim counts an attempt); ``failed`` once
  ``settings.task_max_attempts`` attempts were used;
* ``evaluating``: re-enqueued for evaluation, counting an attempt (evaluation is idempotent); ``failed`` once the
  attempts are used up;
* ``queued`` for longer than that (its message was lost, or the enqueue after commit failed): re-enqueued; a
  duplicate message is harmless, since the claim is conditional.

Every change is a conditional UPDATE on the state and heartbeat it saw, so concurrent reapers do not collide.
``hra jobs reap`` runs one pass; each worker runs it periodically (``workers.reaper``).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from app.container import Services
from app.services.jobs.states import check_transition
from app.services.jobs.transitions import last_seen_column, silent_for_s, stale_cutoff, transition
from app.services.queue import QueueUnavailable, TaskQueue
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

    def any(self) -> bool:
        return any((self.requeued_training, self.requeued_evaluation, self.resent_queued, self.failed))


def stale_jobs(db: Session, cutoff: datetime) -> list[AdaptationJob]:
    """Active jobs last seen before ``cutoff``, oldest first."""
    return list(
        db.scalars(
            select(AdaptationJob)
            .where(
                AdaptationJob.state.in_([JobState.queued, JobState.training, JobState.evaluating]),
                last_seen_column() < cutoff,
            )
            .order_by(AdaptationJob.created_at)
        )
    )


def _still_as_seen(job: AdaptationJob):
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


def requeue_stale(db: Session, job: AdaptationJob, now: datetime, max_attempts: int) -> str | None:
    """Hand one silent job back to its queue (or fail it): ``"failed"``, ``"training"``, ``"evaluation"`` or
    ``"queued"`` (what to re-send), or ``None`` when the job changed since ``job`` was read. Flushes."""
    silent = silent_for_s(job, now)
    if job.state is not JobState.queued and job.attempts >= max_attempts:
        reason = (
            f"gave up after {job.attempts} attempts: the worker stopped reporting while {job.state.value} "
            f"(no heartbeat for {silent:.0f} s)"
        )
        moved = transition(db, job.id, {job.state}, JobState.failed, at_attempt=job.attempts, error=reason)
        return "failed" if moved else None
    note = f"{job.state.value} job silent for {silent:.0f} s; re-queued at {now.isoformat(timespec='seconds')}"
    values: dict = {"heartbeat_at": now, "updated_at": now}
    if job.state is JobState.training:
        check_transition(JobState.training, JobState.queued)
        values.update(state=JobState.queued, error=f"worker stopped: {note}")
    elif job.state is JobState.evaluating:
        values.update(attempts=job.attempts + 1, error=f"worker stopped: {note}")
    result = db.execute(
        update(AdaptationJob).where(_still_as_seen(job)).values(**values).execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    db.flush()
    return {JobState.training: "training", JobState.evaluating: "evaluation"}.get(job.state, "queued")


def _resend(queue: TaskQueue, job_id: uuid.UUID, what: str, report: ReapReport) -> None:
    if what == "evaluation":
        queue.enqueue_evaluation(job_id)
        report.requeued_evaluation.append(job_id)
    elif what == "training":
        queue.enqueue_training(job_id)
        report.requeued_training.append(job_id)
    elif what == "queued":
        queue.enqueue_training(job_id)
        report.resent_queued.append(job_id)
    else:
        report.failed.append(job_id)


def reap_stale_jobs(services: Services, now: datetime | None = None) -> ReapReport:
    """One pass: each silent job in its own transaction, committed before its task is re-sent."""
    settings = services.settings
    now = now or utcnow()
    report = ReapReport()
    with services.session_factory() as db:
        stale = stale_jobs(db, stale_cutoff(now, settings.job_stale_after_seconds))
    for job in stale:
        with services.session_factory() as db:
            what = requeue_stale(db, job, now, settings.task_max_attempts)
            if what is None:
                db.rollback()
                continue
            db.commit()
        try:
            _resend(services.queue, job.id, what, report)
        except QueueUnavailable as exc:
            logger.warning("reaper: broker unavailable, will retry: %s", exc)
            break
    if report.any():
        logger.info("reaper: %s", report.summary())
    return report
