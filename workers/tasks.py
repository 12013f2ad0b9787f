"""Celery tasks: thin shells over ``workers.training`` and ``workers.evaluation``. Arguments are job ids; everything else is re-read.

Transient errors (database or object store unreachable, broker down) are retried with exponential backoff,
at most ``settings.task_max_attempts`` times; then the job is failed with the reason. Any other error has
already been recorded on the job by the stage that met it.
"""

from __future__ import annotations

import logging
import uuid

from celery import Task

from app.services.queue import EVAL_TASK, TRAIN_TASK
from workers import runtime
from workers.celery_app import celery_app
from workers.evaluation import run_evaluation
from workers.progress import TRANSIENT_ERRORS, Outcome, fail_job
from workers.training import run_training

logger = logging.getLogger(__name__)


def _job_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        logger.error("ignoring a task with a malformed job id %r", value)
        return None


def _retry_or_fail(task: Task, job_id: uuid.UUID, exc: BaseException) -> None:
    services = runtime.get_services()
    if task.request.retries >= services.settings.task_max_attempts:
        try:
            fail_job(services, job_id, f"gave up after {task.request.retries} retries: {type(exc).__name__}: {exc}")
        except TRANSIENT_ERRORS:
            logger.exception("job %s: could not record the failure (the reaper will)", job_id)
        return
    countdown = min(300, 5 * 2**task.request.retries)
    logger.warning("job %s: transient error, retrying in %d s: %s", job_id, countdown, exc)
    raise task.retry(exc=exc, countdown=countdown, max_retries=None)


@celery_app.task(name=TRAIN_TASK, bind=True, acks_late=True, ignore_result=True)
def train_head(self: Task, job_id: str) -> str:
    parsed = _job_id(job_id)
    if parsed is None:
        return "ignored"
    redelivered = bool((self.request.delivery_info or {}).get("redelivered")) or self.request.retries > 0
    try:
        outcome: Outcome = run_training(runtime.get_services(), parsed, redelivered=redelivered)
    except TRANSIENT_ERRORS as exc:
        _retry_or_fail(self, parsed, exc)
        return "failed"
    return outcome.action


@celery_app.task(name=EVAL_TASK, bind=True, acks_late=True, ignore_result=True)
def evaluate_head(self: Task, job_id: str) -> str:
    parsed = _job_id(job_id)
    if parsed is None:
        return "ignored"
    try:
        outcome = run_evaluation(runtime.get_services(), parsed)
    except TRANSIENT_ERRORS as exc:
        _retry_or_fail(self, parsed, exc)
        return "failed"
    return outcome.action
