"""GET /v1/jobs/{id}/events: Server-Sent Events of a job's state and progress, authenticated by the Bearer key."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.api import job_events
from storage.models import AdaptationJob
from tests.app.api.test_heads import promote_a_head
from tests.app.conftest import assert_error
from tests.app.support import create_job


def parse(text: str) -> list[tuple[str, dict]]:
    """(event, data) of each event with data; comments and the retry hint are skipped."""
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "data" in fields:
            events.append((fields.get("event", "message"), json.loads(fields["data"])))
    return events


@pytest.fixture
def fast_stream(monkeypatch):
    monkeypatch.setattr(job_events, "POLL_INTERVAL_S", 0.05)
    monkeypatch.setattr(job_events, "STREAM_LIMIT_S", 1.0)


def test_a_finished_job_streams_its_end_at_once(client, seeded, services):
    head_id = promote_a_head(client, services, seeded)
    job_id = client.get(f"/v1/heads/{head_id}").json()["job_id"]
    response = client.get(f"/v1/jobs/{job_id}/events")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-store"
    assert response.text.startswith("retry: ")
    events = parse(response.text)
    assert [name for name, _ in events] == ["end"]
    final = events[0][1]
    assert final == client.get(f"/v1/jobs/{job_id}").json()
    assert final["state"] == "promoted" and final["evaluation"]["decision"] == "promote"


def test_an_active_job_streams_each_change_then_times_out(client, seeded, services, fast_stream):
    job_id = create_job(services, seeded.speaker_id)

    def progress_later() -> None:
        time.sleep(0.3)
        with services.session_factory() as db:
            db.execute(update(AdaptationJob).where(AdaptationJob.id == job_id).values(progress=0.5, step=3, loss=1.25))
            db.commit()

    writer = threading.Thread(target=progress_later)
    writer.start()
    try:
        response = client.get(f"/v1/jobs/{job_id}/events")
    finally:
        writer.join()
    events = parse(response.text)
    assert [name for name, _ in events] == ["job", "job", "timeout"]
    assert (events[0][1]["state"], events[0][1]["progress"]) == ("queued", 0.0)
    assert (events[1][1]["progress"], events[1][1]["step"], events[1][1]["loss"]) == (0.5, 3, 1.25)
    assert events[2][1] == {"id": str(job_id), "state": "queued"}
    ids = [line for line in response.text.splitlines() if line.startswith("id: ")]
    assert ids == ["id: 1", "id: 2", "id: 3"]


def test_a_deleted_job_ends_the_stream(client, seeded, services, fast_stream):
    job_id = create_job(services, seeded.speaker_id)

    def delete_later() -> None:
        time.sleep(0.2)
        with services.session_factory() as db:
            db.delete(db.get(AdaptationJob, job_id))
            db.commit()

    writer = threading.Thread(target=delete_later)
    writer.start()
    try:
        response = client.get(f"/v1/jobs/{job_id}/events")
    finally:
        writer.join()
    assert [name for name, _ in parse(response.text)] == ["job", "gone"]


def test_unknown_and_other_tenants_jobs_are_404(client, other, services, seeded):
    job_id = create_job(services, seeded.speaker_id)
    assert_error(client.get(f"/v1/jobs/{uuid.uuid4()}/events"), 404, "job_not_found")
    assert_error(other.get(f"/v1/jobs/{job_id}/events"), 404, "job_not_found")


def test_needs_the_key_in_the_header(app, services, seeded):
    job_id = create_job(services, seeded.speaker_id)
    with TestClient(app) as keyless:
        assert_error(keyless.get(f"/v1/jobs/{job_id}/events"), 401, "unauthorized")
        # A key in the URL is not a way in (it would end up in logs and browser history).
        assert_error(keyless.get(f"/v1/jobs/{job_id}/events", params={"key": seeded.api_key}), 401, "unauthorized")
