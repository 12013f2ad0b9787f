"""A real API process (uvicorn, the production app) whose model is the fake: ``python -m tests.reliability.fake_api
CONFIG.json``. Settings come from the environment (``HRA_*``), as for ``hra api``; the database, object store and
broker are real. CONFIG: {"host": "127.0.0.1", "port": 8123, "truth": {fingerprint: transcript}}.
"""

from __future__ import annotations

import json
import sys

import uvicorn

from app.container import Services, object_store_from_settings
from app.main import create_app
from app.services.queue import CeleryTaskQueue, create_celery_app
from app.settings import get_settings
from storage.db import make_engine, make_session_factory
from tests.app.fakes import FakeML


def run(config_path: str) -> int:
    with open(config_path) as handle:
        config = json.load(handle)
    settings = get_settings()
    services = Services(
        settings=settings,
        session_factory=make_session_factory(make_engine(settings.database_url)),
        object_store=object_store_from_settings(settings),
        ml=FakeML(truth=config.get("truth", {})),
        queue=CeleryTaskQueue(create_celery_app(settings), settings.train_queue, settings.eval_queue),
    )
    uvicorn.run(
        create_app(services=services),
        host=config.get("host", "127.0.0.1"),
        port=int(config["port"]),
        log_level=config.get("log_level", "warning"),
        timeout_graceful_shutdown=5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1]))
