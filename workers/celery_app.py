"""The worker's Celery app: the shared configuration (``app.services.queue.create_celery_app``), the task
modules, and the process signals.

Workers run the solo pool (``hra worker``): torch and CUDA stay in one process, no fork. At start-up a worker
sets torch's thread count, builds its services, loads the foundation once, and starts the stale-job reaper
thread (``workers.reaper``).
"""

from __future__ import annotations

import logging
import threading

from celery.signals import worker_init, worker_process_init, worker_shutting_down

from app.services.queue import create_celery_app
from app.settings import get_settings
from workers import runtime
from workers.reaper import start_reaper_thread

logger = logging.getLogger(__name__)

# ``celery -A workers.celery_app worker`` / ``hra worker``; the tasks register on import.
celery_app = create_celery_app(get_settings())
celery_app.conf.include = ["workers.tasks"]

_init_lock = threading.Lock()
_initialized = threading.Event()
_reaper_stop = threading.Event()


def _init_worker(**_: object) -> None:
    """Once per worker process: torch threads, services, the foundation, the reaper thread."""
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
