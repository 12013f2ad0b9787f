"""The reaper thread each worker runs: ``app.services.jobs.reap_stale_jobs`` every ``reap_interval_s``.

The decisions (requeue or fail a job whose worker stopped reporting) and their writes belong to the jobs
service; this module only schedules them.
"""

from __future__ import annotations

import logging
import threading

from app.container import Services
from app.services.jobs import reap_stale_jobs

logger = logging.getLogger(__name__)


def reap_interval_s(stale_after_s: float) -> float:
    return min(60.0, max(1.0, stale_after_s / 4))


def start_reaper_thread(services: Services, stop: threading.Event | None = None) -> threading.Thread:
    """A daemon thread that reaps every ``reap_interval_s`` until ``stop`` is set."""
    stop = stop or threading.Event()
    interval = reap_interval_s(services.settings.job_stale_after_seconds)

    def loop() -> None:
        while not stop.wait(interval):
            try:
                reap_stale_jobs(services)
            except Exception:  # keep reaping after a database or broker outage
                logger.exception("reaper: pass failed")

    thread = threading.Thread(target=loop, name="hra-reaper", daemon=True)
    thread.start()
    return thread
