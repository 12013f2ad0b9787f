"""Guarded writes of a job row: every change is ``UPDATE ... WHERE id = :id AND state IN :expected ...``.

A write that matched no row means another actor (a client's cancel, a newer attempt, the reaper) got there first;
callers stop and discard what they produced. The conditional UPDATE is what makes concurrent state changes safe on
SQLite and Postgres alike (no read-then-write races). Functions here flush; the caller's boundary commits.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, update
from sqlalchemy.orm import Session

from app.services.jobs.states import check_transition, is_terminal
from storage.models import AdaptationJob, Head, HeadStatus, JobState, utcnow

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 4000


def last_seen_column() -> ColumnElement[datetime]:
    """When the job last showed life, as SQL: its heartbeat, else its start, else its creation."""
    return func.coalesce(AdaptationJob.heartbeat_at, AdaptationJob.started_at, AdaptationJob.created_at)


def last_seen(job: AdaptationJob) -> datetime | None:
    """``last_seen_column`` for a loaded row."""
    return job.heartbeat_at or job.started_at or job.created_at


def silent_for_s(job: AdaptationJob, now: datetime) -> float:
    seen = last_seen(job)
    return float("inf") if seen is None else (now - seen).total_seconds()


def is_stale(job: AdaptationJob, now: datetime, stale_after_s: float) -> bool:
    return silent_for_s(job, now) > stale_after_s


def transition(
    db: Session,
    job_id: uuid.UUID,
    sources: Iterable[JobState],
    target: JobState,
    *,
    at_attempt: int | None = None,
    now: datetime | None = None,
    **values: Any,
) -> bool:
    """Conditionally move a job: ``UPDATE ... WHERE id = :id AND state IN :sources [AND attempts = :at_attempt]``.

    Returns whether the job moved; ``False`` means it was not in ``sources`` (or not at that attempt) any more.
    Ending a job frees the speaker's active slot and rejects its unpromoted candidate head. Flushes, never commits.
    """
    sources = frozenset(sources)
    for source in sources:
        check_transition(source, target)
    now = now or utcnow()
    query = update(AdaptationJob).where(AdaptationJob.id == job_id, AdaptationJob.state.in_(sources))
    if at_attempt is not None:
        query = query.where(AdaptationJob.attempts == at_attempt)
    if is_terminal(target):
        values = {"active_speaker_id": None, "finished_at": now, **values}
    else:
        values = {"active_speaker_id": AdaptationJob.speaker_id, **values}
    result = db.execute(
        query.values(state=target, updated_at=now, **values).execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    if target in (JobState.failed, JobState.cancelled):
        db.execute(
            update(Head)
            .where(Head.job_id == job_id, Head.status == HeadStatus.candidate)
            .values(status=HeadStatus.rejected)
            .execution_options(synchronize_session=False)
        )
    db.flush()
    return True


def refresh(db: Session, job: AdaptationJob) -> AdaptationJob:
    """Re-read a job after a conditional UPDATE (which bypasses the identity map)."""
    db.refresh(job)
    return job


def fail(db: Session, job_id: uuid.UUID, error: str, *, at_attempt: int | None = None) -> bool:
    """An active job -> ``failed`` with ``error`` (fenced by ``at_attempt`` when given); whether it moved."""
    job = db.get(AdaptationJob, job_id)
    if job is None or not job.state.is_active:
        return False
    moved = transition(db, job_id, {job.state}, JobState.failed, at_attempt=at_attempt, error=error[:MAX_ERROR_CHARS])
    if moved:
        logger.warning("job %s failed: %s", job_id, error)
    return moved


def heartbeat(db: Session, job_id: uuid.UUID, state: JobState, attempt: int, **values: Any) -> bool:
    """Record that the run at ``attempt`` of a job in ``state`` is alive (with progress ``values``).

    ``False``: the job was cancelled, deleted, or superseded by a newer attempt; the run must stop.
    """
    now = utcnow()
    result = db.execute(
        update(AdaptationJob)
        .where(AdaptationJob.id == job_id, AdaptationJob.state == state, AdaptationJob.attempts == attempt)
        .values(heartbeat_at=now, updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def stale_cutoff(now: datetime, stale_after_s: float) -> datetime:
    return now - timedelta(seconds=stale_after_s)
