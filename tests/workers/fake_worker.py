"""A real Celery worker process (``hra worker``) whose model is the fake: ``python -m tests.workers.fake_worker
CONFIG.json``. Everything else (settings from the environment, database, object store, broker, Celery, the
reaper thread) is the production code path.

CONFIG: {"truth": {fingerprint: transcript}, "queues": "train,eval", "step_sleep_s": 0.0, "train_steps": 3,
"train_marker": PATH, "transcribe_sleep_s": 0.0, "transcribe_marker": PATH} (each training step writes its number to
the train marker; each transcription call first touches the transcribe marker, then sleeps: moments and windows in
which a test can kill the worker mid-training or mid-evaluation)
"""

from __future__ import annotations

import json
import sys
import time

from app.cli import main
from app.container import Services, object_store_from_settings
from app.services.queue import CeleryTaskQueue, create_celery_app
from app.settings import get_settings
from storage.db import make_engine, make_session_factory
from tests.app.fakes import FakeML
from workers import runtime


def run(config_path: str) -> int:
    config = json.loads(open(config_path).read())
    settings = get_settings()
    sleep_s = float(config.get("step_sleep_s", 0.0))
    train_marker = config.get("train_marker")

    def on_train_step(step: int) -> None:
        if train_marker:
            with open(train_marker, "w") as marker:
                marker.write(str(step))
        time.sleep(sleep_s)

    ml = FakeML(
        truth=config["truth"],
        train_steps=int(config.get("train_steps", 3)),
        on_train_step=on_train_step if sleep_s or train_marker else None,
    )
    transcribe_sleep_s = float(config.get("transcribe_sleep_s", 0.0))
    marker = config.get("transcribe_marker")
    if transcribe_sleep_s or marker:
        transcribe = ml.transcribe

        def slow_transcribe(waveforms, heads):  # type: ignore[no-untyped-def]
            if marker:
                open(marker, "a").close()
            time.sleep(transcribe_sleep_s)
            return transcribe(waveforms, heads)

        ml.transcribe = slow_transcribe  # type: ignore[method-assign]
    services = Services(
        settings=settings,
        session_factory=make_session_factory(make_engine(settings.database_url)),
        object_store=object_store_from_settings(settings),
        ml=ml,
        queue=CeleryTaskQueue(create_celery_app(settings), settings.train_queue, settings.eval_queue),
    )
    runtime.init_services(settings, services)
    return main(["--log-level=INFO", "worker", f"--queues={config.get('queues', 'train,eval')}"])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1]))
