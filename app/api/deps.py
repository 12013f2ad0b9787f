"""FastAPI dependencies: the process's ``Services`` and a database session per request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.container import Services
from app.ml import MLService
from app.services.queue import TaskQueue
from app.settings import Settings
from storage.objects import ObjectStore


def get_services(request: Request) -> Services:
    return request.app.state.services


def get_settings_dep(services: Annotated[Services, Depends(get_services)]) -> Settings:
    return services.settings


def get_db(services: Annotated[Services, Depends(get_services)]) -> Iterator[Session]:
    """One session per request; routes commit at their end, anything uncommitted is rolled back."""
    session = services.session_factory()
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def get_object_store(services: Annotated[Services, Depends(get_services)]) -> ObjectStore:
    return services.object_store


def get_ml_service(services: Annotated[Services, Depends(get_services)]) -> MLService:
    return services.ml


def get_task_queue(services: Annotated[Services, Depends(get_services)]) -> TaskQueue:
    return services.queue


DbSession = Annotated[Session, Depends(get_db)]
AppSettings = Annotated[Settings, Depends(get_settings_dep)]
Store = Annotated[ObjectStore, Depends(get_object_store)]
ML = Annotated[MLService, Depends(get_ml_service)]
Queue = Annotated[TaskQueue, Depends(get_task_queue)]
