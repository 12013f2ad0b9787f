"""POST /v1/speakers/{id}/adaptations"""

from __future__ import annotations

import uuid

from storage.models import AdaptationJob, JobState
from tests.app.conftest import assert_error
from tests.app.support import add_utterances, seed_speaker


def start(client, speaker_id, **body):
    return client.post(f"/v1/speakers/{speaker_id}/adaptations", json={"head_type": "linear", **body})


class TestStartAdaptation:
    def test_queues_a_job_commits_then_enqueues(self, client, seeded, queue, services):
        response = start(client, seeded.speaker_id, max_train_seconds=30, max_epochs=2)
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["state"] == "queued"
        assert job["progress"] == 0.0
        assert job["head_type"] == "linear"
        assert job["budget"] == {"max_train_seconds": 30.0, "max_epochs": 2}
        assert job["evaluation"] is None and job["head_id"] is None
        assert queue.training == [uuid.UUID(job["id"])]
        with services.session_factory() as db:  # committed: a worker in another process would see it
            assert db.get(AdaptationJob, uuid.UUID(job["id"])).state is JobState.queued

    def test_default_budget_comes_from_the_settings(self, client, seeded, services):
        job = client.post(f"/v1/speakers/{seeded.speaker_id}/adaptations", json={}).json()
        assert job["head_type"] == "linear"
        assert job["budget"]["max_train_seconds"] == services.settings.default_train_seconds

    def test_second_job_while_one_is_active_is_409(self, client, seeded, queue):
        first = start(client, seeded.speaker_id).json()
        error = assert_error(start(client, seeded.speaker_id, head_type="ffn"), 409, "job_already_active")
        assert first["id"] in error["message"]
        assert len(queue.training) == 1

    def test_too_little_data_is_422(self, client, services):
        few = seed_speaker(services, "acme", train=2, eval=2, offset=40)
        error = assert_error(start(client, few.speaker_id), 422, "not_enough_data")
        assert "2 train" in error["message"]
        add_utterances(services, few.speaker_id, train=1, eval=0, offset=50)
        assert start(client, few.speaker_id).status_code == 202

    def test_budget_above_the_limit_is_422(self, client, seeded, services):
        too_long = services.settings.max_train_seconds + 1
        assert_error(start(client, seeded.speaker_id, max_train_seconds=too_long), 422, "invalid_budget")

    def test_unknown_head_type_is_422(self, client, seeded):
        assert_error(start(client, seeded.speaker_id, head_type="lora"), 422, "validation_error")

    def test_unknown_speaker_is_404(self, client):
        assert_error(start(client, uuid.uuid4()), 404, "speaker_not_found")

    def test_another_tenants_speaker_is_404(self, client, other, queue):
        assert_error(start(client, other.speaker_id), 404, "speaker_not_found")
        assert queue.training == []

    def test_broker_down_is_503_and_frees_the_speaker(self, client, seeded, queue):
        queue.available = False
        assert_error(start(client, seeded.speaker_id), 503, "broker_unavailable")
        queue.available = True
        job = start(client, seeded.speaker_id)
        assert job.status_code == 202  # the failed job did not keep the speaker's active slot
        with_state = [j for j in [client.get(f"/v1/jobs/{job.json()['id']}").json()]]
        assert with_state[0]["state"] == "queued"
