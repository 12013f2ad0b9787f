"""Training stage of an adaptation job: claim it, train a head through ``app.ml``, store the candidate.

``run_training`` is idempotent by job id: a delivery for a job past training is a no-op; a delivery for a job in
``training`` is a duplicate while its heartbeat is fresh (no-op) and a restart when the broker marks it
redelivered or the heartbeat went stale (the previous worker died): attempts + 1, bounded by
``settings.task_max_attempts`` (then ``failed`` with the reason). Every write goes through ``app.services.jobs``;
the evaluation is enqueued only after the candidate is committed.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.container import Services
from app.ml import ModelUnavailable, TrainedHead, TrainingProgress, TrainingRequest, TrainingStopped
from app.services import jobs
from app.services.heads import in_service_head
from app.services.queue import QueueUnavailable
from storage.db import session_scope
from storage.models import AdaptationJob, Head, HeadType, JobState, Speaker, Split, Utterance
from storage.objects import head_key
from workers.progress import (
    TRAINING_MAX_SILENCE_S,
    TRAINING_SHARE,
    TRANSIENT_ERRORS,
    Outcome,
    Reporter,
    fail_job,
)
from workers.retry import Held

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _TrainingPlan:
    tenant_id: uuid.UUID
    speaker_id: uuid.UUID
    head_type: str
    budget: dict
    utterances: list[Utterance]
    parent: Head | None  # the head in service, warm-start source when of the same type


def _claim(services: Services, job_id: uuid.UUID, redelivered: bool, resume_attempt: int | None) -> jobs.Claim:
    settings = services.settings
    with session_scope(services.session_factory) as db:
        return jobs.claim_training(
            db, job_id, redelivered=redelivered, max_attempts=settings.task_max_attempts,
            stale_after_s=settings.job_stale_after_seconds, resume_attempt=resume_attempt,
        )


def _training_plan(services: Services, job_id: uuid.UUID) -> _TrainingPlan | None:
    with services.session_factory() as db:
        job = db.get(AdaptationJob, job_id)
        speaker = db.get(Speaker, job.speaker_id) if job is not None else None
        if job is None or speaker is None:
            return None
        utterances = list(
            db.scalars(
                select(Utterance)
                .where(Utterance.speaker_id == speaker.id, Utterance.split == Split.train)
                .order_by(Utterance.created_at, Utterance.id)
            )
        )
        current = in_service_head(db, speaker.id)
        parent = current if current is not None and current.head_type == job.head_type else None
        return _TrainingPlan(speaker.tenant_id, speaker.id, job.head_type.value, dict(job.budget), utterances, parent)


def run_training(
    services: Services, job_id: uuid.UUID, *, redelivered: bool = False, held: Held | None = None
) -> Outcome:
    """Train the job's head (see the module docstring). Raises only ``TRANSIENT_ERRORS`` (the caller retries).
    ``held`` (``workers.retry``): records the claimed attempt, and a retry after a transient error resumes it."""
    resume = held.resume_attempt(JobState.training) if held is not None else None
    claim = _claim(services, job_id, redelivered, resume)
    if claim.attempt is None:
        logger.info("job %s: training %s: %s", job_id, claim.action, claim.detail)
        return Outcome(claim.action, claim.detail)
    attempt = claim.attempt
    if held is not None:
        held.hold(JobState.training, attempt)
    reporter = Reporter(services, job_id, JobState.training, attempt)
    head_id = uuid.uuid4()
    # Loading the audio and the model's data preparation report no progress: a keep-alive thread beats meanwhile.
    stop_keep_alive = reporter.start_keep_alive(TRAINING_MAX_SILENCE_S)
    try:
        plan = _training_plan(services, job_id)
        if plan is None:
            return Outcome("noop", "job or speaker deleted")
        if not plan.utterances:
            fail_job(services, job_id, "the speaker has no train utterances", attempts=attempt)
            return Outcome("failed", "no train utterances")
        # The stored FLAC bytes, not decoded samples: training decodes each utterance when it uses it (streaming).
        audio = [services.object_store.get(u.object_key) for u in plan.utterances]
        init_artifact = services.object_store.get(plan.parent.object_key) if plan.parent is not None else None
        request = TrainingRequest(
            head_type=plan.head_type,
            max_seconds=float(plan.budget.get("max_train_seconds", services.settings.default_train_seconds)),
            max_epochs=int(plan.budget.get("max_epochs", services.settings.default_max_epochs)),
            seed=0,
            metadata={
                "head_id": str(head_id),
                "job_id": str(job_id),
                "speaker_id": str(plan.speaker_id),
                "parent_head_id": str(plan.parent.id) if plan.parent is not None else None,
            },
        )

        def on_progress(p: TrainingProgress) -> None:
            reporter.heartbeat(
                progress=round(TRAINING_SHARE * min(max(p.fraction, 0.0), 1.0), 4),
                step=p.step,
                total_steps=p.total_steps,
                loss=p.loss,
            )

        logger.info(
            "job %s: training a %s head on %d utterances (attempt %d, warm start: %s)",
            job_id, plan.head_type, len(audio), attempt, plan.parent.id if plan.parent else "no",
        )
        trained = services.ml.train(
            list(zip(audio, (u.transcript for u in plan.utterances))),
            request,
            init_artifact,
            on_progress,
            reporter.should_stop,
        )
    except TrainingStopped:
        return Outcome("noop", "stopped: the job was cancelled, deleted or taken over")
    except TRANSIENT_ERRORS:
        raise
    except ModelUnavailable as exc:
        fail_job(services, job_id, f"the model foundation is unavailable: {exc}", attempts=attempt)
        return Outcome("failed", str(exc))
    except Exception as exc:
        logger.exception("job %s: training failed", job_id)
        fail_job(services, job_id, f"training failed: {type(exc).__name__}: {exc}", attempts=attempt)
        return Outcome("failed", str(exc))
    finally:
        stop_keep_alive()
    if reporter.stopped:
        return Outcome("noop", "stopped: the job was cancelled, deleted or taken over")
    final = {k: v for k, v in reporter.latest.items() if k in ("step", "total_steps", "loss")}
    return _store_candidate(services, job_id, attempt, head_id, plan, trained, final)


def _store_candidate(
    services: Services,
    job_id: uuid.UUID,
    attempt: int,
    head_id: uuid.UUID,
    plan: _TrainingPlan,
    trained: TrainedHead,
    final: dict[str, Any],
) -> Outcome:
    """Upload the artifact, then (one transaction) the Head row and ``training -> evaluating``; then enqueue."""
    store = services.object_store
    key = head_key(plan.tenant_id, plan.speaker_id, head_id)
    store.put(key, trained.artifact, "application/octet-stream")
    candidate = jobs.CandidateHead(
        id=head_id,
        speaker_id=plan.speaker_id,
        head_type=HeadType(trained.head_type),
        object_key=key,
        sha256=hashlib.sha256(trained.artifact).hexdigest(),
        size_bytes=len(trained.artifact),
        parameters=trained.parameters,
        backbone_fingerprint=trained.backbone_fingerprint,
        controller_fingerprint=trained.controller_fingerprint,
        parent_head_id=plan.parent.id if plan.parent is not None else None,
        train_utterance_ids=[str(u.id) for u in plan.utterances],
        train_metrics=trained.metrics,
    )
    try:
        with session_scope(services.session_factory) as db:
            stored = jobs.store_candidate(db, job_id, attempt, candidate, progress=TRAINING_SHARE, **final)
    except IntegrityError:  # the speaker was deleted meanwhile, or a stale duplicate stored this version
        store.delete(key)
        return Outcome("noop", "the head could not be recorded (speaker deleted or job taken over)")
    except BaseException:
        store.delete(key)
        raise
    if not stored:
        store.delete(key)
        return Outcome("noop", "the job was cancelled, deleted or taken over before its head was stored")
    logger.info("job %s: head %s stored; queueing evaluation", job_id, head_id)
    try:
        services.queue.enqueue_evaluation(job_id)
    except QueueUnavailable as exc:  # the job is committed as evaluating: the reaper re-enqueues it later
        logger.warning("job %s: could not queue the evaluation (the reaper will retry): %s", job_id, exc)
    return Outcome("trained", str(head_id))

