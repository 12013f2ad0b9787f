"""Control characters in text fields: 422 ``validation_error`` on SQLite and PostgreSQL (which cannot store NUL,
so it used to answer 500), nothing stored; legitimate Unicode (accents, zero-width joiners) is kept."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.main import create_app
from app.security import create_api_key
from storage.models import Speaker
from tests.app.conftest import assert_error
from tests.app.support import make_services, make_settings

# JSON text, so that a lone surrogate (which no Python str literal can send as UTF-8) goes as its JSON escape.
HOSTILE_JSON_STRINGS = [
    r'"nul\u0000inside"',
    r'"bell\u0007"',
    r'"escape\u001b[31mred"',
    r'"line\nbreak"',
    r'"tab\there"',
    r'"delete\u007f"',
    r'"c1 next line\u0085"',
    r'"lone surrogate \ud800"',
]


@pytest.fixture(params=["sqlite", "postgres"])
def db_client(request, tmp_path, ml, queue):
    url = request.getfixturevalue("app_sqlite_url" if request.param == "sqlite" else "postgres_url")
    services = make_services(make_settings(tmp_path, url), ml, queue)
    with services.session_factory() as db:
        _, key = create_api_key(db, f"tenant-{request.node.name}")
        db.commit()
    with TestClient(create_app(services=services), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        client.headers["Content-Type"] = "application/json"
        yield client, services
    services.session_factory.kw["bind"].dispose()


def _speakers(services) -> int:
    with services.session_factory() as db:
        return db.scalar(select(func.count()).select_from(Speaker))


@pytest.mark.parametrize("field", ["display_name", "external_id"])
@pytest.mark.parametrize("text", HOSTILE_JSON_STRINGS)
def test_control_characters_are_refused_with_422(db_client, field, text):
    client, services = db_client
    before = _speakers(services)
    response = client.post("/v1/speakers", content=f'{{"{field}": {text}}}'.encode())
    error = assert_error(response, 422, "validation_error")
    assert field in error["message"] and "control characters" in error["message"]
    assert _speakers(services) == before


def test_ordinary_unicode_is_stored_as_sent(db_client):
    client, _ = db_client
    # Accents, an emoji sequence joined by U+200D, a right-to-left mark before Hebrew letters.
    name = "Zo\u00eb \u00c5ngstr\u00f6m \U0001f469\u200d\U0001f467 \u200f\u05e2\u05d1"
    body = json.dumps({"display_name": name, "external_id": "zo\u00eb-1"}).encode()
    response = client.post("/v1/speakers", content=body)
    assert response.status_code == 201, response.text
    fetched = client.get(f"/v1/speakers/{response.json()['id']}").json()
    assert (fetched["display_name"], fetched["external_id"]) == (name, "zo\u00eb-1")


@pytest.mark.parametrize("transcript", ["nul\x00inside", "bell\x07", "escape\x1b[31mred", "c1\x85"])
def test_control_characters_in_a_transcript_are_refused_with_422(db_client, transcript):
    from storage.models import Utterance
    from tests.app.fakes import tone

    client, services = db_client
    speaker = client.post("/v1/speakers", content=b'{"display_name": "ana"}').json()
    del client.headers["Content-Type"]
    try:
        response = client.post(
            f"/v1/speakers/{speaker['id']}/utterances",
            files={"audio": ("a.wav", tone(1.0), "audio/wav")},
            data={"transcript": transcript},
        )
    finally:
        client.headers["Content-Type"] = "application/json"
    error = assert_error(response, 422, "validation_error")
    assert "control characters" in error["message"]
    with services.session_factory() as db:
        assert db.scalar(select(func.count()).select_from(Utterance)) == 0


def test_a_transcript_may_hold_tabs_and_newlines(db_client):
    from tests.app.fakes import tone

    client, _ = db_client
    speaker = client.post("/v1/speakers", content=b'{"display_name": "ana"}').json()
    del client.headers["Content-Type"]
    try:
        response = client.post(
            f"/v1/speakers/{speaker['id']}/utterances",
            files={"audio": ("a.wav", tone(1.0), "audio/wav")},
            data={"transcript": "two\tlines\nof text"},
        )
    finally:
        client.headers["Content-Type"] = "application/json"
    assert response.status_code == 201, response.text
