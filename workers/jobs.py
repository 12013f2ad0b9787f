"""The adaptation pipeline as plain functions: train a head, evaluate and gate it. Celery tasks are thin shells.

Each function takes the process's ``Services`` and a job id, re-reads the job, and is idempotent by job id:

* ``run_training``: ``queued -> training`` (claim, attempts + 1), train, upload the artifact, create the Head row,
  ``training -> evaluating``, commit, THEN enqueue the evaluation. A delivery for a job past training is a
  no-op; a delivery for a job in ``training`` is a duplicate while its heartbeat is fresh (no-op) and a restart
  when the broker marks it redelivered or the heartbeat went stale (the previous worker died): attempts + 1,
  bounded by ``settings.task_max_attempts`` (then ``failed`` with the reason).
* ``run_evaluation``: transcribe the speaker's held-out utterances with the base model, the head in service (if
  any) and the candidate; score them (WER after the shared normalization); apply the gate; store the
  per-utterance report; then promote or reject in one transaction.

Every write a run makes is fenced: ``UPDATE ... WHERE id = :id AND state = :expected AND attempts = :mine``.
A run whose job was cancelled, deleted, or taken over by a newer attempt finds that its update matched no row,
stops, and discards what it produced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from app.container import Services
from app.ml import IncompatibleHead, ModelUnavailable, TrainedHead, TrainingProgress, TrainingRequest, TrainingStopped
from app.services import jobs as job_service
from app.services.gate import GateConfig, GateResult, UtteranceScore, evaluate_gate
from app.services.heads import in_service_head, next_version
from app.services.queue import QueueUnavailable
from storage.errors import ObjectStoreUnavailable
from storage.models import (
    AdaptationJob,
    Evaluation,
    Head,
    HeadStatus,
    JobState,
    Speaker,
    Split,
    Utterance,
    utcnow,
)
from storage.objects import head_key, report_key

logger = logging.getLogger(__name__)

# Errors that retrying later can fix: the task shell retries them with backoff (bounded).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ObjectStoreUnavailable, OperationalError, QueueUnavailable)

TRAINING_SHARE = 0.9  # job progress 0..0.9 while training, 0.9..1 while evaluating
HEARTBEAT_INTERVAL_S = 1.0  # at most one progress/heartbeat write (and one cancellation check) per second
EVAL_CHUNK = 8  # utterances per transcription call (x3 systems, one batched pass)


@dataclass(frozen=True)
class Outcome:
    """What a run did (for logs and tests): ``action`` is e.g. ``trained``, ``noop``, ``failed``, ``promoted``."""

    action: str
    detail: str = ""


# ---- helpers ---------------------------------------------------------------------------------------------------


def _session(services: Services) -> Session:
    return services.session_factory()


def _stale(job: AdaptationJob, now: datetime, stale_after_s: float) -> bool:
    seen = job.heartbeat_at or job.started_at or job.created_at
    return seen is None or now - seen > timedelta(seconds=stale_after_s)


def fail_job(services: Services, job_id: uuid.UUID, error: str, *, attempts: int | None = None) -> bool:
    """Best effort: an active job -> ``failed`` with ``error`` (fenced by ``attempts`` when given)."""
    with _session(services) as db:
        job = db.get(AdaptationJob, job_id)
        if job is None or not job.state.is_active:
            return False
        moved = job_service.transition(
            db, job_id, {job.state}, JobState.failed, at_attempt=attempts, error=error[:4000]
        )
        db.commit()
        if moved:
            logger.warning("job %s failed: %s", job_id, error)
        return moved


class _Reporter:
    """Throttled heartbeat/progress writes and cancellation checks for one fenced run of a job."""

    def __init__(self, services: Services, job_id: uuid.UUID, state: JobState, attempt: int) -> None:
        self._services = services
        self._job_id = job_id
        self._state = state
        self._attempt = attempt
        self._last_write = 0.0
        self._last_check = 0.0
        self.stopped = False
        self.latest: dict[str, Any] = {}  # the newest values, written or not (the final transition writes them)

    def _write(self, values: dict[str, Any]) -> None:
        try:
            with _session(self._services) as db:
                now = utcnow()
                result = db.execute(
                    update(AdaptationJob)
                    .where(
                        AdaptationJob.id == self._job_id,
                        AdaptationJob.state == self._state,
                        AdaptationJob.attempts == self._attempt,
                    )
                    .values(heartbeat_at=now, updated_at=now, **values)
                    .execution_options(synchronize_session=False)
                )
                db.commit()
            if result.rowcount != 1:
                self.stopped = True  # cancelled, deleted, or superseded by a newer attempt
        except OperationalError as exc:  # a database hiccup must not kill a long training run
            logger.warning("job %s: heartbeat failed: %s", self._job_id, exc)
        self._last_write = self._last_check = time.monotonic()

    def heartbeat(self, force: bool = False, **values: Any) -> None:
        self.latest.update(values)
        if force or time.monotonic() - self._last_write >= HEARTBEAT_INTERVAL_S:
            self._write(values)

    def should_stop(self) -> bool:
        if not self.stopped and time.monotonic() - self._last_check >= HEARTBEAT_INTERVAL_S:
            self._write({})
        return self.stopped


def _load_waveforms(services: Services, utterances: list[Utterance]) -> list[Any]:
    return [services.ml.decode_audio(services.object_store.get(u.object_key)).waveform for u in utterances]


# ---- training ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Claim:
    attempt: int


@dataclass(frozen=True)
class _TrainingPlan:
    tenant_id: uuid.UUID
    speaker_id: uuid.UUID
    head_type: str
    budget: dict
    utterances: list[Utterance]
    parent: Head | None  # the head in service, warm-start source when of the same type


def _claim_training(services: Services, job_id: uuid.UUID, redelivered: bool) -> _Claim | Outcome:
    settings = services.settings
    with _session(services) as db:
        job = db.get(AdaptationJob, job_id)
        if job is None:
            return Outcome("noop", "job does not exist (deleted?)")
        now = utcnow()
        if job.state is JobState.training:
            if not redelivered and not _stale(job, now, settings.job_stale_after_seconds):
                return Outcome("noop", "duplicate delivery: a live run owns this job")
            logger.warning("job %s: restarting training (attempt %d stopped)", job_id, job.attempts)
        elif job.state is not JobState.queued:
            return Outcome("noop", f"job is {job.state.value}, past training")
        attempt = job.attempts + 1
        if attempt > settings.task_max_attempts:
            reason = f"gave up after {job.attempts} attempts: the worker running the job stopped"
            if job.error:
                reason += f" (last: {job.error})"
            job_service.transition(db, job_id, {job.state}, JobState.failed, at_attempt=job.attempts, error=reason)
            db.commit()
            return Outcome("failed", reason)
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
        db.commit()
        if result.rowcount != 1:
            return Outcome("noop", "another worker claimed the job first")
        return _Claim(attempt)


def _training_plan(services: Services, job_id: uuid.UUID) -> _TrainingPlan | None:
    with _session(services) as db:
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


def _finite(value: Any) -> Any:
    """JSON-safe metrics: non-finite floats become None (Postgres JSON rejects NaN/Infinity)."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def run_training(services: Services, job_id: uuid.UUID, *, redelivered: bool = False) -> Outcome:
    """Train the job's head (see the module docstring). Raises only ``TRANSIENT_ERRORS`` (the caller retries)."""
    claim = _claim_training(services, job_id, redelivered)
    if isinstance(claim, Outcome):
        logger.info("job %s: training %s: %s", job_id, claim.action, claim.detail)
        return claim
    attempt = claim.attempt
    reporter = _Reporter(services, job_id, JobState.training, attempt)
    head_id = uuid.uuid4()
    try:
        plan = _training_plan(services, job_id)
        if plan is None:
            return Outcome("noop", "job or speaker deleted")
        if not plan.utterances:
            fail_job(services, job_id, "the speaker has no train utterances", attempts=attempt)
            return Outcome("failed", "no train utterances")
        waveforms = _load_waveforms(services, plan.utterances)
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
            job_id, plan.head_type, len(waveforms), attempt, plan.parent.id if plan.parent else "no",
        )
        trained = services.ml.train(
            list(zip(waveforms, (u.transcript for u in plan.utterances))),
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
    try:
        with _session(services) as db:
            now = utcnow()
            db.add(
                Head(
                    id=head_id,
                    speaker_id=plan.speaker_id,
                    job_id=job_id,
                    version=next_version(db, plan.speaker_id),
                    head_type=trained.head_type,
                    status=HeadStatus.candidate,
                    object_key=key,
                    sha256=hashlib.sha256(trained.artifact).hexdigest(),
                    size_bytes=len(trained.artifact),
                    parameters=trained.parameters,
                    backbone_fingerprint=trained.backbone_fingerprint,
                    controller_fingerprint=trained.controller_fingerprint,
                    parent_head_id=plan.parent.id if plan.parent is not None else None,
                    train_utterance_ids=[str(u.id) for u in plan.utterances],
                    train_metrics=_finite(trained.metrics),
                )
            )
            db.flush()
            moved = job_service.transition(
                db,
                job_id,
                {JobState.training},
                JobState.evaluating,
                at_attempt=attempt,
                now=now,
                head_id=head_id,
                progress=TRAINING_SHARE,
                heartbeat_at=now,
                **final,
            )
            if not moved:
                db.rollback()
                store.delete(key)
                return Outcome("noop", "the job was cancelled, deleted or taken over before its head was stored")
            db.commit()
    except IntegrityError:  # the speaker was deleted meanwhile, or a stale duplicate stored this version
        store.delete(key)
        return Outcome("noop", "the head could not be recorded (speaker deleted or job taken over)")
    except BaseException:
        store.delete(key)
        raise
    logger.info("job %s: head %s stored; queueing evaluation", job_id, head_id)
    try:
        services.queue.enqueue_evaluation(job_id)
    except QueueUnavailable as exc:  # the job is committed as evaluating: the reaper re-enqueues it later
        logger.warning("job %s: could not queue the evaluation (the reaper will retry): %s", job_id, exc)
    return Outcome("trained", str(head_id))


# ---- evaluation --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _EvaluationPlan:
    attempt: int
    tenant_id: uuid.UUID
    speaker_id: uuid.UUID
    candidate: Head
    reference: Head | None  # the head in service, if any
    utterances: list[Utterance]


def _evaluation_plan(services: Services, job_id: uuid.UUID) -> _EvaluationPlan | Outcome:
    with _session(services) as db:
        job = db.get(AdaptationJob, job_id)
        if job is None:
            return Outcome("noop", "job does not exist (deleted?)")
        if job.state is not JobState.evaluating:
            return Outcome("noop", f"job is {job.state.value}, not evaluating")
        speaker = db.get(Speaker, job.speaker_id)
        candidate = db.get(Head, job.head_id) if job.head_id is not None else None
        if speaker is None or candidate is None:
            return Outcome("missing", "the job has no candidate head")
        reference = in_service_head(db, speaker.id)
        if reference is not None and reference.id == candidate.id:
            reference = None
        utterances = list(
            db.scalars(
                select(Utterance)
                .where(Utterance.speaker_id == speaker.id, Utterance.split == Split.eval)
                .order_by(Utterance.created_at, Utterance.id)
            )
        )
        return _EvaluationPlan(job.attempts, speaker.tenant_id, speaker.id, candidate, reference, utterances)


@dataclass
class _Hypotheses:
    base: list[str]
    reference: list[str] | None
    candidate: list[str]
    reference_problem: str | None = None


def _transcribe_all(services: Services, plan: _EvaluationPlan, reporter: _Reporter) -> _Hypotheses | None:
    """Transcribe every held-out utterance with each system; ``None`` when the run must stop."""
    store, ml = services.object_store, services.ml
    candidate_artifact = store.get(plan.candidate.object_key)
    reference_artifact = store.get(plan.reference.object_key) if plan.reference is not None else None
    hyps = _Hypotheses(base=[], reference=[] if reference_artifact is not None else None, candidate=[])
    total = len(plan.utterances)
    for start in range(0, total, EVAL_CHUNK):
        chunk = plan.utterances[start : start + EVAL_CHUNK]
        waveforms = _load_waveforms(services, chunk)
        hyps.base += ml.transcribe(waveforms, [None] * len(chunk))
        hyps.candidate += ml.transcribe(waveforms, [candidate_artifact] * len(chunk))
        if hyps.reference is not None:
            try:
                hyps.reference += ml.transcribe(waveforms, [reference_artifact] * len(chunk))
            except IncompatibleHead as exc:  # e.g. trained for an older foundation: compare against the base
                hyps.reference, hyps.reference_problem = None, f"the head in service no longer loads ({exc})"
        done = min(start + EVAL_CHUNK, total)
        reporter.heartbeat(progress=round(TRAINING_SHARE + (1 - TRAINING_SHARE) * 0.95 * done / total, 4))
        if reporter.should_stop():
            return None
    return hyps


def gate_config(services: Services) -> GateConfig:
    s = services.settings
    return GateConfig(
        min_eval_words=s.gate_min_eval_words,
        min_relative_improvement=s.gate_min_relative_improvement,
        confidence=s.gate_confidence,
        bootstrap_samples=s.gate_bootstrap_samples,
        seed=0,
    )


def run_evaluation(services: Services, job_id: uuid.UUID) -> Outcome:
    """Evaluate, gate, and promote or reject (see the module docstring). Raises only ``TRANSIENT_ERRORS``."""
    plan = _evaluation_plan(services, job_id)
    if isinstance(plan, Outcome):
        if plan.action == "missing":
            fail_job(services, job_id, "evaluation found no candidate head")
            return Outcome("failed", plan.detail)
        logger.info("job %s: evaluation %s: %s", job_id, plan.action, plan.detail)
        return plan
    reporter = _Reporter(services, job_id, JobState.evaluating, plan.attempt)
    reporter.heartbeat(force=True)
    if reporter.stopped:
        return Outcome("noop", "the job was cancelled or taken over")
    try:
        hyps = _transcribe_all(services, plan, reporter)
        if hyps is None:
            return Outcome("noop", "stopped: the job was cancelled or deleted")
        return _decide(services, job_id, plan, hyps)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        logger.exception("job %s: evaluation failed", job_id)
        detail = "the candidate head does not load" if isinstance(exc, IncompatibleHead) else type(exc).__name__
        fail_job(services, job_id, f"evaluation failed: {detail}: {exc}", attempts=plan.attempt)
        return Outcome("failed", str(exc))


def _decide(services: Services, job_id: uuid.UUID, plan: _EvaluationPlan, hyps: _Hypotheses) -> Outcome:
    ml = services.ml
    rows: list[dict[str, Any]] = []
    scores: list[UtteranceScore] = []
    totals = {"base": 0, "reference": 0, "candidate": 0}
    words_total = 0
    for i, utterance in enumerate(plan.utterances):
        base_errors, words = ml.word_errors(utterance.transcript, hyps.base[i])
        candidate_errors, _ = ml.word_errors(utterance.transcript, hyps.candidate[i])
        row: dict[str, Any] = {
            "utterance_id": str(utterance.id),
            "reference_text": utterance.transcript,
            "words": words,
            "base": {"text": hyps.base[i], "errors": base_errors},
            "in_service": None,
            "candidate": {"text": hyps.candidate[i], "errors": candidate_errors},
        }
        reference_errors = base_errors
        if hyps.reference is not None:
            reference_errors, _ = ml.word_errors(utterance.transcript, hyps.reference[i])
            row["in_service"] = {"text": hyps.reference[i], "errors": reference_errors}
            totals["reference"] += reference_errors
        totals["base"] += base_errors
        totals["candidate"] += candidate_errors
        words_total += words
        scores.append(UtteranceScore(words, reference_errors, candidate_errors))
        rows.append(row)

    config = gate_config(services)
    result: GateResult = evaluate_gate(scores, config)
    reference_used = plan.reference if hyps.reference is not None else None
    reason = f"reference: {'head in service v%d' % reference_used.version if reference_used else 'base model'}; "
    reason += result.reason
    if hyps.reference_problem:
        reason = f"{hyps.reference_problem}; {reason}"

    def wer(errors: int) -> float:
        return errors / words_total if words_total else 0.0

    report = {
        "job_id": str(job_id),
        "speaker_id": str(plan.speaker_id),
        "candidate_head_id": str(plan.candidate.id),
        "reference_head_id": str(reference_used.id) if reference_used else None,
        "gate": {
            "min_eval_words": config.min_eval_words,
            "min_relative_improvement": config.min_relative_improvement,
            "confidence_required": config.confidence,
            "bootstrap_samples": config.bootstrap_samples,
            "seed": config.seed,
        },
        "decision": result.decision.value,
        "reason": reason,
        "confidence": result.confidence,
        "words": words_total,
        "wer": {
            "base": wer(totals["base"]),
            "in_service": wer(totals["reference"]) if hyps.reference is not None else None,
            "candidate": wer(totals["candidate"]),
        },
        "utterances": rows,
    }
    key = report_key(plan.tenant_id, plan.speaker_id, job_id)
    services.object_store.put(key, json.dumps(report, indent=1).encode(), "application/json")

    target = JobState.promoted if result.promote else JobState.rejected
    with _session(services) as db:
        now = utcnow()
        # The fenced job update comes first: it takes the job's row lock (the write lock on SQLite), so a
        # concurrent cancel or duplicate evaluation either happened before (and we stop) or waits for us.
        moved = job_service.transition(
            db,
            job_id,
            {JobState.evaluating},
            target,
            at_attempt=plan.attempt,
            now=now,
            progress=1.0,
            heartbeat_at=now,
            error=None,  # notes left by a restart no longer apply
        )
        if not moved:
            db.rollback()
            return Outcome("noop", "the job was cancelled or decided meanwhile")
        db.execute(select(Speaker.id).where(Speaker.id == plan.speaker_id).with_for_update())
        if result.promote:
            db.execute(
                update(Head)
                .where(
                    Head.speaker_id == plan.speaker_id,
                    Head.status == HeadStatus.in_service,
                    Head.id != plan.candidate.id,
                )
                .values(status=HeadStatus.retired)
                .execution_options(synchronize_session=False)
            )
            new_status, extra = HeadStatus.in_service, {"promoted_at": now}
        else:
            new_status, extra = HeadStatus.rejected, {}
        changed = db.execute(
            update(Head)
            .where(Head.id == plan.candidate.id, Head.status == HeadStatus.candidate)
            .values(status=new_status, **extra)
            .execution_options(synchronize_session=False)
        )
        if changed.rowcount != 1:
            db.rollback()
            return Outcome("noop", "the candidate head changed meanwhile")
        db.add(
            Evaluation(
                job_id=job_id,
                candidate_head_id=plan.candidate.id,
                reference_head_id=reference_used.id if reference_used else None,
                base_wer=wer(totals["base"]),
                in_service_wer=wer(totals["reference"]) if hyps.reference is not None else None,
                candidate_wer=wer(totals["candidate"]),
                eval_utterances=len(plan.utterances),
                eval_words=words_total,
                confidence=result.confidence,
                decision=result.decision,
                reason=reason,
                report_key=key,
            )
        )
        db.commit()
    logger.info("job %s: %s (%s)", job_id, target.value, reason)
    return Outcome(target.value, reason)
