"""app.services.jobs.reap_stale_jobs and the workers' reaper thread: jobs whose worker stopped reporting are re-queued a bounded number of times, then failed."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from storage.models import AdaptationJob, JobState, utcnow
from tests.app.support import create_job, load_job, seed_speaker
from app.services.jobs import reap_stale_jobs
from workers.reaper import reap_interval_s
from workers.training import run_training


def set_job(services, job_id, **values) -> None:
    with services.session_factory() as db:
        db.execute(update(AdaptationJob).where(AdaptationJob.id == job_id).values(**values))
        db.commit()


def stale(services, extra_s: float = 5.0):
    return utcnow() - timedelta(seconds=services.settings.job_stale_after_seconds + extra_s)


def test_a_stale_training_job_goes_back_to_the_queue_and_is_resent(services, queue):
    s = seed_speaker(services)
    job_id = create_job(services, s.speaker_id)
    set_job(services, job_id, state=JobState.training, attempts=1, heartbeat_at=stale(services))
    report = reap_stale_jobs(services)
    assert report.requeued_training == [job_id]
    job = load_job(services, job_id)
    assert job.state is JobState.queued and job.attempts == 1
    assert "worker stopped" in job.error
    assert job.active_speaker_id == s.speaker_id  # still the speaker's active job
    assert queue.training == [job_id]
    assert run_training(services, job_id).action == "trained"  # the next delivery claims it: attempt 2
    assert load_job(services, job_id).attempts == 2


def test_a_second_pass_does_not_requeue_again(services, queue):
    s = seed_speaker(services)
    job_id = create_job(services, s.speaker_id)
    set_job(services, job_id, state=JobState.training, attempts=1, heartbeat_at=stale(services))
    reap_stale_jobs(services)
    reap_stale_jobs(services)
    assert queue.training == [job_id]


def test_a_job_out_of_attempts_is_failed_with_the_reason(services, queue):
    s = seed_speaker(services)
    job_id = create_job(services, s.speaker_id)
    set_job(services, job_id, state=JobState.training, attempts=3, heartbeat_at=stale(services))
    assert reap_stale_jobs(services).failed == [job_id]
    job = load_job(services, job_id)
    assert job.state is JobState.failed and job.active_speaker_id is None
    assert "gave up after 3 attempts" in job.error and "stopped reporting while training" in job.error
    assert queue.training == []


def test_a_stale_evaluation_is_resent_and_counts_an_attempt(services, queue):
    s = seed_speaker(services)
    job_id = create_job(services, s.speaker_id)
    run_training(services, job_id)
    set_job(services, job_id, heartbeat_at=stale(services))
    assert reap_stale_jobs(services).requeued_evaluation == [job_id]
    job = load_job(services, job_id)
    assert job.state is JobState.evaluating and job.attempts == 2
    assert queue.evaluation == [job_id, job_id]


def test_a_long_queued_job_is_resent(services, queue):
    s = seed_speaker(services)
    job_id = create_job(services, s.speaker_id)
    set_job(services, job_id, created_at=stale(services))
    assert reap_stale_jobs(services).resent_queued == [job_id]
    assert queue.training == [job_id]
    assert load_job(services, job_id).state is JobState.queued


def test_live_and_finished_jobs_are_left_alone(services, queue):
    s = seed_speaker(services)
    live = create_job(services, s.speaker_id)
    set_job(services, live, state=JobState.training, attempts=1, heartbeat_at=utcnow())
    other = seed_speaker(services, "globex", offset=20)
    done = create_job(services, other.speaker_id)
    set_job(services, done, state=JobState.failed, active_speaker_id=None, heartbeat_at=stale(services))
    report = reap_stale_jobs(services)
    assert report.summary() == "requeued for training: 0, requeued for evaluation: 0, queued jobs re-sent: 0, failed: 0"
    assert queue.training == []


def test_the_interval_follows_the_staleness_threshold():
    assert reap_interval_s(600) == 60
    assert reap_interval_s(8) == 2
    assert reap_interval_s(0.5) == 1
