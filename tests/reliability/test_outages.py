"""A dependency goes away mid-job and comes back: the object store (S3, moto) or the database (PostgreSQL), each
behind a TCP proxy the test cuts (every connection reset, new ones refused) and restores. The API answers 503 with
a stable code meanwhile; the job's worker retries in place with backoff (``workers/retry.py``) and keeps its job
beating, so the reaper does not take it over; the job completes once the dependency is back."""

from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy.engine import make_url

from storage.models import JobState
from tests.app.fakes import tone
from tests.app.support import create_job, seed_speaker
from tests.reliability.harness import (
    STALE_AFTER_S,
    TERMINAL,
    Stack,
    TcpProxy,
    audit,
    stack_settings,
    start_workers,
)


def training_marker_at_least(stack: Stack, step: int):
    marker = stack.root / "training.marker"

    def reached() -> bool:
        try:
            return int(marker.read_text() or 0) >= step
        except (FileNotFoundError, ValueError):
            return False

    return reached


def upload(url: str, key: str, speaker_id) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/speakers/{speaker_id}/utterances",
        files={"audio": ("u.wav", tone(0.5, 777), "audio/wav")},
        data={"transcript": "unknown speech here"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )


def assert_503(response: httpx.Response, code: str) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == code


@pytest.fixture
def proxies():
    made: list[TcpProxy] = []

    def make(host: str, port: int) -> TcpProxy:
        made.append(TcpProxy(host, port).start())
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


def test_an_object_store_outage_is_503_and_the_job_completes_when_it_returns(
    tmp_path, postgres_url, s3_endpoint, s3_bucket, proxies
):
    host, port = s3_endpoint["endpoint"].split(":")
    proxy = proxies(host, int(port))
    through_proxy = {**s3_endpoint, "endpoint": f"127.0.0.1:{proxy.port}"}
    stack = Stack(tmp_path, stack_settings(tmp_path, postgres_url, s3=through_proxy, bucket=s3_bucket,
                                           transient_retry_window_seconds=120))
    try:
        start_workers(stack, train_steps=8, step_sleep_s=0.3, transcribe_sleep_s=0.0)
        url = stack.start_api()
        seeded = seed_speaker(stack.services, "outage")
        job_id = create_job(stack.services, seeded.speaker_id)
        stack.services.queue.enqueue_training(job_id)
        stack.wait_for(training_marker_at_least(stack, 2), 60, "training to start")

        proxy.cut()
        assert_503(upload(url, seeded.api_key, seeded.speaker_id), "object_store_unavailable")
        # The training ends, storing its head fails, the run retries; longer than the stale limit, so a reaper
        # would have taken the job over if it were not beating.
        time.sleep(3 * 0.3 + 3 * STALE_AFTER_S)
        job = stack.job(job_id)
        assert job.state is JobState.training and job.attempts == 1, job.error
        assert "transient error" in (stack.root / "worker-train.log").read_text()
        jobs_api = httpx.get(f"{url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {seeded.api_key}"})
        assert jobs_api.status_code == 200 and jobs_api.json()["state"] == "training"  # the database still answers

        proxy.restore()
        stack.wait_for(lambda: stack.job(job_id).state in TERMINAL, 90, "the job to complete")
        job = stack.job(job_id)
        assert job.state is JobState.promoted and job.attempts == 1, job.error
        assert upload(url, seeded.api_key, seeded.speaker_id).status_code == 201
        result = audit(stack, [job_id])
        assert result.ok(), result.problems
    finally:
        proxy.restore()
        stack.close()


def test_a_database_outage_is_503_and_the_job_completes_when_it_returns(tmp_path, postgres_url_factory, proxies):
    database_url = postgres_url_factory()
    real = make_url(database_url)
    proxy = proxies(real.host or "127.0.0.1", real.port or 5432)
    through_proxy = real.set(port=proxy.port).render_as_string(hide_password=False)
    stack = Stack(tmp_path, stack_settings(tmp_path, database_url, transient_retry_window_seconds=120))
    stack.override_env(HRA_DATABASE_URL=through_proxy)  # the API and the worker; the test audits directly
    try:
        start_workers(stack, train_steps=8, step_sleep_s=0.3, transcribe_sleep_s=0.0)
        url = stack.start_api()
        seeded = seed_speaker(stack.services, "outage")
        job_id = create_job(stack.services, seeded.speaker_id)
        stack.services.queue.enqueue_training(job_id)
        stack.wait_for(training_marker_at_least(stack, 2), 60, "training to start")

        proxy.cut()
        auth = {"Authorization": f"Bearer {seeded.api_key}"}
        assert_503(httpx.get(f"{url}/v1/speakers", headers=auth, timeout=60), "database_unavailable")
        assert_503(upload(url, seeded.api_key, seeded.speaker_id), "database_unavailable")
        time.sleep(3 * 0.3 + 3 * STALE_AFTER_S)  # training ends; recording its head fails; the run retries
        assert stack.job(job_id).state is JobState.training
        assert "transient error" in (stack.root / "worker-train.log").read_text()

        proxy.restore()
        stack.wait_for(lambda: stack.job(job_id).state in TERMINAL, 90, "the job to complete")
        job = stack.job(job_id)
        # Once the database is back, the reaper may see the silence of the outage before the run's next beat
        # and hand the job to a new attempt: fenced, so still one head, one decision.
        assert job.state is JobState.promoted and job.attempts <= 2, job.error
        assert httpx.get(f"{url}/v1/speakers", headers=auth, timeout=60).status_code == 200
        result = audit(stack, [job_id])
        assert result.ok(), result.problems
    finally:
        proxy.restore()
        stack.close()
