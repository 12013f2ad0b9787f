"""List endpoints answer in a fixed number of SQL statements, however many rows they return.

Counted on the engine the API uses (``before_cursor_execute``), on SQLite (the API tests' database) and on
PostgreSQL: a tenant with 3 speakers and one with 30, each speaker with utterances, heads (one in service),
finished jobs with evaluations and an active job; the first speaker of each has 3 or 30 heads and utterances.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from app.container import Services
from app.main import create_app
from app.security import create_api_key
from storage.models import (
    AdaptationJob,
    Decision,
    Evaluation,
    Head,
    HeadStatus,
    HeadType,
    JobState,
    Speaker,
    Split,
    Utterance,
)
from tests.app.fakes import FakeML, RecordingQueue
from tests.app.support import make_services, make_settings

SMALL, LARGE = 3, 30
MOST_STATEMENTS = 6  # the API key, the page of rows, and at most three more per list


@pytest.fixture(params=["sqlite", "postgres"])
def list_services(request, tmp_path) -> Iterator[Services]:
    if request.param == "sqlite":
        url = request.getfixturevalue("app_sqlite_url")
    else:
        url = request.getfixturevalue("postgres_url_factory")()
    services = make_services(make_settings(tmp_path, url), FakeML(), RecordingQueue())
    yield services
    services.session_factory.kw["bind"].dispose()


@dataclass
class Tenant:
    api_key: str
    first_speaker_id: uuid.UUID


def _speaker(db, tenant_id: uuid.UUID, n: int, rows: int) -> uuid.UUID:
    """A speaker with ``rows`` utterances, ``rows`` heads (the first in service), each head with its finished
    job and evaluation, and one active job."""
    speaker = Speaker(tenant_id=tenant_id, display_name=f"voice {n}")
    db.add(speaker)
    db.flush()
    for i in range(rows):
        db.add(
            Utterance(
                speaker_id=speaker.id,
                object_key=f"u/{speaker.id}/{i}.flac",
                sha256="0" * 64,
                duration_s=0.5,
                sample_rate=16000,
                original_sample_rate=16000,
                original_channels=1,
                transcript="a few words",
                split=Split.eval if i % 2 else Split.train,
            )
        )
        job = AdaptationJob(speaker_id=speaker.id, head_type=HeadType.linear, state=JobState.promoted)
        db.add(job)
        db.flush()
        head = Head(
            speaker_id=speaker.id,
            job_id=job.id,
            version=i + 1,
            head_type=HeadType.linear,
            status=HeadStatus.in_service if i == 0 else HeadStatus.retired,
            object_key=f"h/{speaker.id}/{i}.safetensors",
            sha256="1" * 64,
            size_bytes=10,
            parameters=10,
            backbone_fingerprint="b" * 64,
            controller_fingerprint="c" * 64,
        )
        db.add(head)
        db.flush()
        job.head_id = head.id
        db.add(
            Evaluation(
                job_id=job.id,
                candidate_head_id=head.id,
                base_wer=0.5,
                candidate_wer=0.25,
                eval_utterances=2,
                eval_words=10,
                confidence=0.95,
                decision=Decision.promote,
                reason="better",
            )
        )
    db.add(AdaptationJob(speaker_id=speaker.id, head_type=HeadType.linear, state=JobState.queued))
    db.flush()
    return speaker.id


def _tenant(services: Services, name: str, speakers: int) -> Tenant:
    with services.session_factory() as db:
        tenant, key = create_api_key(db, name)
        first = _speaker(db, tenant.id, 0, rows=speakers)
        for n in range(1, speakers):
            _speaker(db, tenant.id, n, rows=2)
        db.commit()
    return Tenant(key, first)


@contextmanager
def _counting(services: Services) -> Iterator[list[str]]:
    statements: list[str] = []
    engine = services.session_factory.kw["bind"]

    def record(_conn, _cursor, statement, _params, _context, _executemany) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_list_endpoints_issue_a_fixed_number_of_statements(list_services):
    small = _tenant(list_services, "small", SMALL)
    large = _tenant(list_services, "large", LARGE)
    paths = {
        "speakers": ("/v1/speakers?limit=500", "items", SMALL, LARGE),
        "heads": ("/v1/speakers/{id}/heads", "items", SMALL, LARGE),
        "utterances": ("/v1/speakers/{id}/utterances", "items", SMALL, LARGE),
    }
    with TestClient(create_app(services=list_services)) as client:
        for name, (path, key, small_rows, large_rows) in paths.items():
            counts = []
            for tenant, rows in ((small, small_rows), (large, large_rows)):
                url = path.format(id=tenant.first_speaker_id)
                headers = {"Authorization": f"Bearer {tenant.api_key}"}
                assert client.get(url, headers=headers).status_code == 200  # warm: connections, first-use queries
                with _counting(list_services) as statements:
                    response = client.get(url, headers=headers)
                assert response.status_code == 200, response.text
                assert len(response.json()[key]) == rows
                counts.append(len(statements))
            assert counts[0] == counts[1], (name, counts)
            assert counts[1] <= MOST_STATEMENTS, (name, counts)


def test_the_speaker_list_summarizes_every_speaker(list_services):
    """The batched summaries are each speaker's own (not another's, not the page's totals)."""
    large = _tenant(list_services, "large", LARGE)
    with TestClient(create_app(services=list_services)) as client:
        client.headers["Authorization"] = f"Bearer {large.api_key}"
        items = client.get("/v1/speakers?limit=500").json()["items"]
        heads = client.get(f"/v1/speakers/{large.first_speaker_id}/heads").json()["items"]
        jobs = {i["active_job_id"] for i in items}
    assert len(items) == LARGE and len(jobs) == LARGE and None not in jobs
    first = next(i for i in items if i["id"] == str(large.first_speaker_id))
    assert first["utterances"] == {"train": LARGE // 2, "eval": LARGE // 2}
    assert first["enrolled_seconds"] == LARGE * 0.5
    assert first["in_service_head_id"] == next(h["id"] for h in heads if h["status"] == "in_service")
    others = [i for i in items if i["id"] != str(large.first_speaker_id)]
    assert all(i["utterances"] == {"train": 1, "eval": 1} and i["enrolled_seconds"] == 1.0 for i in others)
    assert len({i["in_service_head_id"] for i in others}) == LARGE - 1
