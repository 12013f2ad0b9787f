"""The composition root: the settings and the backing services one process uses.

The API keeps one ``Services`` on ``app.state``; each worker process builds one at start-up. Tests build one
with a temporary SQLite database, a local object store, a fake ``MLService`` and a recording ``TaskQueue``.
Storage takes URLs and paths; turning the settings into them happens here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from app.hra_ml import HRAMLService
from app.ml import MLService
from app.services.queue import CeleryTaskQueue, TaskQueue
from app.settings import Settings
from storage.db import make_engine, make_session_factory
from storage.objects import LocalObjectStore, MinioObjectStore, ObjectStore


@dataclass
class Services:
    settings: Settings
    session_factory: sessionmaker[Session]
    object_store: ObjectStore
    ml: MLService
    queue: TaskQueue


def object_store_from_settings(settings: Settings) -> ObjectStore:
    """The store the settings name: ``object_store = "local"`` (``object_store_dir``) or ``"s3"``."""
    if settings.object_store == "local":
        assert settings.object_store_dir is not None  # filled in by Settings
        return LocalObjectStore(settings.object_store_dir)
    if settings.object_store == "s3":
        return MinioObjectStore(
            endpoint=settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            bucket=settings.s3_bucket,
            secure=settings.s3_secure,
            region=settings.s3_region,
        )
    raise ValueError(f"unknown object store {settings.object_store!r}")


def build_services(settings: Settings) -> Services:
    """The real services for ``settings``: database, object store, Celery broker, the hra foundation (lazy)."""
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    return Services(
        settings=settings,
        session_factory=make_session_factory(make_engine(settings.database_url)),
        object_store=object_store_from_settings(settings),
        ml=HRAMLService(settings),
        queue=CeleryTaskQueue.for_settings(settings),
    )
