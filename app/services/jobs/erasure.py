"""What erasing an utterance, a head or a speaker does to jobs and heads (lineage).

* ``withdraw_heads_trained_on``: a deleted utterance takes with it every head trained on it, and every head
  warm-started from one of those (its weights started from them): status ``withdrawn``, never served again, never
  a fallback or a rollback target. If the head in service was withdrawn, the speaker falls back to the newest
  earlier version that was in service and is clean (``retired``, ``promoted_at`` newest first), else the base model.
  The speaker's active job is cancelled first: it may have read the utterance already (its training set or its
  evaluation report would keep it).
* ``delete_head``: the row goes (its evaluation and job keep their numbers, with the head reference cleared);
  deleting the version in service falls back the same way. The candidate of a running job is refused (409).
* ``cancel_active_jobs`` and ``delete_jobs_and_heads``: the steps of a speaker's erasure that touch these rows.

Locks in the order the gate's ``runs.decide`` takes them (the job's row, then the speaker's), so that an erasure
racing a promotion waits for it instead of deadlocking; the speaker's row is taken with
``speakers.lock_live_speaker``, which also refuses a speaker being deleted. Functions flush; the caller commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from app import errors
from app.services.jobs.transitions import transition
from app.services.speakers import lock_live_speaker
from storage.models import (
    ACTIVE_JOB_STATES,
    AdaptationJob,
    Evaluation,
    Head,
    HeadStatus,
    JobState,
)


@dataclass(frozen=True)
class Lineage:
    """What an erasure changed: heads withdrawn, jobs cancelled, and what now serves the speaker."""

    withdrawn_head_ids: list[uuid.UUID] = field(default_factory=list)
    cancelled_job_ids: list[uuid.UUID] = field(default_factory=list)
    in_service_head_id: uuid.UUID | None = None  # None: the base model
    fallback_head_id: uuid.UUID | None = None  # the earlier version this change put back in service, if any


def cancel_active_jobs(db: Session, speaker_id: uuid.UUID, reason: str) -> list[uuid.UUID]:
    """Cancel the speaker's active job(s); their workers stop at their next check and keep nothing. Flushes."""
    ids = db.scalars(
        select(AdaptationJob.id).where(AdaptationJob.speaker_id == speaker_id, AdaptationJob.state.in_(ACTIVE_JOB_STATES))
    ).all()
    return [job_id for job_id in ids if transition(db, job_id, ACTIVE_JOB_STATES, JobState.cancelled, error=reason)]


def _lock(db: Session, speaker_id: uuid.UUID, reason: str) -> list[uuid.UUID]:
    """Cancel the active job (its row lock first, as ``decide`` does), lock the live speaker, and cancel again: a
    job created in between committed before the lock was granted (``create_job`` takes the same lock)."""
    cancelled = cancel_active_jobs(db, speaker_id, reason)
    lock_live_speaker(db, speaker_id)
    return cancelled + cancel_active_jobs(db, speaker_id, reason)


def _heads(db: Session, speaker_id: uuid.UUID) -> list[Head]:
    """Every head of the speaker as committed now (after the lock), oldest version first."""
    return list(
        db.scalars(
            select(Head).where(Head.speaker_id == speaker_id).order_by(Head.version).execution_options(populate_existing=True)
        )
    )


def _tainted(heads: Iterable[Head], erased_utterance_ids: set[str]) -> set[uuid.UUID]:
    """Heads that carry erased data: withdrawn already, trained on an erased utterance, or warm-started (at any
    depth) from such a head. ``heads`` oldest version first, so a parent is decided before its children."""
    tainted: set[uuid.UUID] = set()
    for head in heads:
        used = {str(u) for u in (head.train_utterance_ids or [])}
        if (
            head.status is HeadStatus.withdrawn
            or used & erased_utterance_ids
            or (head.parent_head_id is not None and head.parent_head_id in tainted)
        ):
            tainted.add(head.id)
    return tainted


