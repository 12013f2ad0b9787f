"""Celery tasks: thin shells over ``workers.training`` and ``workers.evaluation``. Arguments are job ids; everything else is re-read.

Transient errors (database or object store unreachable, broker down) are retried in place with exponential
backoff for up to ``settings.transient_retry_window_seconds``, at the same attempt and with the job's heartbeat
kept alive (``workers.retry``); then the job is failed with the reason. Any other error has already been
recorded on the job by the stage that met it.
"""

from __future__ import annotations

import logging
import uuid

from celery import Task

from app.services.queue import EVAL_TASK, TRAIN_TASK
from workers import runtime
from workers.celery_app import celery_app
from workers.evaluation import run_evaluation
from workers.retry import run_with_retries
from workers.training import run_training

logger = logging.getLogger(__name__)


def _job_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        logger.error("ignoring a task with a malformed job id %r", value)
        return None


@celery_app.task(name=TRAIN_TASK, bind=True, acks_late=True, ignore_result=True)
def train_head(self: Task, job_id: str) -> str:
    parsed = _job_id(job_id)
    if parsed is None:
        return "ignored"
    redelivered = bool((self.request.delivery_info or {}).get("redelivered")) or self.request.retries > 0
    services = runtime.get_services()
    return run_with_retries(
        services, parsed, lambda held: run_training(services, parsed, redelivered=redelivered, held=held)
    ).action


@celery_app.task(name=EVAL_TASK, bind=True, acks_late=True, ignore_result=True)
def evaluate_head(self: Task, job_id: str) -> str:
    parsed = _job_id(job_id)
    if parsed is None:
        return "ignored"
    services = runtime.get_services()
    return run_with_retries(services, parsed, lambda held: run_evaluation(services, parsed, held=held)).action
