"""What both stages of a run share: outcomes, transient errors, throttled heartbeats, failing a job."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import OperationalError

from app.container import Services
from app.services import jobs
from app.services.queue import QueueUnavailable
from storage.db import session_scope
from storage.errors import ObjectStoreUnavailable
from storage.models import JobState, Utterance

logger = logging.getLogger(__name__)

# Errors that retrying later can fix: the task shell retries them with backoff (bounded).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ObjectStoreUnavailable, OperationalError, QueueUnavailable)

TRAINING_SHARE = 0.9  # job progress 0..0.9 while training, 0.9..1 while evaluating
HEARTBEAT_INTERVAL_S = 1.0  # at most one progress/heartbeat write (and one cancellation check) per second
KEEP_ALIVE_MAX_INTERVAL_S = 5.0
# The longest a phase may report nothing before the keep-alive stops covering for it: a training's data preparation
# and held-out passes grow with the enrollment; one evaluation batch is 3 systems x EVAL_CHUNK utterances.
TRAINING_MAX_SILENCE_S = 1800.0
EVALUATION_MAX_SILENCE_S = 900.0


def keep_alive_interval_s(stale_after_s: float) -> float:
    """How often ``Reporter.keep_alive`` beats: 5 s, or a quarter of the stale limit if that is shorter."""
    return max(0.05, min(KEEP_ALIVE_MAX_INTERVAL_S, stale_after_s / 4))


@dataclass(frozen=True)
class Outcome:
    """What a run did (for logs and tests): ``action`` is e.g. ``trained``, ``noop``, ``failed``, ``promoted``."""

    action: str
    detail: str = ""


def fail_job(services: Services, job_id: uuid.UUID, error: str, *, attempts: int | None = None) -> bool:
    """Best effort: an active job -> ``failed`` with ``error`` (fenced by ``attempts`` when given)."""
    with session_scope(services.session_factory) as db:
        return jobs.fail(db, job_id, error, at_attempt=attempts)


class Reporter:
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
        self._last_activity = time.monotonic()  # the run's own last report (heartbeat or should_stop)

    def _write(self, values: dict[str, Any]) -> None:
        try:
            with session_scope(self._services.session_factory) as db:
                alive = jobs.heartbeat(db, self._job_id, self._state, self._attempt, **values)
            if not alive:
                self.stopped = True  # cancelled, deleted, or superseded by a newer attempt
        except OperationalError as exc:  # a database hiccup must not kill a long training run
            logger.warning("job %s: heartbeat failed: %s", self._job_id, exc)
        self._last_write = self._last_check = time.monotonic()

    def heartbeat(self, force: bool = False, **values: Any) -> None:
        self._last_activity = time.monotonic()
        self.latest.update(values)
        if force or time.monotonic() - self._last_write >= HEARTBEAT_INTERVAL_S:
            self._write(values)

    def should_stop(self) -> bool:
        self._last_activity = time.monotonic()
        if not self.stopped and time.monotonic() - self._last_check >= HEARTBEAT_INTERVAL_S:
            self._write({})
        return self.stopped

    def start_keep_alive(self, max_silence_s: float) -> Callable[[], None]:
        """Heartbeat from a background thread until the returned function is called, so that phases which report
        no progress (loading the audio, the model's data preparation and held-out passes, a batch of
        transcriptions) never look like a dead worker to the reaper. Beats every ``keep_alive_interval_s``; gives
        up once the run itself has reported nothing (``heartbeat``, ``should_stop``) for ``max_silence_s`` (a hung
        run is then reaped like a dead one), or once the job is found cancelled or taken over (``stopped``)."""
        interval = keep_alive_interval_s(self._services.settings.job_stale_after_seconds)
        done = threading.Event()
        self._last_activity = time.monotonic()

        def beat() -> None:
            while not done.wait(interval) and not self.stopped:
                if time.monotonic() - self._last_activity > max_silence_s:
                    logger.warning(
                        "job %s: no progress for %.0f s; keep-alive stopped (the reaper takes over)",
                        self._job_id, max_silence_s,
                    )
                    return
                if time.monotonic() - self._last_write >= interval:
                    self._write({})

        thread = threading.Thread(target=beat, name=f"hra-keep-alive-{self._job_id}", daemon=True)
        thread.start()

        def stop() -> None:
            done.set()
            thread.join(timeout=30)

        return stop

    @contextmanager
    def keep_alive(self, max_silence_s: float) -> Iterator[None]:
        """``start_keep_alive`` for the duration of a block."""
        stop = self.start_keep_alive(max_silence_s)
        try:
            yield
        finally:
            stop()


def load_waveforms(services: Services, utterances: list[Utterance]) -> list[Any]:
    return [services.ml.decode_audio(services.object_store.get(u.object_key)).waveform for u in utterances]
