"""Real worker processes (``hra worker``) on a real broker: the embedded SQLite transport and Redis.

Only the model is fake (tests/workers/fake_worker.py). The job is created and enqueued exactly as the API does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from app.services.queue import CeleryTaskQueue
from storage.models import JobState
from tests.app.support import create_job, load_job, make_services, make_settings, seed_speaker
from app.services.queue import create_celery_app

REPO = Path(__file__).resolve().parents[2]
TERMINAL = {JobState.promoted, JobState.rejected, JobState.failed, JobState.cancelled}


def worker_env(settings) -> dict[str, str]:
    return {
        **os.environ,
        "HRA_VAR_DIR": str(settings.var_dir),
        "HRA_DATABASE_URL": settings.database_url,
        "HRA_BROKER_URL": settings.broker_url,
        "HRA_OBJECT_STORE": "local",
        "HRA_OBJECT_STORE_DIR": str(settings.object_store_dir),
        "HRA_TRAIN_QUEUE": settings.train_queue,
        "HRA_EVAL_QUEUE": settings.eval_queue,
        "HRA_JOB_STALE_AFTER_SECONDS": str(settings.job_stale_after_seconds),
        "HRA_TASK_MAX_ATTEMPTS": str(settings.task_max_attempts),
        "HRA_MIN_TRAIN_UTTERANCES": str(settings.min_train_utterances),
        "HRA_MIN_EVAL_UTTERANCES": str(settings.min_eval_utterances),
        "HRA_GATE_MIN_EVAL_WORDS": str(settings.gate_min_eval_words),
        "HRA_GATE_CONFIDENCE": str(settings.gate_confidence),
        "HRA_GATE_BOOTSTRAP_SAMPLES": str(settings.gate_bootstrap_samples),
    }


def start_worker(tmp_path: Path, settings, ml, name: str, **config) -> subprocess.Popen:
    config_path = tmp_path / f"{name}.json"
    config_path.write_text(json.dumps({"truth": ml.truth, **config}))
    log = (tmp_path / f"{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "tests.workers.fake_worker", str(config_path)],
        cwd=REPO,
        env=worker_env(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_for(predicate, timeout_s: float, what: str, logs: Path):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    text = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs.glob("*.log"))
    pytest.fail(f"timed out waiting for {what}\n{text}")


@pytest.fixture(params=["sqlite-broker", "redis-broker"])
def broker_url(request, tmp_path) -> str:
    if request.param == "sqlite-broker":
        return f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    return os.environ.get("HRA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def test_a_worker_process_trains_evaluates_and_promotes(tmp_path, sqlite_url, broker_url):
    run_id = uuid.uuid4().hex[:8]
    settings = make_settings(
        tmp_path, sqlite_url, broker_url=broker_url, train_queue=f"train-{run_id}", eval_queue=f"eval-{run_id}"
    )
    services = make_services(settings)
    services.queue = CeleryTaskQueue(create_celery_app(settings), settings.train_queue, settings.eval_queue)
    services.queue.ping()  # creates the SQLite transport's tables before the worker starts
    s = seed_speaker(services)
    worker = start_worker(tmp_path, settings, services.ml, "worker")
    try:
        job_id = create_job(services, s.speaker_id)
        services.queue.enqueue_training(job_id)
        job = wait_for(lambda: (j := load_job(services, job_id)).state in TERMINAL and j, 60, "a terminal state", tmp_path)
        assert job.state is JobState.promoted, job.error
        assert job.attempts == 1
        assert job.evaluation.candidate_wer < job.evaluation.base_wer
    finally:
        stop(worker)


def test_a_job_survives_kill_9_of_its_worker(tmp_path, sqlite_url):
    """Embedded mode: the SQLite transport may lose the killed worker's message; the reaper in the next
    worker notices the silent job and re-queues it; the job completes on its second attempt."""
    settings = make_settings(
        tmp_path,
        sqlite_url,
        broker_url=f"sqla+sqlite:///{tmp_path / 'broker.db'}",
        job_stale_after_seconds=3.0,
    )
    services = make_services(settings)
    services.queue = CeleryTaskQueue(create_celery_app(settings), settings.train_queue, settings.eval_queue)
    services.queue.ping()
    s = seed_speaker(services)
    first = start_worker(tmp_path, settings, services.ml, "first", step_sleep_s=1.0, train_steps=30)
    second = None
    try:
        job_id = create_job(services, s.speaker_id)
        services.queue.enqueue_training(job_id)
        wait_for(lambda: (j := load_job(services, job_id)).state is JobState.training and (j.step or 0) >= 1, 60,
                 "training to start", tmp_path)
        stop(first, signal.SIGKILL)
        assert load_job(services, job_id).state is JobState.training
        second = start_worker(tmp_path, settings, services.ml, "second")
        job = wait_for(lambda: (j := load_job(services, job_id)).state in TERMINAL and j, 90, "recovery", tmp_path)
        assert job.state is JobState.promoted, job.error
        assert job.attempts == 2
    finally:
        stop(first, signal.SIGKILL)
        if second is not None:
            stop(second)
