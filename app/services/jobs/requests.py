"""What clients ask of jobs: creation (one active job per speaker, enforced by the database), lookup, cancel."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import errors
from app.services import quotas
from app.services.jobs.transitions import refresh, transition
from app.services.speakers import lock_live_speaker
from app.settings import Settings
from storage.models import (
    ACTIVE_JOB_STATES,
    AdaptationJob,
    HeadType,
    JobState,
    Speaker,
    Split,
    Utterance,
)


def get_job(db: Session, tenant_id: uuid.UUID, job_id: uuid.UUID, *, for_update: bool = False) -> AdaptationJob:
    query = (
        select(AdaptationJob)
        .join(Speaker, Speaker.id == AdaptationJob.speaker_id)
        .where(AdaptationJob.id == job_id, Speaker.tenant_id == tenant_id, Speaker.deleted_at.is_(None))
    )
    if for_update:
        query = query.with_for_update(of=AdaptationJob)
    job = db.scalar(query)
    if job is None:
        raise errors.JobNotFound()
    return job


def active_job_id(db: Session, speaker_id: uuid.UUID) -> uuid.UUID | None:
    return db.scalar(select(AdaptationJob.id).where(AdaptationJob.active_speaker_id == speaker_id))


def training_budget(settings: Settings, max_train_seconds: float | None, max_epochs: int | None) -> dict:
    seconds = settings.default_train_seconds if max_train_seconds is None else float(max_train_seconds)
    if not 0 < seconds <= settings.max_train_seconds:
        raise errors.InvalidBudget(
            f"max_train_seconds must be within (0, {settings.max_train_seconds:g}], not {seconds:g}"
        )
    epochs = settings.default_max_epochs if max_epochs is None else int(max_epochs)
    if epochs < 1:
        raise errors.InvalidBudget("max_epochs must be >= 1")
    return {"max_train_seconds": seconds, "max_epochs": epochs}


def check_enough_data(db: Session, settings: Settings, speaker_id: uuid.UUID) -> None:
    counts = dict(
        db.execute(
            select(Utterance.split, func.count()).where(Utterance.speaker_id == speaker_id).group_by(Utterance.split)
        ).all()
    )
    train, held_out = int(counts.get(Split.train, 0)), int(counts.get(Split.eval, 0))
    if train < settings.min_train_utterances or held_out < settings.min_eval_utterances:
        raise errors.NotEnoughData(
            f"adaptation needs at least {settings.min_train_utterances} train and {settings.min_eval_utterances} "
            f"eval utterances; this speaker has {train} train and {held_out} eval"
        )


def create_job(
    db: Session,
    settings: Settings,
    speaker: Speaker,
    head_type: HeadType,
    max_train_seconds: float | None = None,
    max_epochs: int | None = None,
) -> AdaptationJob:
    """A queued job. Flushes; the caller commits, then enqueues.

    The unique ``active_speaker_id`` column makes "one active job per speaker" hold under concurrency: the
    loser of a race gets an ``IntegrityError``, turned into ``JobAlreadyActive`` (409); the request's boundary
    rolls the session back. The tenant's quotas (active jobs, daily training seconds, stored bytes) are checked
    under the tenant's lock (``app.services.quotas``): ``QuotaExceeded`` (429).
    """
    budget = training_budget(settings, max_train_seconds, max_epochs)
    lock_live_speaker(db, speaker.id)  # a speaker being deleted gets no new job (its erasure takes the same lock)
    check_enough_data(db, settings, speaker.id)
    existing = active_job_id(db, speaker.id)
    if existing is not None:
        raise errors.JobAlreadyActive(f"job {existing} of this speaker is still active")
    quotas.check_new_job(db, settings, speaker.tenant_id, budget["max_train_seconds"])
    job = AdaptationJob(
        speaker_id=speaker.id,
        head_type=head_type,
        state=JobState.queued,
        active_speaker_id=speaker.id,
        progress=0.0,
        attempts=0,
        budget=budget,
    )
    db.add(job)
    try:
        db.flush()
    except IntegrityError as exc:
        raise errors.JobAlreadyActive("another job of this speaker became active concurrently") from exc
    return job


def cancel(db: Session, job: AdaptationJob) -> AdaptationJob:
    """queued/training/evaluating -> cancelled; a finished job raises ``JobNotCancellable`` (409).

    The worker notices at its next check (``should_stop``) and stops; nothing it produces afterwards is kept.
    """
    if not transition(db, job.id, ACTIVE_JOB_STATES, JobState.cancelled, error="cancelled by the client"):
        refresh(db, job)
        raise errors.JobNotCancellable(f"the job is already {job.state.value}")
    return refresh(db, job)
