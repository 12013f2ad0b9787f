"""API tests: FastAPI's TestClient over a migrated SQLite file, a local object store in tmp_path, the fake
ML service and a task queue that records what would be sent (nothing runs)."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.container import Services
from app.main import create_app
from tests.app.fakes import FakeML, RecordingQueue
from tests.app.support import make_services, make_settings, seed_speaker


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory) -> Path:
    """One SQLite file migrated to head (Alembic) per session; each test gets a copy (much faster than
    migrating per test, same schema)."""
    from storage.migrate import upgrade

    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    with sqlite3.connect(path) as connection:  # fold any WAL into the file, so that copying the file is enough
        connection.execute("PRAGMA journal_mode=DELETE")
    return path


@pytest.fixture
def app_sqlite_url(tmp_path, migrated_sqlite_template) -> str:
    path = tmp_path / "hra.db"
    shutil.copyfile(migrated_sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def ml() -> FakeML:
    return FakeML()


@pytest.fixture
def queue() -> RecordingQueue:
    return RecordingQueue()


@pytest.fixture
def services(tmp_path, app_sqlite_url, ml, queue) -> Iterator[Services]:
    services = make_services(make_settings(tmp_path, app_sqlite_url), ml, queue)
    yield services
    services.session_factory.kw["bind"].dispose()


@pytest.fixture
def app(services):
    return create_app(services=services)


@pytest.fixture
def anon(app) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def seeded(services):
    """Tenant ``acme`` with a speaker that has enough utterances to adapt."""
    return seed_speaker(services, "acme")


@pytest.fixture
def client(anon, seeded) -> TestClient:
    anon.headers["Authorization"] = f"Bearer {seeded.api_key}"
    return anon


@pytest.fixture
def other(app, services) -> Iterator[TestClient]:
    """A client of another tenant, with a speaker of its own."""
    theirs = seed_speaker(services, "globex", offset=20)
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {theirs.api_key}"
        client.speaker_id = theirs.speaker_id  # type: ignore[attr-defined]
        yield client


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]
