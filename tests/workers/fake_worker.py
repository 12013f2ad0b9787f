"""A real Celery worker process (``hra worker``) whose model is the fake: ``python -m tests.workers.fake_worker
CONFIG.json``. Everything else (settings from the environment, database, object store, broker, Celery, the
reaper thread) is the production code path.

CONFIG: {"truth": {fingerprint: transcript}, "queues": "train,eval", "step_sleep_s": 0.0, "train_steps": 3}
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
    ml = FakeML(
        truth=config["truth"],
        train_steps=int(config.get("train_steps", 3)),
        on_train_step=(lambda step: time.sleep(sleep_s)) if sleep_s else None,
    )
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
