"""/v1/speakers/{id}/heads, /v1/heads/{id}, /v1/heads/{id}/artifact"""

from __future__ import annotations

import hashlib
import json
import uuid

from tests.app.conftest import assert_error
from workers.evaluation import run_evaluation
from workers.training import run_training


def promote_a_head(client, services, seeded) -> str:
    response = client.post(f"/v1/speakers/{seeded.speaker_id}/adaptations", json={"head_type": "linear"})
    job_id = uuid.UUID(response.json()["id"])
    run_training(services, job_id)
    run_evaluation(services, job_id)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "promoted", job
    return job["head_id"]


class TestListHeads:
    def test_lists_versions_with_status_and_metrics(self, client, seeded, services):
        head_id = promote_a_head(client, services, seeded)
        items = client.get(f"/v1/speakers/{seeded.speaker_id}/heads").json()["items"]
        assert [(h["id"], h["version"], h["status"]) for h in items] == [(head_id, 1, "in_service")]
        head = items[0]
        assert head["evaluation"]["decision"] == "promote"
        assert len(head["train_utterance_ids"]) == 4
        assert head["parameters"] == 1234
        assert head["promoted_at"] is not None
        assert client.get(f"/v1/speakers/{seeded.speaker_id}").json()["in_service_head_id"] == head_id

    def test_empty_before_any_adaptation(self, client, seeded):
        assert client.get(f"/v1/speakers/{seeded.speaker_id}/heads").json() == {"items": []}

    def test_unknown_speaker_is_404(self, client):
        assert_error(client.get(f"/v1/speakers/{uuid.uuid4()}/heads"), 404, "speaker_not_found")

    def test_another_tenants_speaker_is_404(self, client, other):
        assert_error(client.get(f"/v1/speakers/{other.speaker_id}/heads"), 404, "speaker_not_found")


class TestGetHead:
    def test_returns_metadata(self, client, seeded, services):
        head_id = promote_a_head(client, services, seeded)
        head = client.get(f"/v1/heads/{head_id}").json()
        assert head["id"] == head_id and head["speaker_id"] == str(seeded.speaker_id)
        assert head["backbone_fingerprint"] == "b" * 64

    def test_unknown_head_is_404(self, client):
        assert_error(client.get(f"/v1/heads/{uuid.uuid4()}"), 404, "head_not_found")

    def test_another_tenants_head_is_404(self, client, seeded, services, other):
        head_id = promote_a_head(client, services, seeded)
        assert_error(other.get(f"/v1/heads/{head_id}"), 404, "head_not_found")


class TestDownloadHead:
    def test_streams_the_artifact(self, client, seeded, services):
        head_id = promote_a_head(client, services, seeded)
        head = client.get(f"/v1/heads/{head_id}").json()
        response = client.get(f"/v1/heads/{head_id}/artifact")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        assert hashlib.sha256(response.content).hexdigest() == head["sha256"]
        assert int(response.headers["content-length"]) == head["size_bytes"]
        assert "safetensors" in response.headers["content-disposition"]
        assert json.loads(response.content)["metadata"]["head_id"] == head_id

    def test_missing_object_is_404(self, client, seeded, services):
        head_id = promote_a_head(client, services, seeded)
        key = f"tenants/{seeded.tenant_id}/speakers/{seeded.speaker_id}/heads/{head_id}.safetensors"
        services.object_store.delete(key)
        assert_error(client.get(f"/v1/heads/{head_id}/artifact"), 404, "artifact_not_found")

    def test_unknown_head_is_404(self, client):
        assert_error(client.get(f"/v1/heads/{uuid.uuid4()}/artifact"), 404, "head_not_found")

    def test_another_tenants_head_is_404(self, client, seeded, services, other):
        head_id = promote_a_head(client, services, seeded)
        assert_error(other.get(f"/v1/heads/{head_id}/artifact"), 404, "head_not_found")
