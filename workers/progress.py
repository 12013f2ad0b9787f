"""What both stages of a run share: outcomes, transient errors, throttled heartbeats, failing a job."""

from __future__ import annotations

import logging
import time
import uuid
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
        self.latest.update(values)
        if force or time.monotonic() - self._last_write >= HEARTBEAT_INTERVAL_S:
            self._write(values)

    def should_stop(self) -> bool:
        if not self.stopped and time.monotonic() - self._last_check >= HEARTBEAT_INTERVAL_S:
            self._write({})
        return self.stopped


def load_waveforms(services: Services, utterances: list[Utterance]) -> list[Any]:
    return [services.ml.decode_audio(services.object_store.get(u.object_key)).waveform for u in utterances]
