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


def test_a_store_outage_within_the_window_is_ridden_out_at_the_same_attempt(installed, monkeypatch):
    from workers.tasks import evaluate_head, train_head

    installed.settings.transient_retry_window_seconds = 30.0
    s = seed_speaker(installed)
    job_id = create_job(installed, s.speaker_id)
    real_get, calls = installed.object_store.get, []

    def flaky(key):  # down for the first three reads (backoff 1 + 2 + 4 s would be too slow: patched below)
        calls.append(key)
        if len(calls) <= 3:
            raise ObjectStoreUnavailable("store down")
        return real_get(key)

    monkeypatch.setattr(installed.object_store, "get", flaky)
    monkeypatch.setattr("workers.retry.backoff_s", lambda failures: 0.2)
    assert train_head.apply(args=[str(job_id)]).get() == "trained"
    job = load_job(installed, job_id)
    assert job.state is JobState.evaluating and job.attempts == 1  # resumed, no attempt counted
    assert evaluate_head.apply(args=[str(job_id)]).get() == "promoted"


def test_transient_errors_past_the_window_fail_the_job(installed, monkeypatch):
    from workers.tasks import train_head

    installed.settings.transient_retry_window_seconds = 1.5
    s = seed_speaker(installed)
    job_id = create_job(installed, s.speaker_id)

    def down(key):
        raise ObjectStoreUnavailable("store down")

    monkeypatch.setattr(installed.object_store, "get", down)
    monkeypatch.setattr("workers.retry.backoff_s", lambda failures: 0.3)
    assert train_head.apply(args=[str(job_id)]).get() == "failed"
    job = load_job(installed, job_id)
    assert job.state is JobState.failed
    assert "gave up after" in job.error and "ObjectStoreUnavailable" in job.error
    assert job.attempts == 1


def test_while_waiting_out_an_outage_the_held_job_keeps_beating_until_it_is_taken_over(installed):
    from app.services import jobs
    from storage.db import session_scope
    from workers.retry import Held, _keep_holding, backoff_s
    from workers.training import run_training

    assert [backoff_s(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    installed.settings.job_stale_after_seconds = 0.8  # beats every 0.2 s while waiting
    s = seed_speaker(installed)
    job_id = create_job(installed, s.speaker_id)
    held = Held()
    installed.object_store.get = lambda key: (_ for _ in ()).throw(ObjectStoreUnavailable("down"))
    with pytest.raises(ObjectStoreUnavailable):
        run_training(installed, job_id, held=held)
    assert (held.state, held.attempt) == (JobState.training, 1)
    before = load_job(installed, job_id).heartbeat_at
    assert _keep_holding(installed, job_id, held, 0.5) is True
    assert load_job(installed, job_id).heartbeat_at > before
    with session_scope(installed.session_factory) as db:  # the reaper (or a cancel) takes the job away
        jobs.transition(db, job_id, {JobState.training}, JobState.queued)
    assert _keep_holding(installed, job_id, held, 5.0) is False


def test_an_unknown_job_is_a_noop(installed):
    from workers.tasks import evaluate_head

    assert evaluate_head.apply(args=[str(uuid.uuid4())]).get() == "noop"
