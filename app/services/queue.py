"""The queue client: task names, the Celery configuration both sides share, and the ``TaskQueue`` interface.

The API and the workers enqueue through ``TaskQueue``; the worker's Celery app (``workers.celery_app``) is built
by ``create_celery_app`` here and adds only its task modules and process signals, so building the API's
services never imports worker code.

Embedded default broker: kombu's SQLAlchemy transport on a SQLite file (``sqla+sqlite:///var/broker.db``), no
server to run. Distributed: Redis or RabbitMQ via ``HRA_BROKER_URL``. Tasks are acknowledged late and rejected
(re-queued) if the worker process is lost, one message is prefetched at a time, there is no result backend (job
state lives in the database), and ``adaptation.train_head`` / ``adaptation.evaluate_head`` are routed to the
``train`` / ``eval`` queues (names from the settings).

Tasks carry the job id only; the worker re-reads everything from the database. Enqueue only after the
transaction that made the job visible has committed.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from celery import Celery

from app.settings import Settings

TRAIN_TASK = "adaptation.train_head"
EVAL_TASK = "adaptation.evaluate_head"


def broker_transport_options(settings: Settings) -> dict:
    url = settings.broker_url
    if url.startswith(("sqla+", "sqlalchemy+")):
        # Passed to sqlalchemy.create_engine by kombu: wait for SQLite's lock instead of failing at once.
        return {"connect_args": {"timeout": 30}} if "sqlite" in url else {}
    if url.startswith(("redis", "rediss", "sqs")):
        # Unacknowledged messages come back after this long: longer than any training run.
        return {"visibility_timeout": int(max(3600, 2 * settings.max_train_seconds + 600))}
    return {}


def create_celery_app(settings: Settings) -> Celery:
    """A Celery app configured for ``settings``: what senders use, and what the worker's app is built from."""
    app = Celery("hra", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        broker_transport_options=broker_transport_options(settings),
        broker_connection_retry_on_startup=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_routes={
            TRAIN_TASK: {"queue": settings.train_queue},
            EVAL_TASK: {"queue": settings.eval_queue},
        },
        task_default_queue=settings.train_queue,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        worker_send_task_events=False,
        enable_utc=True,
    )
    return app


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

    @classmethod
    def for_settings(cls, settings: Settings) -> "CeleryTaskQueue":
        return cls(create_celery_app(settings), settings.train_queue, settings.eval_queue)

    def ping(self) -> None:
        try:
            with self._celery.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.5, timeout=3)
                conn.default_channel  # virtual transports (Redis, SQLAlchemy) connect here
        except Exception as exc:
            raise QueueUnavailable(str(exc)) from exc
