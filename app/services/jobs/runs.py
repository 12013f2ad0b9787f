"""What a worker's run of a job writes: claim the training, store the candidate head, promote or reject it.

Every write is fenced by the job's state and the run's attempt (``transitions``): a run whose job was cancelled,
deleted, or taken over by a newer attempt finds its write matched no row, and gets ``False`` or a ``noop`` claim.
Functions flush; the worker's boundary (one ``session_scope`` per step) commits, or rolls back when one raises.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.services.heads import next_version
from app.services.jobs.transitions import is_stale, transition
from hra.gate import GateResult
from storage.models import AdaptationJob, Decision, Evaluation, Head, HeadStatus, HeadType, JobState, Speaker, utcnow

logger = logging.getLogger(__name__)


class CandidateChanged(Exception):
    """The candidate head is no longer a candidate (the caller's boundary rolls the decision back)."""


@dataclass(frozen=True)
class Claim:
    """The outcome of asking to train a job: ``attempt`` when this run owns it, else why not."""

    action: str  # "claimed", "noop" or "failed"
    detail: str = ""
    attempt: int | None = None


def claim_training(
    db: Session,
    job_id: uuid.UUID,
    *,
    redelivered: bool,
    max_attempts: int,
    stale_after_s: float,
    resume_attempt: int | None = None,
) -> Claim:
    """``queued -> training`` with attempts + 1; a job already ``training`` is restarted only when its task was
    redelivered or its run went silent (the previous worker died); past ``max_attempts`` it fails.

    ``resume_attempt``: the attempt this same delivery claimed before it stopped on a transient error (database or
    object store down). A job still ``training`` at that attempt was taken over by no one (a takeover counts an
    attempt, the reaper changes the state), so the run resumes it without counting another."""
    job = db.get(AdaptationJob, job_id)
    if job is None:
        return Claim("noop", "job does not exist (deleted?)")
    now = utcnow()
    if resume_attempt is not None and job.state is JobState.training and job.attempts == resume_attempt:
        resumed = db.execute(
            update(AdaptationJob)
            .where(AdaptationJob.id == job_id, AdaptationJob.state == JobState.training,
                   AdaptationJob.attempts == resume_attempt)
            .values(heartbeat_at=now, updated_at=now, progress=0.0, step=None, total_steps=None, loss=None)
            .execution_options(synchronize_session=False)
        )
        if resumed.rowcount == 1:
            logger.info("job %s: resuming attempt %d after a transient error", job_id, resume_attempt)
            return Claim("claimed", "resumed", attempt=resume_attempt)
        return Claim("noop", "the job changed while its run was resuming")
    if job.state is JobState.training:
        if not redelivered and not is_stale(job, now, stale_after_s):
            return Claim("noop", "duplicate delivery: a live run owns this job")
        logger.warning("job %s: restarting training (attempt %d stopped)", job_id, job.attempts)
    elif job.state is not JobState.queued:
        return Claim("noop", f"job is {job.state.value}, past training")
    attempt = job.attempts + 1
    if attempt > max_attempts:
        reason = f"gave up after {job.attempts} attempts: the worker running the job stopped"
        if job.error:
            reason += f" (last: {job.error})"
        transition(db, job_id, {job.state}, JobState.failed, at_attempt=job.attempts, error=reason)
        return Claim("failed", reason)
    result = db.execute(
        update(AdaptationJob)
        .where(AdaptationJob.id == job_id, AdaptationJob.state == job.state, AdaptationJob.attempts == job.attempts)
        .values(
            state=JobState.training,
            active_speaker_id=AdaptationJob.speaker_id,
            attempts=attempt,
            started_at=job.started_at or now,
            heartbeat_at=now,
            updated_at=now,
            progress=0.0,
            step=None,
            total_steps=None,
            loss=None,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return Claim("noop", "another worker claimed the job first")
    return Claim("claimed", attempt=attempt)


@dataclass(frozen=True)
class CandidateHead:
    """A trained head whose artifact is already in the object store under ``object_key``."""

    id: uuid.UUID
    speaker_id: uuid.UUID
    head_type: HeadType
    object_key: str
    sha256: str
    size_bytes: int
    parameters: int
    backbone_fingerprint: str
    controller_fingerprint: str
    parent_head_id: uuid.UUID | None
    train_utterance_ids: list[str]
    train_metrics: dict[str, Any]


def store_candidate(
    db: Session, job_id: uuid.UUID, attempt: int, head: CandidateHead, *, progress: float, **job_values: Any
) -> bool:
    """``training -> evaluating`` with the candidate's ``Head`` row; ``False`` when the run was superseded.

    The fenced job update comes first: nothing else is written unless this run still owns the job.
    """
    now = utcnow()
    moved = transition(
        db, job_id, {JobState.training}, JobState.evaluating, at_attempt=attempt, now=now,
        progress=progress, heartbeat_at=now, **job_values,
    )
    if not moved:
        return False
    db.add(
        Head(
            id=head.id,
            speaker_id=head.speaker_id,
            job_id=job_id,
            version=next_version(db, head.speaker_id),
            head_type=head.head_type,
            status=HeadStatus.candidate,
            object_key=head.object_key,
            sha256=head.sha256,
            size_bytes=head.size_bytes,
            parameters=head.parameters,
            backbone_fingerprint=head.backbone_fingerprint,
            controller_fingerprint=head.controller_fingerprint,
            parent_head_id=head.parent_head_id,
            train_utterance_ids=head.train_utterance_ids,
            train_metrics=_finite(head.train_metrics),
        )
    )
    db.flush()
    db.execute(
        update(AdaptationJob)
        .where(AdaptationJob.id == job_id)
        .values(head_id=head.id)
        .execution_options(synchronize_session=False)
    )
    db.flush()
    return True


@dataclass(frozen=True)
class EvaluationRecord:
    """The numbers an evaluation stores beside the gate's result."""

    candidate_head_id: uuid.UUID
    reference_head_id: uuid.UUID | None
    base_wer: float
    in_service_wer: float | None
    candidate_wer: float
    eval_utterances: int
    eval_words: int
    reason: str
    report_key: str


def decide(
    db: Session, job_id: uuid.UUID, attempt: int, speaker_id: uuid.UUID, gate: GateResult, record: EvaluationRecord
) -> JobState | None:
    """``evaluating -> promoted | rejected`` as the gate says, atomically with the head statuses and the stored
    ``Evaluation``; ``None`` when the job was cancelled or decided meanwhile.

    The fenced job update comes first: it takes the job's row lock (the write lock on SQLite), so a concurrent
    cancel or duplicate evaluation either happened before (and this returns ``None``) or waits for this one.
    Promotion retires the head in service. Raises ``CandidateChanged`` if the candidate is no longer one.
    """
    target = JobState.promoted if gate.promote else JobState.rejected
    now = utcnow()
    moved = transition(
        db, job_id, {JobState.evaluating}, target, at_attempt=attempt, now=now,
        progress=1.0, heartbeat_at=now, error=None,  # notes left by a restart no longer apply
    )
    if not moved:
        return None
    db.execute(select(Speaker.id).where(Speaker.id == speaker_id).with_for_update())
    if gate.promote:
        db.execute(
            update(Head)
            .where(Head.speaker_id == speaker_id, Head.status == HeadStatus.in_service,
                   Head.id != record.candidate_head_id)
            .values(status=HeadStatus.retired)
            .execution_options(synchronize_session=False)
        )
        new_status, extra = HeadStatus.in_service, {"promoted_at": now}
    else:
        new_status, extra = HeadStatus.rejected, {}
    changed = db.execute(
        update(Head)
        .where(Head.id == record.candidate_head_id, Head.status == HeadStatus.candidate)
        .values(status=new_status, **extra)
        .execution_options(synchronize_session=False)
    )
    if changed.rowcount != 1:
        raise CandidateChanged(f"head {record.candidate_head_id} is no longer a candidate")
    db.add(
        Evaluation(
            job_id=job_id,
            candidate_head_id=record.candidate_head_id,
            reference_head_id=record.reference_head_id,
            base_wer=record.base_wer,
            in_service_wer=record.in_service_wer,
            candidate_wer=record.candidate_wer,
            eval_utterances=record.eval_utterances,
            eval_words=record.eval_words,
            confidence=gate.confidence,
            decision=Decision(gate.decision.value),
            reason=record.reason,
            report_key=record.report_key,
        )
    )
    db.flush()
    return target


def _finite(value: Any) -> Any:
    """JSON-safe metrics: non-finite floats become None (Postgres JSON rejects NaN/Infinity)."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value

