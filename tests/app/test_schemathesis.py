"""Property-based tests over the API's own OpenAPI document (Schemathesis), in process against the ASGI app.

Every operation of the schema gets generated requests, valid and invalid (bounded: ``MAX_EXAMPLES`` each, no
deadline), each sent with both tenants' keys, on SQLite and on PostgreSQL (a freshly seeded database per operation
and backend; PostgreSQL is where a NUL character is an error) with the fake ML service (tests/app/fakes.py) and a
local object store; about a minute in all on a 2-core machine. Path ids are random, or the
ids of rows that exist (then the caller's own rows for one key and the other tenant's, which must look missing,
for the other); audio fields are random bytes or, for some cases, a real recording. Each response must:
- not be a server error (``not_a_server_error``: no 5xx);
- match the documented schema for its status (``response_schema_conformance``);
- have a documented status code (``status_code_conformance``) and content type (``content_type_conformance``).

Excluded, because they cannot work in process under a request/response client:
- ``GET /v1/jobs/{job_id}/events``: Server-Sent Events that stay open until the job ends (no worker runs here);
- the streamed variant of the transcription routes (``stream=true``, text/event-stream): the same;
``/metrics`` and the web app's pages are not in the schema.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select

from app.cli import openapi_document
from app.main import create_app
from storage.models import AdaptationJob, Utterance
from tests.app.conftest import assert_error
from tests.app.fakes import FakeML, RecordingQueue, tone
from tests.app.support import create_job, make_services, make_settings, seed_speaker
from workers.evaluation import run_evaluation
from workers.training import run_training

# Per operation (each sent with both keys); HRA_SCHEMATHESIS_EXAMPLES=500 for a deeper run by hand.
MAX_EXAMPLES = int(os.environ.get("HRA_SCHEMATHESIS_EXAMPLES", "25"))
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]
TENANTS = ("acme", "globex")
AUDIO_FIELDS = ("audio", "file")
SENSIBLE_FIELDS = {"transcript": "hello there", "model": "whisper-1", "response_format": "json", "language": "en"}

# The schema is the app's own document (what ``hra openapi`` prints), loaded when the module is collected:
# Schemathesis needs it then to make one test per operation. (``schemathesis.pytest.from_fixture`` would load it
# from the seeded app instead, but fails under pytest 9: it sets ``Node._nodeid``, which pytest 9 no longer has.)
# Requests go in process to the app of the ``world`` fixture (``app=``).
schema = schemathesis.openapi.from_dict(
    openapi_document(),
    config=schemathesis.Config.from_dict(
        {
            # Examples and fuzzing only: the coverage phase adds hundreds of boundary cases per operation, and
            # the stateful phase follows links, which the document does not declare.
            "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
            "generation": {"max-examples": MAX_EXAMPLES},
        }
    ),
).exclude(path="/v1/jobs/{job_id}/events")


@dataclass
class Seed:
    directory: Path
    keys: dict[str, str]
    # Per tenant, two consistent sets of ids: a speaker with a finished job (its head in service, a report) and
    # a speaker with a queued job (no head: its head_id is the first speaker's).
    ids: dict[str, list[dict[str, str]]]


def _seed_world(directory: Path, url: str) -> Seed:
    services = make_services(make_settings(directory, url), FakeML(), RecordingQueue())
    keys: dict[str, str] = {}
    ids: dict[str, list[dict[str, str]]] = {}
    for n, name in enumerate(TENANTS):
        trained = seed_speaker(services, name, offset=20 * n)
        job_id = create_job(services, trained.speaker_id)
        run_training(services, job_id)
        run_evaluation(services, job_id)
        queued = seed_speaker(services, name, offset=20 * n + 10)
        queued_job = create_job(services, queued.speaker_id)
        keys[name] = queued.api_key
        with services.session_factory() as db:
            head_id = str(db.get(AdaptationJob, job_id).head_id)

            def first_utterance(speaker_id) -> str:
                return str(db.scalar(select(Utterance.id).where(Utterance.speaker_id == speaker_id).limit(1)))

            ids[name] = [
                {
                    "speaker_id": str(speaker_id),
                    "job_id": str(job),
                    "head_id": head_id,
                    "utterance_id": first_utterance(speaker_id),
                    "model": f"speaker:{speaker_id}",
                }
                for speaker_id, job in ((trained.speaker_id, job_id), (queued.speaker_id, queued_job))
            ]
    services.session_factory.kw["bind"].dispose()
    return Seed(directory, keys, ids)


@pytest.fixture(scope="module")
def seed(tmp_path_factory, migrated_sqlite_template) -> Seed:
    """The SQLite world, seeded once; each operation gets a copy."""
    directory = tmp_path_factory.mktemp("schemathesis-seed")
    shutil.copyfile(migrated_sqlite_template, directory / "hra.db")
    seeded = _seed_world(directory, f"sqlite:///{directory / 'hra.db'}")
    with sqlite3.connect(directory / "hra.db") as connection:  # fold the WAL into the file: copying it is enough
        connection.execute("PRAGMA journal_mode=DELETE")
    return seeded


@pytest.fixture(params=["sqlite", "postgres"])
def world(request, tmp_path, seed):
    """SQLite: a fresh copy of the seeded database and objects for each operation (DELETEs do not starve the
    others). PostgreSQL: a fresh schema, seeded the same way, for each operation."""
    if request.param == "sqlite":
        shutil.copyfile(seed.directory / "hra.db", tmp_path / "hra.db")
        shutil.copytree(seed.directory / "objects", tmp_path / "objects")
        url = f"sqlite:///{tmp_path / 'hra.db'}"
    else:
        url = request.getfixturevalue("postgres_url_factory")()
        seed = _seed_world(tmp_path, url)
    services = make_services(make_settings(tmp_path, url), FakeML(), RecordingQueue())
    yield create_app(services=services), seed
    services.session_factory.kw["bind"].dispose()


def _choose(case) -> int:
    """A number derived from the generated values (deterministic for a case; hypothesis's favourite values, such
    as the zero UUID, still spread over the choices)."""
    material = repr(sorted((case.path_parameters or {}).items())) + repr(case.query) + repr(case.body)[:4096]
    return int.from_bytes(hashlib.sha256(material.encode()).digest()[:8], "big")


def _existing_ids(case, seed: Seed, choice: int) -> None:
    """One case in three keeps its random ids; the others use one tenant's rows (one consistent set)."""
    if not case.path_parameters or choice % 3 == 0:
        return
    rows = seed.ids[TENANTS[choice % 3 - 1]][(choice // 3) % 2]
    for name in case.path_parameters:
        if name in rows:
            case.path_parameters[name] = rows[name]


def _real_values(case, choice: int) -> None:
    """One multipart case in two sends a real recording instead of random bytes, and one in two of those sensible
    other fields (the success paths: a stored utterance, a transcription by the OpenAI-compatible route)."""
    if not isinstance(case.body, dict) or (choice // 6) % 2:
        return
    for field in AUDIO_FIELDS:
        if field in case.body:
            case.body[field] = tone(1.0, freq=250.0)
    if (choice // 12) % 2 == 0:
        case.body.update({k: v for k, v in SENSIBLE_FIELDS.items() if k in case.body})
        case.body.pop("split", None)


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case, world):
    app, seed = world
    if isinstance(case.body, dict) and str(case.body.get("stream", "")).lower() in ("true", "1"):
        return  # a streamed transcription (text/event-stream): see the module docstring
    choice = _choose(case)
    _existing_ids(case, seed, choice)
    _real_values(case, choice)
    for tenant in TENANTS:
        case.call_and_validate(app=app, headers={"Authorization": f"Bearer {seed.keys[tenant]}"}, checks=CHECKS)


# ---- what Schemathesis found, pinned (on SQLite and PostgreSQL) -------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def keyed_client(request, tmp_path):
    url = request.getfixturevalue("app_sqlite_url" if request.param == "sqlite" else "postgres_url")
    services = make_services(make_settings(tmp_path, url), FakeML(), RecordingQueue())
    seeded = seed_speaker(services, f"tenant-{uuid.uuid4().hex[:8]}", train=0, eval=0)
    with TestClient(create_app(services=services), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {seeded.api_key}"
        yield client, seeded
    services.session_factory.kw["bind"].dispose()


def test_an_offset_past_any_integer_is_422_not_500(keyed_client):
    client, _ = keyed_client
    assert_error(client.get("/v1/speakers", params={"offset": 2**63}), 422, "validation_error")
    assert_error(client.get("/v1/speakers", params={"offset": 2**31}), 422, "validation_error")
    assert client.get("/v1/speakers", params={"offset": 2**31 - 1}).json() == {"items": []}


def test_bodies_that_cannot_be_parsed_are_a_documented_400(keyed_client):
    client, seeded = keyed_client
    document = openapi_document()["paths"]
    not_utf8 = client.post("/v1/speakers", content=b"\xff\xfe{", headers={"Content-Type": "application/json"})
    assert_error(not_utf8, 400, "bad_request")
    broken_form = client.post(
        f"/v1/speakers/{seeded.speaker_id}/utterances",
        content=b"--b\r\nFalse--b--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert_error(broken_form, 400, "bad_request")
    for path in ("/v1/speakers", "/v1/speakers/{speaker_id}/utterances", "/v1/speakers/{speaker_id}/adaptations",
                 "/v1/transcriptions", "/v1/speakers/{speaker_id}/transcriptions"):
        assert "`bad_request`" in document[path]["post"]["responses"]["400"]["description"], path


def test_a_model_name_with_a_nul_is_not_found_not_500(keyed_client):
    """Postgres refuses NUL in a query parameter: the name was looked up as an external_id (500)."""
    client, _ = keyed_client
    for name in ("a%00b", "x%00", "bell%07"):
        response = client.get(f"/v1/models/{name}")
        assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found", response.text
    response = client.post(
        "/v1/audio/transcriptions", data={"model": "a\x00b"}, files={"file": ("a.wav", tone(1.0), "audio/wav")}
    )
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found", response.text
