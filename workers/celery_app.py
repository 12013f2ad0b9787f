"""The Celery application: broker from the settings, no result backend (job state lives in the database).

Embedded default broker: kombu's SQLAlchemy transport on a SQLite file (``sqla+sqlite:///var/broker.db``), no
server to run. Distributed: Redis or RabbitMQ via ``HRA_BROKER_URL``.

Tasks are acknowledged late and rejected (re-queued) if the worker process is lost, one message is prefetched at
a time, and ``adaptation.train_head`` / ``adaptation.evaluate_head`` are routed to the ``train`` / ``eval``
queues (names from the settings). Workers run the solo pool (``hra worker``): torch and CUDA stay in one process,
no fork. At start-up a worker sets torch's thread count, builds its services, loads the foundation once, and
starts the stale-job reaper thread (``workers.reaper``).
"""

from __future__ import annotations

import logging
import threading

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_shutting_down

from app.services.queue import EVAL_TASK, TRAIN_TASK
from app.settings import Settings, get_settings

logger = logging.getLogger(__name__)


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


# The worker's app (``celery -A workers.celery_app worker`` / ``hra worker``); the tasks register on import.
celery_app = create_celery_app(get_settings())
celery_app.conf.include = ["workers.tasks"]

_init_lock = threading.Lock()
_initialized = threading.Event()
_reaper_stop = threading.Event()


def _init_worker(**_: object) -> None:
    """Once per worker process: torch threads, services, the foundation, the reaper thread."""
    from workers import runtime
    from workers.reaper import start_reaper_thread

    with _init_lock:
        if _initialized.is_set():
            return
        _initialized.set()
        services = runtime.init_services(get_settings())  # keeps services installed beforehand (tests)
        try:
            services.ml.warm_up()
        except Exception:  # the worker stays up; each job then fails with the reason
            logger.exception("the model foundation could not be loaded")
        start_reaper_thread(services, _reaper_stop)


worker_init.connect(_init_worker, weak=False)  # solo/threads pools: the main process runs the tasks
worker_process_init.connect(_init_worker, weak=False)  # prefork children, if someone chooses that pool
worker_shutting_down.connect(lambda **_: _reaper_stop.set(), weak=False)
