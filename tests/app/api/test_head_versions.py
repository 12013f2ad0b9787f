"""POST /v1/heads/{id}/promote and /retire (an operator's rollback, recorded with who and why) and
GET /v1/speakers/{id}/head-events."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from storage.models import HeadEvent
from tests.app.api.test_heads import promote_a_head
from tests.app.conftest import assert_error
from workers.evaluation import run_evaluation
from workers.training import run_training


def run_job(client, services, seeded) -> dict:
    response = client.post(f"/v1/speakers/{seeded.speaker_id}/adaptations", json={"head_type": "linear"})
    job_id = uuid.UUID(response.json()["id"])
    run_training(services, job_id)
    run_evaluation(services, job_id)
    return client.get(f"/v1/jobs/{job_id}").json()


@pytest.fixture
def two_versions(client, services, seeded) -> tuple[str, str]:
    """v1 retired, v2 in service: v1 promoted by its gate, v2 rejected by its own (no better than v1) and then put
    in service by hand."""
    v1 = promote_a_head(client, services, seeded)
    job = run_job(client, services, seeded)
    assert job["state"] == "rejected", job
    v2 = job["head_id"]
    assert client.post(f"/v1/heads/{v2}/promote", json={"reason": "setup"}).status_code == 200
    return v1, v2


def statuses(client, speaker_id) -> dict[int, str]:
    return {h["version"]: h["status"] for h in client.get(f"/v1/speakers/{speaker_id}/heads").json()["items"]}


class TestPromote:
    def test_rolls_back_to_an_earlier_version_and_records_who_and_why(self, client, seeded, two_versions, services):
        v1, v2 = two_versions
        assert statuses(client, seeded.speaker_id) == {1: "retired", 2: "in_service"}
        response = client.post(f"/v1/heads/{v1}/promote", json={"reason": "  v2 mishears   names "})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["head"]["id"] == v1 and body["head"]["status"] == "in_service"
        assert body["head"]["promoted_at"] is not None
        event = body["event"]
        assert event["action"] == "promote"
        assert (event["from_status"], event["to_status"]) == ("retired", "in_service")
        assert event["replaced_head_id"] == v2
        assert event["reason"] == "v2 mishears names"
        assert event["actor"].startswith("tenant acme, key hra_")
        assert seeded.api_key[:12] in event["actor"]
        assert statuses(client, seeded.speaker_id) == {1: "in_service", 2: "retired"}
        assert client.get(f"/v1/speakers/{seeded.speaker_id}").json()["in_service_head_id"] == v1
        with services.session_factory() as db:
            stored = db.scalars(select(HeadEvent)).all()
            assert len(stored) == 2 and all(e.actor_key_id is not None for e in stored)

    def test_the_version_in_service_is_a_conflict(self, client, two_versions):
        _, v2 = two_versions
        error = assert_error(client.post(f"/v1/heads/{v2}/promote", json={"reason": "x"}), 409, "head_status_conflict")
        assert "already in service" in error["message"]

    def test_a_rejected_version_may_be_promoted_by_hand(self, client, seeded, services, two_versions):
        from storage.models import Head, HeadStatus

        v1, _ = two_versions
        with services.session_factory() as db:
            db.get(Head, uuid.UUID(v1)).status = HeadStatus.rejected
            db.commit()
        response = client.post(f"/v1/heads/{v1}/promote", json={"reason": "override the gate"})
        assert response.status_code == 200, response.text
        assert response.json()["event"]["from_status"] == "rejected"

    def test_a_candidate_is_a_conflict(self, client, services, two_versions):
        from storage.models import Head, HeadStatus

        v1, _ = two_versions
        with services.session_factory() as db:
            db.get(Head, uuid.UUID(v1)).status = HeadStatus.candidate
            db.commit()
        error = assert_error(client.post(f"/v1/heads/{v1}/promote", json={"reason": "x"}), 409, "head_status_conflict")
        assert "candidate" in error["message"]

    @pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "x" * 1001}, {"reason": "a\x00b"}])
    def test_a_reason_is_required(self, client, two_versions, body):
        v1, _ = two_versions
        assert_error(client.post(f"/v1/heads/{v1}/promote", json=body), 422, "validation_error")

    def test_a_blank_reason_is_refused(self, client, two_versions):
        v1, _ = two_versions
        assert_error(client.post(f"/v1/heads/{v1}/promote", json={"reason": "   "}), 400, "invalid_request")

    def test_unknown_and_other_tenants_heads_are_404(self, client, other, two_versions):
        v1, _ = two_versions
        assert_error(client.post(f"/v1/heads/{uuid.uuid4()}/promote", json={"reason": "x"}), 404, "head_not_found")
        assert_error(other.post(f"/v1/heads/{v1}/promote", json={"reason": "x"}), 404, "head_not_found")

    def test_needs_a_key(self, app, two_versions):
        from fastapi.testclient import TestClient

        v1, _ = two_versions
        with TestClient(app) as keyless:
            assert_error(keyless.post(f"/v1/heads/{v1}/promote", json={"reason": "x"}), 401, "unauthorized")


class TestRetire:
    def test_takes_the_version_in_service_out(self, client, seeded, two_versions):
        _, v2 = two_versions
        response = client.post(f"/v1/heads/{v2}/retire", json={"reason": "worse than the base model for me"})
        assert response.status_code == 200, response.text
        assert response.json()["head"]["status"] == "retired"
        assert response.json()["event"]["action"] == "retire"
        assert statuses(client, seeded.speaker_id) == {1: "retired", 2: "retired"}
        assert client.get(f"/v1/speakers/{seeded.speaker_id}").json()["in_service_head_id"] is None

    def test_a_version_not_in_service_is_a_conflict(self, client, two_versions):
        v1, _ = two_versions
        error = assert_error(client.post(f"/v1/heads/{v1}/retire", json={"reason": "x"}), 409, "head_status_conflict")
        assert "not in service" in error["message"]


class TestHeadEvents:
    def test_lists_changes_newest_first(self, client, seeded, two_versions):
        v1, v2 = two_versions
        client.post(f"/v1/heads/{v1}/promote", json={"reason": "first"})
        client.post(f"/v1/heads/{v1}/retire", json={"reason": "second"})
        items = client.get(f"/v1/speakers/{seeded.speaker_id}/head-events").json()["items"]
        assert [(e["action"], e["head_id"], e["reason"]) for e in items] == [
            ("retire", v1, "second"),
            ("promote", v1, "first"),
            ("promote", v2, "setup"),
        ]
        assert items[1]["replaced_head_id"] == v2
        assert items[2]["from_status"] == "rejected" and items[2]["replaced_head_id"] == v1

    def test_empty_before_any_change(self, client, seeded):
        assert client.get(f"/v1/speakers/{seeded.speaker_id}/head-events").json() == {"items": []}

    def test_another_tenants_speaker_is_404(self, client, other):
        assert_error(client.get(f"/v1/speakers/{other.speaker_id}/head-events"), 404, "speaker_not_found")
