"""Enqueueing adaptation tasks: the task names, and the queue interface the API and the workers use.

Tasks carry the job id only; the worker re-reads everything from the database. Enqueue only after the
transaction that made the job visible has committed.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

TRAIN_TASK = "adaptation.train_head"
EVAL_TASK = "adaptation.evaluate_head"


class QueueUnavailable(Exception):
    """The broker could not be reached."""


class TaskQueue(Protocol):
    def enqueue_training(self, job_id: uuid.UUID) -> None: ...

    def enqueue_evaluation(self, job_id: uuid.UUID) -> None: ...

    def ping(self) -> None:
        """Raise ``QueueUnavailable`` unless the broker answers."""
        ...


class CeleryTaskQueue:
    """``TaskQueue`` over a Celery app (``send_task`` by name: the sender never imports the task code)."""

    def __init__(self, celery_app: Any, train_queue: str, eval_queue: str) -> None:
        self._celery = celery_app
        self._train_queue = train_queue
        self._eval_queue = eval_queue

    def _send(self, name: str, job_id: uuid.UUID, queue: str) -> None:
        try:
            self._celery.send_task(name, args=[str(job_id)], queue=queue, retry=True, retry_policy={"max_retries": 2})
        except Exception as exc:  # kombu raises transport-specific errors (OperationalError, redis errors, ...)
            raise QueueUnavailable(f"could not send {name} for job {job_id}: {exc}") from exc

    def enqueue_training(self, job_id: uuid.UUID) -> None:
        self._send(TRAIN_TASK, job_id, self._train_queue)

    def enqueue_evaluation(self, job_id: uuid.UUID) -> None:
        self._send(EVAL_TASK, job_id, self._eval_queue)

    def ping(self) -> None:
        try:
            with self._celery.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.5, timeout=3)
                conn.default_channel  # virtual transports (Redis, SQLAlchemy) connect here
        except Exception as exc:
            raise QueueUnavailable(str(exc)) from exc
