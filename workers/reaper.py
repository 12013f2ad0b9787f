"""The reaper thread each worker runs: ``app.services.jobs.reap_stale_jobs`` every ``reap_interval_s``, and
``app.services.housekeeping.housekeep`` (orphan objects, interrupted erasures) every
``settings.housekeeping_interval_seconds``.

The decisions (requeue or fail a job whose worker stopped reporting; what is an orphan) and their writes belong to
the services; this module only schedules them.
"""

from __future__ import annotations

import logging
import threading
import time

from app.container import Services
from app.services.housekeeping import housekeep
from app.services.jobs import reap_stale_jobs
from workers.progress import TRANSIENT_ERRORS

logger = logging.getLogger(__name__)


def reap_interval_s(stale_after_s: float) -> float:
    return min(60.0, max(1.0, stale_after_s / 4))


def start_reaper_thread(services: Services, stop: threading.Event | None = None) -> threading.Thread:
    """A daemon thread that reaps every ``reap_interval_s`` and housekeeps every ``housekeeping_interval_seconds``
    until ``stop`` is set."""
    stop = stop or threading.Event()
    interval = reap_interval_s(services.settings.job_stale_after_seconds)
    housekeeping_every = services.settings.housekeeping_interval_seconds

    def loop() -> None:
        next_housekeeping = time.monotonic() + housekeeping_every
        while not stop.wait(min(interval, housekeeping_every)):
            try:
                reap_stale_jobs(services)
            except TRANSIENT_ERRORS as exc:  # a database or broker outage: one line a pass, not a traceback
                logger.warning("reaper: pass failed: %s: %s", type(exc).__name__, str(exc).splitlines()[0][:300])
            except Exception:  # keep reaping whatever happened
                logger.exception("reaper: pass failed")
            if time.monotonic() >= next_housekeeping:
                next_housekeeping = time.monotonic() + housekeeping_every
                try:
                    housekeep(services)
                except Exception:  # the next pass tries again
                    logger.exception("housekeeping: pass failed")

    thread = threading.Thread(target=loop, name="hra-reaper", daemon=True)
    thread.start()
    return thread
