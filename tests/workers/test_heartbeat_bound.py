"""The bound on picking up a dead worker's job rests on live workers heartbeating in every phase.

The default stale limit is 60 s (re-queued within 75 s with the reaper's 15-s period); that is only safe if a live
run never goes 60 s without a heartbeat, whatever it is doing. Here the stale limit is 1 s and the phases that
report no progress (loading the audio, a batch of transcriptions) take several seconds, while a reaper runs.
"""

from __future__ import annotations

import threading
import time

import pytest

from app.services.jobs import reap_stale_jobs
from app.settings import Settings
from storage.models import JobState
from tests.app.fakes import FakeML
from tests.app.support import (
    create_job,
    load_job,
    make_services,
    make_settings,
    seed_speaker,
)
from workers import progress
from workers.evaluation import run_evaluation
from workers.progress import Reporter, keep_alive_interval_s
from workers.reaper import reap_interval_s
from workers.training import run_training

STALE_S = 1.0


class SlowML(FakeML):
    """Decoding and transcription take ``slow_s`` per call once ``slow`` is set (after the speaker is seeded)."""

    slow = False
    slow_s = 0.0

    def decode_audio(self, data, max_seconds=None):
        if self.slow:
            time.sleep(self.slow_s)
        return super().decode_audio(data, max_seconds)

    def transcribe(self, waveforms, heads):
        if self.slow:
            time.sleep(self.slow_s)
        return super().transcribe(waveforms, heads)


@pytest.fixture
def slow(tmp_path, database_url):
    services = make_services(make_settings(tmp_path, database_url, job_stale_after_seconds=STALE_S), SlowML())
    yield services
    services.session_factory.kw["bind"].dispose()


def while_reaping(services, run):
    """``run()`` in a thread while this one reaps every 0.1 s; (its outcome, every non-empty reap report)."""
    result: list = []
    worker = threading.Thread(target=lambda: result.append(run()))
    worker.start()
    reports = []
    while worker.is_alive():
        report = reap_stale_jobs(services)
        if report.any():
            reports.append(report.summary())
        time.sleep(0.1)
    worker.join()
    return result[0], reports


def test_the_default_bound_is_well_under_the_old_600_s():
    stale = Settings(_env_file=None).job_stale_after_seconds
    assert stale <= 90
    assert keep_alive_interval_s(stale) <= 5 and keep_alive_interval_s(stale) * 4 <= stale
    assert stale + reap_interval_s(stale) <= 120  # a dead worker's job is back on its queue within this


def test_slow_audio_loading_is_not_mistaken_for_a_dead_worker(slow):
    s = seed_speaker(slow)  # 4 train utterances
    job_id = create_job(slow, s.speaker_id)
    slow.ml.slow, slow.ml.slow_s = True, 0.6  # loading takes 2.4 s without a progress report: over 2x the limit
    outcome, reaped = while_reaping(slow, lambda: run_training(slow, job_id))
    assert reaped == []
    assert outcome.action == "trained", outcome
    job = load_job(slow, job_id)
    assert job.state is JobState.evaluating and job.attempts == 1


def test_a_slow_transcription_batch_is_not_mistaken_for_a_dead_worker(slow):
    s = seed_speaker(slow)
    job_id = create_job(slow, s.speaker_id)
    assert run_training(slow, job_id).action == "trained"
    slow.ml.slow, slow.ml.slow_s = True, 1.2  # 3 transcription calls per batch: 3.6 s between progress reports
    outcome, reaped = while_reaping(slow, lambda: run_evaluation(slow, job_id))
    assert reaped == []
    assert outcome.action == "promoted", outcome
    assert load_job(slow, job_id).attempts == 1


def test_the_keep_alive_stops_covering_a_run_that_reports_nothing_for_too_long(slow):
    s = seed_speaker(slow)
    job_id = create_job(slow, s.speaker_id)
    assert run_training(slow, job_id).action == "trained"
    reporter = Reporter(slow, job_id, JobState.evaluating, attempt=1)
    with reporter.keep_alive(max_silence_s=0.5):
        time.sleep(0.9)
        beat = load_job(slow, job_id).heartbeat_at
        time.sleep(1.0)
        assert load_job(slow, job_id).heartbeat_at == beat  # gave up: a hung run is left to the reaper
    assert progress.EVALUATION_MAX_SILENCE_S < 3600 and progress.TRAINING_MAX_SILENCE_S < 3600
