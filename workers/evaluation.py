"""Evaluation stage of an adaptation job: transcribe the held-out set, score it, gate, promote or reject.

``run_evaluation`` transcribes the speaker's held-out utterances with the base model, the head in service (if
any) and the candidate; scores them (WER after the shared normalization); applies the gate (``hra.gate``);
stores the per-utterance report; then promotes or rejects through ``app.services.jobs.decide`` in one
transaction. It is idempotent by job id: a job no longer ``evaluating`` is a no-op.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from app.container import Services
from app.ml import IncompatibleHead
from app.services import jobs
from app.services.heads import in_service_head
from app.settings import Settings
from hra.gate import GateConfig, GateResult, UtteranceScore, evaluate_gate
from storage.db import session_scope
from storage.models import AdaptationJob, Head, JobState, Speaker, Split, Utterance
from storage.objects import report_key
from workers.progress import (
    EVALUATION_MAX_SILENCE_S,
    TRAINING_SHARE,
    TRANSIENT_ERRORS,
    Outcome,
    Reporter,
    fail_job,
    load_waveforms,
)
from workers.retry import Held

logger = logging.getLogger(__name__)

EVAL_CHUNK = 8  # utterances per transcription call (x3 systems, one batched pass)


@dataclass(frozen=True)
class _EvaluationPlan:
    attempt: int
    tenant_id: uuid.UUID
    speaker_id: uuid.UUID
    candidate: Head
    reference: Head | None  # the head in service, if any
    utterances: list[Utterance]


def _evaluation_plan(services: Services, job_id: uuid.UUID) -> _EvaluationPlan | Outcome:
    with services.session_factory() as db:
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


def _transcribe_all(services: Services, plan: _EvaluationPlan, reporter: Reporter) -> _Hypotheses | None:
    """Transcribe every held-out utterance with each system; ``None`` when the run must stop."""
    store, ml = services.object_store, services.ml
    candidate_artifact = store.get(plan.candidate.object_key)
    reference_artifact = store.get(plan.reference.object_key) if plan.reference is not None else None
    hyps = _Hypotheses(base=[], reference=[] if reference_artifact is not None else None, candidate=[])
    total = len(plan.utterances)
    for start in range(0, total, EVAL_CHUNK):
        chunk = plan.utterances[start : start + EVAL_CHUNK]
        waveforms = load_waveforms(services, chunk)
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


def gate_config(s: Settings) -> GateConfig:
    return GateConfig(
        min_eval_words=s.gate_min_eval_words,
        min_relative_improvement=s.gate_min_relative_improvement,
        confidence=s.gate_confidence,
        bootstrap_samples=s.gate_bootstrap_samples,
        seed=0,
    )


def run_evaluation(services: Services, job_id: uuid.UUID, *, held: Held | None = None) -> Outcome:
    """Evaluate, gate, and promote or reject (see the module docstring). Raises only ``TRANSIENT_ERRORS``.
    ``held`` (``workers.retry``): records the attempt evaluated, which the retry loop heartbeats while it waits."""
    plan = _evaluation_plan(services, job_id)
    if isinstance(plan, Outcome):
        if plan.action == "missing":
            fail_job(services, job_id, "evaluation found no candidate head")
            return Outcome("failed", plan.detail)
        logger.info("job %s: evaluation %s: %s", job_id, plan.action, plan.detail)
        return plan
    if held is not None:
        held.hold(JobState.evaluating, plan.attempt)
    reporter = Reporter(services, job_id, JobState.evaluating, plan.attempt)
    reporter.heartbeat(force=True)
    if reporter.stopped:
        return Outcome("noop", "the job was cancelled or taken over")
    try:
        # One batch of transcriptions (3 systems x EVAL_CHUNK utterances) reports nothing: keep-alive meanwhile.
        with reporter.keep_alive(EVALUATION_MAX_SILENCE_S):
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

    config = gate_config(services.settings)
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

    record = jobs.EvaluationRecord(
        candidate_head_id=plan.candidate.id,
        reference_head_id=reference_used.id if reference_used else None,
        base_wer=wer(totals["base"]),
        in_service_wer=wer(totals["reference"]) if hyps.reference is not None else None,
        candidate_wer=wer(totals["candidate"]),
        eval_utterances=len(plan.utterances),
        eval_words=words_total,
        reason=reason,
        report_key=key,
    )
    try:
        with session_scope(services.session_factory) as db:
            target = jobs.decide(db, job_id, plan.attempt, plan.speaker_id, result, record)
    except jobs.CandidateChanged:
        return Outcome("noop", "the candidate head changed meanwhile")
    if target is None:
        return Outcome("noop", "the job was cancelled or decided meanwhile")
    logger.info("job %s: %s (%s)", job_id, target.value, reason)
    return Outcome(target.value, reason)
