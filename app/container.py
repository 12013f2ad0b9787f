"""The composition root: the settings and the backing services one process uses.

The API keeps one ``Services`` on ``app.state``; each worker process builds one at start-up. Tests build one
with a temporary SQLite database, a local object store, a fake ``MLService`` and a recording ``TaskQueue``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from app.ml import HRAMLService, MLService
from app.services.queue import CeleryTaskQueue, TaskQueue
from app.settings import Settings
from storage.objects import ObjectStore


@dataclass
class Services:
    settings: Settings
    session_factory: sessionmaker[Session]
    object_store: ObjectStore
    ml: MLService
    queue: TaskQueue


def build_services(settings: Settings) -> Services:
    """The real services for ``settings``: database, object store, Celery broker, the hra foundation (lazy)."""
    from storage.db import make_engine, make_session_factory
    from storage.objects import make_object_store
    from workers.celery_app import create_celery_app

    settings.var_dir.mkdir(parents=True, exist_ok=True)
    return Services(
        settings=settings,
        session_factory=make_session_factory(make_engine(settings.database_url)),
        object_store=make_object_store(settings),
        ml=HRAMLService(settings),
        queue=CeleryTaskQueue(create_celery_app(settings), settings.train_queue, settings.eval_queue),
    )
