"""/v1/jobs/{id}, /v1/jobs/{id}/cancel, /v1/jobs/{id}/report"""

from __future__ import annotations

import uuid

from storage.models import HeadStatus
from tests.app.conftest import assert_error
from workers.evaluation import run_evaluation
from workers.training import run_training


def start(client, speaker_id) -> str:
    response = client.post(f"/v1/speakers/{speaker_id}/adaptations", json={"head_type": "linear"})
    assert response.status_code == 202, response.text
    return response.json()["id"]


class TestGetJob:
    def test_reports_state_progress_and_timestamps(self, client, seeded):
        job_id = start(client, seeded.speaker_id)
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["id"] == job_id and job["speaker_id"] == str(seeded.speaker_id)
        assert job["state"] == "queued"
        for key in ("progress", "step", "total_steps", "loss", "attempts", "error", "head_id", "created_at",
                    "started_at", "heartbeat_at", "updated_at", "finished_at", "evaluation"):
            assert key in job
        assert job["created_at"].endswith(("Z", "+00:00"))

    def test_after_the_pipeline_shows_the_head_and_evaluation(self, client, seeded, services):
        job_id = start(client, seeded.speaker_id)
        run_training(services, uuid.UUID(job_id))
        during = client.get(f"/v1/jobs/{job_id}").json()
        assert during["state"] == "evaluating"
        assert during["step"] == 3 and during["loss"] is not None and during["progress"] > 0
        run_evaluation(services, uuid.UUID(job_id))
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["state"] == "promoted"
        assert job["progress"] == 1.0
        assert job["finished_at"] is not None
        assert job["head_id"] is not None
        evaluation = job["evaluation"]
        assert evaluation["decision"] == "promote"
        assert evaluation["candidate_wer"] < evaluation["base_wer"]
        assert evaluation["in_service_wer"] is None
        assert evaluation["eval_utterances"] == 2
        assert "base model" in evaluation["reason"]

    def test_unknown_job_is_404(self, client):
        assert_error(client.get(f"/v1/jobs/{uuid.uuid4()}"), 404, "job_not_found")

    def test_another_tenants_job_is_404(self, client, other):
        job_id = start(other, other.speaker_id)
        assert_error(client.get(f"/v1/jobs/{job_id}"), 404, "job_not_found")


class TestCancelJob:
    def test_cancels_a_queued_job_and_frees_the_speaker(self, client, seeded):
        job_id = start(client, seeded.speaker_id)
        response = client.post(f"/v1/jobs/{job_id}/cancel")
        assert response.status_code == 200, response.text
        assert response.json()["state"] == "cancelled"
        assert response.json()["finished_at"] is not None
        start(client, seeded.speaker_id)  # no 409: the slot is free

    def test_cancelling_while_evaluating_rejects_the_candidate(self, client, seeded, services):
        job_id = start(client, seeded.speaker_id)
        run_training(services, uuid.UUID(job_id))
        assert client.post(f"/v1/jobs/{job_id}/cancel").json()["state"] == "cancelled"
        heads = client.get(f"/v1/speakers/{seeded.speaker_id}/heads").json()["items"]
        assert [h["status"] for h in heads] == [HeadStatus.rejected.value]
        assert run_evaluation(services, uuid.UUID(job_id)).action == "noop"

    def test_a_finished_job_is_409(self, client, seeded):
        job_id = start(client, seeded.speaker_id)
        client.post(f"/v1/jobs/{job_id}/cancel")
        assert_error(client.post(f"/v1/jobs/{job_id}/cancel"), 409, "job_not_cancellable")

    def test_unknown_job_is_404(self, client):
        assert_error(client.post(f"/v1/jobs/{uuid.uuid4()}/cancel"), 404, "job_not_found")

    def test_another_tenants_job_is_404_and_keeps_running(self, client, other):
        job_id = start(other, other.speaker_id)
        assert_error(client.post(f"/v1/jobs/{job_id}/cancel"), 404, "job_not_found")
        assert other.get(f"/v1/jobs/{job_id}").json()["state"] == "queued"


class TestJobReport:
    def test_has_per_utterance_hypotheses(self, client, seeded, services):
        job_id = start(client, seeded.speaker_id)
        run_training(services, uuid.UUID(job_id))
        run_evaluation(services, uuid.UUID(job_id))
        report = client.get(f"/v1/jobs/{job_id}/report").json()
        assert report["decision"] == "promote"
        assert len(report["utterances"]) == 2
        row = report["utterances"][0]
        assert row["candidate"]["errors"] == 0 and row["base"]["errors"] > 0
        assert row["base"]["text"] and row["reference_text"]

    def test_before_evaluation_is_404(self, client, seeded):
        job_id = start(client, seeded.speaker_id)
        assert_error(client.get(f"/v1/jobs/{job_id}/report"), 404, "report_not_found")

    def test_another_tenants_job_is_404(self, client, other):
        job_id = start(other, other.speaker_id)
        assert_error(client.get(f"/v1/jobs/{job_id}/report"), 404, "job_not_found")
