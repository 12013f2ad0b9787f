"""Worker tests run the job functions directly (no Celery) with the fake ML service, on SQLite and on Postgres."""

from __future__ import annotations

import pytest

from tests.app.conftest import app_sqlite_url, migrated_sqlite_template  # noqa: F401 - fixtures, shared
from tests.app.fakes import FakeML, RecordingQueue
from tests.app.support import make_services, make_settings


@pytest.fixture
def ml() -> FakeML:
    return FakeML()


@pytest.fixture
def queue() -> RecordingQueue:
    return RecordingQueue()


def fresh_database_url(request, backend: str) -> str:
    """A migrated database of this test alone: a SQLite file, or a Postgres schema of its own."""
    if backend == "sqlite":
        return request.getfixturevalue("app_sqlite_url")
    return request.getfixturevalue("postgres_url_factory")()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request) -> str:
    return fresh_database_url(request, request.param)


@pytest.fixture
def services(tmp_path, database_url, ml, queue):
    services = make_services(make_settings(tmp_path, database_url), ml, queue)
    yield services
    services.session_factory.kw["bind"].dispose()
