"""app.services.jobs against real databases: one active job per speaker holds under a race."""

from __future__ import annotations

import threading
import time

import pytest

from app import errors
from app.services import jobs as job_service
from storage.models import HeadType, JobState, Speaker
from tests.app.support import make_services, make_settings, seed_speaker


@pytest.fixture(params=["sqlite", "postgres"])
def services(request, tmp_path):
    from tests.workers.conftest import fresh_database_url

    url = fresh_database_url(request, request.param)
    services = make_services(make_settings(tmp_path, url))
    yield services
    services.session_factory.kw["bind"].dispose()


def test_two_concurrent_requests_get_one_job_and_one_409(services):
    s = seed_speaker(services)
    first = services.session_factory()
    job = job_service.create_job(first, services.settings, first.get(Speaker, s.speaker_id), HeadType.linear)
    outcome: dict = {}

    def second_request() -> None:
        with services.session_factory() as db:
            try:
                # The pre-check cannot see the first job (not committed): only the unique index can stop this one.
                assert job_service.active_job_id(db, s.speaker_id) is None
                job_service.create_job(db, services.settings, db.get(Speaker, s.speaker_id), HeadType.ffn)
                db.commit()
                outcome["result"] = "created"
            except errors.JobAlreadyActive as exc:
                outcome["result"] = exc

    thread = threading.Thread(target=second_request)
    thread.start()
    time.sleep(0.5)  # let the second insert reach the index and wait on the first transaction
    first.commit()
    first.close()
    thread.join(timeout=60)
    assert isinstance(outcome["result"], errors.JobAlreadyActive)
    with services.session_factory() as db:
        assert job_service.active_job_id(db, s.speaker_id) == job.id


def test_transition_is_conditional_on_the_state_it_expects(services):
    s = seed_speaker(services)
    with services.session_factory() as db:
        job = job_service.create_job(db, services.settings, db.get(Speaker, s.speaker_id), HeadType.linear)
        db.commit()
        assert job_service.transition(db, job.id, {JobState.queued}, JobState.training)
        assert not job_service.transition(db, job.id, {JobState.queued}, JobState.training)
        assert job_service.transition(db, job.id, {JobState.training}, JobState.failed, error="boom")
        db.commit()
        job_service.refresh(db, job)
        assert (job.state, job.error, job.active_speaker_id) == (JobState.failed, "boom", None)
        assert job.finished_at is not None
