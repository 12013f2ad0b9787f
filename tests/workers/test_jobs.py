"""The adaptation pipeline (workers.jobs) against a real database, with the fake model."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.services import jobs as job_service
from storage.errors import ObjectStoreUnavailable
from storage.models import AdaptationJob, Evaluation, Head, HeadStatus, HeadType, JobState, utcnow
from tests.app.support import add_utterances, create_job, load_job, seed_speaker
from workers.evaluation import run_evaluation
from workers.progress import fail_job
from workers.training import run_training


def heads_of(services, speaker_id) -> list[Head]:
    with services.session_factory() as db:
        return list(db.scalars(select(Head).where(Head.speaker_id == speaker_id).order_by(Head.version)))


def set_job(services, job_id, **values) -> None:
    with services.session_factory() as db:
        db.execute(update(AdaptationJob).where(AdaptationJob.id == job_id).values(**values))
        db.commit()


def adapt(services, speaker_id, head_type=HeadType.linear) -> AdaptationJob:
    job_id = create_job(services, speaker_id, head_type)
    run_training(services, job_id)
    run_evaluation(services, job_id)
    return load_job(services, job_id)


class TestTraining:
    def test_trains_stores_the_head_then_queues_evaluation(self, services, queue, ml):
        s = seed_speaker(services)
        job_id = create_job(services, s.speaker_id)
        outcome = run_training(services, job_id)
        assert outcome.action == "trained"
        job = load_job(services, job_id)
        assert job.state is JobState.evaluating
        assert job.attempts == 1
        assert job.progress == pytest.approx(0.9)
        assert (job.step, job.total_steps) == (3, 3)
        assert job.started_at is not None and job.heartbeat_at is not None
        assert queue.evaluation == [job_id]
        (head,) = heads_of(services, s.speaker_id)
        assert job.head_id == head.id
        assert (head.version, head.status, head.head_type) == (1, HeadStatus.candidate, HeadType.linear)
        assert head.parent_head_id is None and head.job_id == job_id
        assert len(head.train_utterance_ids) == 4
        assert head.train_metrics["holdout_loss"] is None  # NaN made JSON-safe
        artifact = services.object_store.get(head.object_key)
        assert head.size_bytes == len(artifact)
        assert json.loads(artifact)["metadata"]["job_id"] == str(job_id)
        assert ml.train_calls[0].utterances == 4 and ml.train_calls[0].init_head is None

    def test_a_delivery_for_a_job_past_training_is_a_noop(self, services, queue, ml):
        s = seed_speaker(services)
        job_id = create_job(services, s.speaker_id)
        run_training(services, job_id)
        assert run_training(services, job_id).action == "noop"
        assert run_training(services, job_id, redelivered=True).action == "noop"
        assert len(ml.train_calls) == 1 and len(heads_of(services, s.speaker_id)) == 1

    def test_a_duplicate_delivery_while_a_live_run_owns_the_job_is_a_noop(self, services, ml):
        s = seed_speaker(services)
        job_id = create_job(services, s.speaker_id)
        set_job(services, job_id, state=JobState.training, attempts=1, heartbeat_at=utcnow())
        assert run_training(services, job_id).action == "noop"
        assert ml.train_calls == []

    def test_a_redelivered_task_restarts_training_and_counts_an_attempt(self, services, ml):
        s = seed_speaker(services)
        job_id = create_job(services, s.speaker_id)
        set_job(services, job_id, state=JobState.training, attempts=1, heartbeat_at=utcnow())
        assert run_training(services, job_id, redelivered=True).action == "trained"
        assert load_job(services, job_id).attempts == 2

    def test_a_stale_training_job_is_restarted_by_any_delivery(self, services):
        s = seed_speaker(services)
        job_id = create_job(services, s.speaker_id)
        stale = utcnow() - timedelta(seconds=services.settings.job_stale_after_seconds + 5)
        set_job(services, job_id, state=JobState.training, attempts=1, heartbeat_at=stale)
        assert run_training(services, job_id).action == "trained"
        assert load_job(services, job_id).attempts == 2

    def test_attempts_are_bounded(self, services, ml):
        s = seed_speaker(services)
        job_id = create_job(services, s.speaker_id)
        set_job(services, job_id, state=JobState.training, attempts=3, heartbeat_at=utcnow(), error="worker lost")
        assert run_training(services, job_id, redelivered=True).action == "failed"
        job = load_job(services, job_id)
        assert job.state is JobState.failed
        assert "gave up after 3 attempts" in job.error and "worker lost" in job.error
        assert job.active_speaker_id is None
        assert ml.train_calls == []

    def test_cancellation_stops_training_and_keeps_nothing(self, services, ml):
        s = seed_speaker(services)
        job_id = create_job(services, s.speaker_id)

        def cancel_at_step_two(step: int) -> None:
            if step == 2:
                with services.session_factory() as db:
                    job_service.transition(db, job_id, {JobState.training}, JobState.cancelled)
                    db.commit()

        ml.on_train_step = cancel_at_step_two
        import workers.progress as jobs_module

        jobs_module.HEARTBEAT_INTERVAL_S, saved = 0.0, jobs_module.HEARTBEAT_INTERVAL_S
        try:
            assert run_training(services, job_id).action == "noop"
        finally:
            jobs_module.HEARTBEAT_INTERVAL_S = saved
        assert load_job(services, job_id).state is JobState.cancelled
        assert heads_of(services, s.speaker_id) == []

    def test_cancellation_after_training_discards_the_artifact(self, services, ml, queue):
        s = seed_speaker(services)
        job_id = create_job(services, s.speaker_id)

        def cancel_after_last_step(step: int) -> None:
            if step == ml.train_steps:
                set_job(services, job_id, state=JobState.cancelled, active_speaker_id=None, finished_at=utcnow())

        ml.on_train_step = cancel_after_last_step
        outcome = run_training(services, job_id)
        assert outcome.action == "noop"
        assert heads_of(services, s.speaker_id) == []
        assert services.object_store.list_keys(f"tenants/{s.tenant_id}/speakers/{s.speaker_id}/heads/") == []
        assert queue.evaluation == []

    def test_a_deleted_job_is_a_noop(self, services):
        assert run_training(services, uuid.uuid4()).action == "noop"

    def test_a_model_error_fails_the_job_with_the_reason(self, services, ml):
        s = seed_speaker(services)
        job_id = create_job(services, s.speaker_id)

        def explode(step: int) -> None:
            raise ValueError("loss is NaN")

        ml.on_train_step = explode
        assert run_training(services, job_id).action == "failed"
        job = load_job(services, job_id)
        assert job.state is JobState.failed
        assert "ValueError: loss is NaN" in job.error
        assert job.active_speaker_id is None
        create_job(services, s.speaker_id)  # the speaker is free again

    def test_an_unavailable_foundation_fails_the_job(self, services, ml):
        s = seed_speaker(services)
        job_id = create_job(services, s.speaker_id)
        ml.available = False
        assert run_training(services, job_id).action == "failed"
        assert "foundation is unavailable" in load_job(services, job_id).error

    def test_transient_store_errors_propagate_for_the_task_to_retry(self, services, monkeypatch):
        s = seed_speaker(services)
        job_id = create_job(services, s.speaker_id)

        def down(key):
            raise ObjectStoreUnavailable("store down")

        monkeypatch.setattr(services.object_store, "get", down)
        with pytest.raises(ObjectStoreUnavailable):
            run_training(services, job_id)
        assert load_job(services, job_id).state is JobState.training  # the retry (redelivered) restarts it

    def test_a_retry_resumes_its_own_attempt_but_never_one_taken_over(self, services, monkeypatch):
        from workers.retry import Held

        s = seed_speaker(services)
        job_id = create_job(services, s.speaker_id)
        real_get = services.object_store.get
        monkeypatch.setattr(services.object_store, "get", lambda key: (_ for _ in ()).throw(ObjectStoreUnavailable("x")))
        held = Held()
        with pytest.raises(ObjectStoreUnavailable):
            run_training(services, job_id, held=held)
        assert held.attempt == 1
        monkeypatch.setattr(services.object_store, "get", real_get)
        # Another worker took the job over meanwhile (attempt 2, beating): the stale holder must not resume it.
        set_job(services, job_id, attempts=2, heartbeat_at=utcnow())
        assert run_training(services, job_id, held=held).action == "noop"
        assert load_job(services, job_id).attempts == 2
        # Its own attempt, untouched: resumed without counting another, and it completes.
        set_job(services, job_id, attempts=1, heartbeat_at=utcnow())
        assert run_training(services, job_id, held=held).action == "trained"
        job = load_job(services, job_id)
        assert job.state is JobState.evaluating and job.attempts == 1


class TestEvaluation:
    def test_promotes_a_better_head_and_records_everything(self, services):
        s = seed_speaker(services)
        job = adapt(services, s.speaker_id)
        assert job.state is JobState.promoted
        assert job.progress == 1.0 and job.finished_at is not None and job.active_speaker_id is None
        (head,) = heads_of(services, s.speaker_id)
        assert head.status is HeadStatus.in_service and head.promoted_at is not None
        ev = job.evaluation
        assert ev.decision.value == "promote"
        assert ev.candidate_wer == 0.0 and ev.base_wer == pytest.approx(0.6)
        assert ev.in_service_wer is None and ev.reference_head_id is None
        assert (ev.eval_utterances, ev.eval_words) == (2, 10)
        assert ev.confidence == 1.0
        report = json.loads(services.object_store.get(ev.report_key))
        assert report["decision"] == "promote"
        assert [u["candidate"]["errors"] for u in report["utterances"]] == [0, 0]
        assert all(u["in_service"] is None for u in report["utterances"])

    def test_rejects_a_head_that_is_not_better(self, services, ml):
        s = seed_speaker(services)
        ml.next_quality = ml.base_quality
        job = adapt(services, s.speaker_id)
        assert job.state is JobState.rejected
        assert heads_of(services, s.speaker_id)[0].status is HeadStatus.rejected
        assert "below the margin" in job.evaluation.reason

    def test_too_few_held_out_words_is_rejected(self, services):
        s = seed_speaker(services)
        services.settings.gate_min_eval_words = 11  # the two held-out utterances have 10 words
        job = adapt(services, s.speaker_id)
        assert job.state is JobState.rejected
        assert "too few held-out words" in job.evaluation.reason

    def test_a_second_delivery_is_a_noop(self, services):
        s = seed_speaker(services)
        job = adapt(services, s.speaker_id)
        assert run_evaluation(services, job.id).action == "noop"
        with services.session_factory() as db:
            assert len(list(db.scalars(select(Evaluation)))) == 1

    def test_a_job_not_yet_trained_is_a_noop(self, services):
        s = seed_speaker(services)
        job_id = create_job(services, s.speaker_id)
        assert run_evaluation(services, job_id).action == "noop"
        assert load_job(services, job_id).state is JobState.queued

    def test_cancelled_during_evaluation_decides_nothing(self, services, ml):
        s = seed_speaker(services)
        job_id = create_job(services, s.speaker_id)
        run_training(services, job_id)
        original = ml.transcribe

        def transcribe_then_cancel(waveforms, heads):
            set_job(services, job_id, state=JobState.cancelled, active_speaker_id=None, finished_at=utcnow())
            return original(waveforms, heads)

        ml.transcribe = transcribe_then_cancel
        assert run_evaluation(services, job_id).action == "noop"
        assert load_job(services, job_id).state is JobState.cancelled
        assert heads_of(services, s.speaker_id)[0].status is HeadStatus.candidate
        with services.session_factory() as db:
            assert db.scalar(select(Evaluation)) is None

    def test_a_candidate_that_does_not_load_fails_the_job(self, services):
        s = seed_speaker(services)
        job_id = create_job(services, s.speaker_id)
        run_training(services, job_id)
        (head,) = heads_of(services, s.speaker_id)
        services.object_store.put(head.object_key, b'{"foundation": "other", "quality": 1}')
        assert run_evaluation(services, job_id).action == "failed"
        job = load_job(services, job_id)
        assert job.state is JobState.failed and "candidate head does not load" in job.error
        assert heads_of(services, s.speaker_id)[0].status is HeadStatus.rejected


class TestContinual:
    def test_a_later_job_warm_starts_and_replaces_the_head_through_the_gate(self, services, ml):
        s = seed_speaker(services)
        ml.next_quality = 0.8
        first = adapt(services, s.speaker_id)
        assert first.state is JobState.promoted
        add_utterances(services, s.speaker_id, train=2, eval=0, offset=10)
        ml.next_quality = 1.0
        second = adapt(services, s.speaker_id)
        assert second.state is JobState.promoted, second.evaluation.reason
        v1, v2 = heads_of(services, s.speaker_id)
        assert (v1.version, v1.status) == (1, HeadStatus.retired)
        assert (v2.version, v2.status) == (2, HeadStatus.in_service)
        assert v2.parent_head_id == v1.id
        assert len(v2.train_utterance_ids) == 6
        assert ml.train_calls[1].init_head["quality"] == 0.8  # warm start from the head in service
        ev = second.evaluation
        assert ev.reference_head_id == v1.id
        assert ev.in_service_wer == pytest.approx(0.2) and ev.candidate_wer == 0.0
        assert "head in service v1" in ev.reason

    def test_a_worse_later_head_is_rejected_and_the_old_one_stays(self, services, ml):
        s = seed_speaker(services)
        adapt(services, s.speaker_id)
        ml.next_quality = 0.5
        second = adapt(services, s.speaker_id)
        assert second.state is JobState.rejected
        v1, v2 = heads_of(services, s.speaker_id)
        assert (v1.status, v2.status) == (HeadStatus.in_service, HeadStatus.rejected)

    def test_another_head_type_starts_cold(self, services, ml):
        s = seed_speaker(services)
        ml.next_quality = 0.8
        adapt(services, s.speaker_id)
        ml.next_quality = 1.0
        second = adapt(services, s.speaker_id, HeadType.ffn)
        assert ml.train_calls[1].init_head is None
        assert heads_of(services, s.speaker_id)[1].parent_head_id is None
        assert second.state is JobState.promoted


def test_fail_job_leaves_finished_jobs_alone(services):
    s = seed_speaker(services)
    job = adapt(services, s.speaker_id)
    assert fail_job(services, job.id, "late failure") is False
    assert load_job(services, job.id).state is JobState.promoted


def test_fail_job_is_fenced_by_the_attempt(services):
    s = seed_speaker(services)
    job_id = create_job(services, s.speaker_id)
    set_job(services, job_id, state=JobState.training, attempts=2, heartbeat_at=utcnow())
    assert fail_job(services, job_id, "from attempt 1", attempts=1) is False  # a superseded run
    assert load_job(services, job_id).state is JobState.training
    assert fail_job(services, job_id, "broker gave up") is True
    job = load_job(services, job_id)
    assert (job.state, job.attempts, job.error) == (JobState.failed, 2, "broker gave up")
