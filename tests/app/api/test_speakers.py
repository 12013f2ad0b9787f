"""/v1/speakers"""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from storage.models import Speaker, Utterance
from tests.app.conftest import assert_error


class TestCreateSpeaker:
    def test_creates_a_speaker_with_201(self, client):
        response = client.post("/v1/speakers", json={"external_id": "alice-1", "display_name": "Alice"})
        assert response.status_code == 201, response.text
        body = response.json()
        assert uuid.UUID(body["id"])
        assert body["external_id"] == "alice-1"
        assert body["display_name"] == "Alice"
        assert body["utterances"] == {"train": 0, "eval": 0}
        assert body["in_service_head_id"] is None and body["active_job_id"] is None

    def test_empty_body_is_fine(self, client):
        assert client.post("/v1/speakers", json={}).status_code == 201

    def test_duplicate_external_id_in_the_tenant_is_409(self, client):
        assert client.post("/v1/speakers", json={"external_id": "x"}).status_code == 201
        assert_error(client.post("/v1/speakers", json={"external_id": "x"}), 409, "speaker_exists")

    def test_same_external_id_in_another_tenant_is_allowed(self, client, other):
        assert client.post("/v1/speakers", json={"external_id": "x"}).status_code == 201
        assert other.post("/v1/speakers", json={"external_id": "x"}).status_code == 201

    def test_unknown_field_is_422(self, client):
        assert_error(client.post("/v1/speakers", json={"nickname": "a"}), 422, "validation_error")

    def test_malformed_json_is_422(self, client):
        response = client.post("/v1/speakers", content=b"{nope", headers={"Content-Type": "application/json"})
        assert_error(response, 422, "validation_error")

    def test_without_a_key_is_401(self, anon):
        response = anon.post("/v1/speakers", json={})
        assert_error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"] == "Bearer"

    def test_with_a_wrong_key_is_401(self, anon):
        response = anon.post("/v1/speakers", json={}, headers={"Authorization": "Bearer hra_wrong"})
        assert_error(response, 401, "unauthorized")


class TestGetSpeaker:
    def test_returns_the_speaker_with_counts(self, client, seeded):
        body = client.get(f"/v1/speakers/{seeded.speaker_id}").json()
        assert body["id"] == str(seeded.speaker_id)
        assert body["utterances"] == {"train": 4, "eval": 2}
        assert body["enrolled_seconds"] == 3.0

    def test_unknown_speaker_is_404(self, client):
        assert_error(client.get(f"/v1/speakers/{uuid.uuid4()}"), 404, "speaker_not_found")

    def test_another_tenants_speaker_is_404(self, client, other):
        assert_error(client.get(f"/v1/speakers/{other.speaker_id}"), 404, "speaker_not_found")

    def test_malformed_id_is_422(self, client):
        assert_error(client.get("/v1/speakers/not-a-uuid"), 422, "validation_error")


class TestListSpeakers:
    def test_lists_only_the_callers_speakers(self, client, other, seeded):
        ids = [s["id"] for s in client.get("/v1/speakers").json()["items"]]
        assert ids == [str(seeded.speaker_id)]

    def test_bad_limit_is_422(self, client):
        assert_error(client.get("/v1/speakers?limit=0"), 422, "validation_error")


class TestDeleteSpeaker:
    def test_erases_objects_then_rows(self, client, seeded, services):
        store = services.object_store
        prefix = f"tenants/{seeded.tenant_id}/speakers/{seeded.speaker_id}/"
        assert len(store.list_keys(prefix)) == 6
        response = client.delete(f"/v1/speakers/{seeded.speaker_id}")
        assert response.status_code == 204
        assert response.content == b""
        assert store.list_keys(prefix) == []
        with services.session_factory() as db:
            assert db.get(Speaker, seeded.speaker_id) is None
            assert db.scalar(select(func.count()).select_from(Utterance)) == 0
        assert_error(client.get(f"/v1/speakers/{seeded.speaker_id}"), 404, "speaker_not_found")

    def test_erases_jobs_and_heads_too(self, client, seeded, services):
        from tests.app.api.test_heads import promote_a_head

        head_id = promote_a_head(client, services, seeded)
        assert client.delete(f"/v1/speakers/{seeded.speaker_id}").status_code == 204
        assert_error(client.get(f"/v1/heads/{head_id}"), 404, "head_not_found")
        assert_error(client.get(f"/v1/heads/{head_id}/artifact"), 404, "head_not_found")

    def test_unknown_speaker_is_404(self, client):
        assert_error(client.delete(f"/v1/speakers/{uuid.uuid4()}"), 404, "speaker_not_found")

    def test_another_tenants_speaker_is_404_and_untouched(self, client, other):
        assert_error(client.delete(f"/v1/speakers/{other.speaker_id}"), 404, "speaker_not_found")
        assert other.get(f"/v1/speakers/{other.speaker_id}").status_code == 200
