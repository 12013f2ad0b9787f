"""The Celery application's configuration and the task shells (the plumbing, not a worker: see
test_worker_process.py for real worker processes)."""

from __future__ import annotations

import uuid

import pytest

from app.services.queue import EVAL_TASK, TRAIN_TASK
from storage.errors import ObjectStoreUnavailable
from storage.models import JobState
from tests.app.support import create_job, load_job, make_settings, seed_speaker
from workers import runtime
from app.services.queue import broker_transport_options, create_celery_app
from workers.celery_app import celery_app


def test_tasks_are_acked_late_routed_by_queue_and_keep_no_results(tmp_path):
    settings = make_settings(tmp_path, "sqlite://", train_queue="t-1", eval_queue="e-1")
    app = create_celery_app(settings)
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_ignore_result and not conf.result_backend
    assert conf.task_routes == {TRAIN_TASK: {"queue": "t-1"}, EVAL_TASK: {"queue": "e-1"}}


def test_the_worker_app_registers_the_namespaced_tasks():
    import workers.tasks  # noqa: F401

    assert {TRAIN_TASK, EVAL_TASK} <= set(celery_app.tasks)


def test_broker_transport_options_per_transport(tmp_path):
    sqlite = make_settings(tmp_path, "sqlite://", broker_url="sqla+sqlite:///x.db")
    assert broker_transport_options(sqlite) == {"connect_args": {"timeout": 30}}
    redis = make_settings(tmp_path, "sqlite://", broker_url="redis://localhost:6379/0")
    assert broker_transport_options(redis)["visibility_timeout"] >= 3600


@pytest.fixture
def installed(services):
    runtime.reset()
    runtime.init_services(services.settings, services)
    yield services
    runtime.reset()


def test_train_task_runs_the_training_function(installed):
    from workers.tasks import evaluate_head, train_head

    s = seed_speaker(installed)
    job_id = create_job(installed, s.speaker_id)
    assert train_head.apply(args=[str(job_id)]).get() == "trained"
    assert evaluate_head.apply(args=[str(job_id)]).get() == "promoted"


def test_a_malformed_job_id_is_ignored(installed):
    from workers.tasks import train_head

    assert train_head.apply(args=["not-a-uuid"]).get() == "ignored"


def test_transient_errors_are_retried_then_the_job_fails(installed, monkeypatch):
    from workers.tasks import train_head

    s = seed_speaker(installed)
    job_id = create_job(installed, s.speaker_id)

    def down(key):
        raise ObjectStoreUnavailable("store down")

    monkeypatch.setattr(installed.object_store, "get", down)
    train_head.apply(args=[str(job_id)])
    job = load_job(installed, job_id)
    assert job.state is JobState.failed
    assert "gave up" in job.error
    assert job.attempts == installed.settings.task_max_attempts


def test_an_unknown_job_is_a_noop(installed):
    from workers.tasks import evaluate_head

    assert evaluate_head.apply(args=[str(uuid.uuid4())]).get() == "noop"
