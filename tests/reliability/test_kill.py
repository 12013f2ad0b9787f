"""``kill -9`` of each process, one trial each (``make reliability`` runs many, at random moments): real worker and
API processes with the fake model, on PostgreSQL, Redis and S3 (moto). See tests/reliability/harness.py for the
audit every trial must pass: each job ends once (promoted here), one head version per job, no double promotion,
every acknowledged upload kept, no row without its object, no orphan object after the sweeper."""

from __future__ import annotations

import random
import uuid

import pytest

from tests.conftest import remove_bucket
from tests.reliability.harness import (
    STALE_AFTER_S,
    Stack,
    stack_settings,
    start_workers,
    trial_kill_api,
    trial_kill_eval_worker,
    trial_kill_train_worker,
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, postgres_url, s3_endpoint):
    root = tmp_path_factory.mktemp("kill")
    bucket = f"hra-test-{uuid.uuid4().hex[:16]}"
    stack = Stack(root, stack_settings(root, postgres_url, s3=s3_endpoint, bucket=bucket))
    start_workers(stack)
    yield stack
    stack.close()
    remove_bucket(s3_endpoint, bucket)


def test_kill_9_of_the_train_worker_mid_training(stack):
    result = trial_kill_train_worker(stack, random.Random(0), kill_step=3)
    assert result.audit.ok(), "\n".join(result.audit.problems) + stack.logs()
    assert result.detail["killed_in"] == "training"
    assert result.detail["state"] == "promoted" and result.detail["attempts"] >= 2
    # Back within the documented bound: silent for job_stale_after_seconds, then the next reaper pass (+ 2 trainings).
    assert result.latencies_s[0] < 60
    assert result.audit.orphans_after_sweep == 0 and result.audit.jobs_with_several_heads == 0
    assert stack.procs["worker-train"].starts == 2
    assert STALE_AFTER_S == stack.settings.job_stale_after_seconds


def test_kill_9_of_the_eval_worker_mid_evaluation(stack):
    result = trial_kill_eval_worker(stack, random.Random(0), delay_s=0.3)
    assert result.audit.ok(), "\n".join(result.audit.problems) + stack.logs()
    assert result.detail["killed_in"] == "evaluating"
    assert result.detail["state"] == "promoted" and result.detail["attempts"] >= 2  # the reaper counted one
    assert result.audit.double_promotions == 0


def test_kill_9_of_the_api_during_uploads(stack):
    url = stack.start_api("api")
    result = trial_kill_api(stack, random.Random(0), url, clients=6, kill_after_s=1.0)
    assert result.audit.ok(), "\n".join(result.audit.problems) + stack.logs("api")
    assert result.detail["acked_before_kill"] > 0 and result.detail["acked"] > result.detail["acked_before_kill"]
    assert result.connection_errors > 0  # the clients did see the API go away
    assert result.audit.utterances_lost == 0 and result.audit.half_rows == 0 and result.http_5xx == 0
    assert stack.procs["api"].starts == 2