def _fall_back(db: Session, heads: list[Head], excluded: set[uuid.UUID]) -> uuid.UUID | None:
    """Put back in service the newest clean version that was in service before; ``None``: the base model."""
    earlier = [h for h in heads if h.status is HeadStatus.retired and h.promoted_at is not None and h.id not in excluded]
    earlier.sort(key=lambda h: (h.promoted_at, h.version), reverse=True)
    for head in earlier:
        changed = db.execute(
            update(Head)
            .where(Head.id == head.id, Head.status == HeadStatus.retired)
            .values(status=HeadStatus.in_service)
            .execution_options(synchronize_session=False)
        )
        if changed.rowcount == 1:
            return head.id
    return None


def withdraw_heads_trained_on(db: Session, speaker_id: uuid.UUID, utterance_id: uuid.UUID) -> Lineage:
    """Before an utterance's row is deleted (same transaction): cancel the speaker's active job, withdraw every head
    that carries the utterance, fall back if the head in service was one. Flushes."""
    cancelled = _lock(db, speaker_id, f"utterance {utterance_id} of the speaker was deleted")
    heads = _heads(db, speaker_id)
    tainted = _tainted(heads, {str(utterance_id)})
    newly = [h for h in heads if h.id in tainted and h.status is not HeadStatus.withdrawn]
    in_service = next((h for h in heads if h.status is HeadStatus.in_service), None)
    if newly:
        db.execute(
            update(Head)
            .where(Head.id.in_([h.id for h in newly]), Head.status != HeadStatus.withdrawn)
            .values(status=HeadStatus.withdrawn)
            .execution_options(synchronize_session=False)
        )
    fallback = None
    if in_service is not None and in_service.id in tainted:
        fallback = _fall_back(db, heads, tainted)
        in_service_id = fallback
    else:
        in_service_id = in_service.id if in_service is not None else None
    db.flush()
    return Lineage([h.id for h in newly], cancelled, in_service_id, fallback)


def delete_head(db: Session, head_id: uuid.UUID, speaker_id: uuid.UUID) -> tuple[Head, Lineage]:
    """Delete one head version's row (the caller deletes its artifact after the commit); the deleted row and what
    now serves the speaker. ``HeadInUse`` (409) for the candidate of a running job, ``HeadNotFound`` if it went
    meanwhile. Flushes."""
    lock_live_speaker(db, speaker_id)
    heads = _heads(db, speaker_id)
    head = next((h for h in heads if h.id == head_id), None)
    if head is None:
        raise errors.HeadNotFound()
    if head.status is HeadStatus.candidate and head.job_id is not None:
        state = db.scalar(select(AdaptationJob.state).where(AdaptationJob.id == head.job_id))
        if state is not None and JobState(state).is_active:
            raise errors.HeadInUse(
                f"version {head.version} is the candidate of job {head.job_id}, still {JobState(state).value}; "
                "cancel the job first"
            )
    db.execute(delete(Head).where(Head.id == head.id).execution_options(synchronize_session=False))
    in_service = next((h for h in heads if h.status is HeadStatus.in_service), None)
    fallback = None
    if head.status is HeadStatus.in_service:
        fallback = _fall_back(db, heads, _tainted(heads, set()) | {head.id})
        in_service_id = fallback
    else:
        in_service_id = in_service.id if in_service is not None else None
    db.flush()
    db.expunge(head)
    return head, Lineage([], [], in_service_id, fallback)


def delete_jobs_and_heads(db: Session, speaker_id: uuid.UUID) -> None:
    """A speaker's erasure, after its tombstone: every job (with its evaluation) and every head row. Flushes."""
    job_ids = select(AdaptationJob.id).where(AdaptationJob.speaker_id == speaker_id)
    for statement in (
        delete(Evaluation).where(Evaluation.job_id.in_(job_ids)),
        delete(AdaptationJob).where(AdaptationJob.speaker_id == speaker_id),
        delete(Head).where(Head.speaker_id == speaker_id),
    ):
        db.execute(statement.execution_options(synchronize_session=False))
    db.flush()
