"""/v1/speakers/{id}/transcriptions and /v1/transcriptions"""

from __future__ import annotations

import uuid

from tests.app.api.test_heads import promote_a_head
from tests.app.conftest import assert_error
from tests.app.fakes import bursts, tone

SAID = "good morning to you all"


def post(client, path, audio: bytes, **data):
    return client.post(path, files={"audio": ("x.wav", audio, "audio/wav")}, data=data)


class TestTranscribeForSpeaker:
    def test_uses_the_base_model_when_no_head_is_in_service(self, client, seeded, ml):
        audio = tone(1.0, freq=3000)
        ml.learn(audio, SAID)
        body = post(client, f"/v1/speakers/{seeded.speaker_id}/transcriptions", audio).json()
        assert body == {"text": "good morning zzz zzz zzz", "head_id": None}

    def test_uses_the_promoted_head(self, client, seeded, services, ml):
        head_id = promote_a_head(client, services, seeded)
        audio = tone(1.0, freq=3000)
        ml.learn(audio, SAID)
        body = post(client, f"/v1/speakers/{seeded.speaker_id}/transcriptions", audio).json()
        assert body == {"text": SAID, "head_id": head_id}

    def test_uses_the_requested_head_version(self, client, seeded, services):
        head_id = promote_a_head(client, services, seeded)
        body = post(client, f"/v1/speakers/{seeded.speaker_id}/transcriptions", tone(1.0), head_id=head_id).json()
        assert body["head_id"] == head_id

    def test_head_of_another_speaker_is_404(self, client, seeded, services):
        head_id = promote_a_head(client, services, seeded)
        other_speaker = client.post("/v1/speakers", json={}).json()["id"]
        response = post(client, f"/v1/speakers/{other_speaker}/transcriptions", tone(1.0), head_id=head_id)
        assert_error(response, 404, "head_not_found")

    def test_incompatible_head_is_409(self, client, seeded, services):
        head_id = promote_a_head(client, services, seeded)
        key = f"tenants/{seeded.tenant_id}/speakers/{seeded.speaker_id}/heads/{head_id}.safetensors"
        services.object_store.put(key, b'{"foundation": "another", "quality": 1}')
        response = post(client, f"/v1/speakers/{seeded.speaker_id}/transcriptions", tone(1.0))
        assert_error(response, 409, "head_not_usable")

    def test_non_audio_is_422(self, client, seeded):
        response = post(client, f"/v1/speakers/{seeded.speaker_id}/transcriptions", b"garbage" * 30)
        assert_error(response, 422, "invalid_audio")

    def test_audio_over_the_transcription_limit_is_422(self, client, seeded):
        response = post(client, f"/v1/speakers/{seeded.speaker_id}/transcriptions", tone(21.0, rate=8000))
        assert_error(response, 422, "audio_too_long")

    def test_long_audio_is_transcribed_in_chunks(self, client, seeded, ml):
        audio = bursts([1.5, 2.0, 1.0], gap=1.0)  # 8.5 s: over the single-pass limit of the test settings
        body = post(client, f"/v1/speakers/{seeded.speaker_id}/transcriptions", audio).json()
        assert body == {"text": " ".join(["unknown speech zzz"] * 3), "head_id": None}
        assert ml.transcribe_calls == 2  # 3 chunks: batches of 1, then 2

    def test_malformed_head_id_is_422(self, client, seeded):
        response = post(client, f"/v1/speakers/{seeded.speaker_id}/transcriptions", tone(1.0), head_id="v1")
        assert_error(response, 422, "validation_error")

    def test_foundation_unavailable_is_503(self, client, seeded, ml):
        ml.available = False
        response = post(client, f"/v1/speakers/{seeded.speaker_id}/transcriptions", tone(1.0))
        assert_error(response, 503, "foundation_unavailable")

    def test_unknown_speaker_is_404(self, client):
        assert_error(post(client, f"/v1/speakers/{uuid.uuid4()}/transcriptions", tone(1.0)), 404, "speaker_not_found")

    def test_another_tenants_speaker_is_404(self, client, other):
        response = post(client, f"/v1/speakers/{other.speaker_id}/transcriptions", tone(1.0))
        assert_error(response, 404, "speaker_not_found")


class TestTranscribeBase:
    def test_uses_the_base_model(self, client, ml):
        audio = tone(1.0, freq=3100)
        ml.learn(audio, SAID)
        assert post(client, "/v1/transcriptions", audio).json() == {"text": "good morning zzz zzz zzz", "head_id": None}

    def test_non_audio_is_422(self, client):
        assert_error(post(client, "/v1/transcriptions", b"garbage" * 30), 422, "invalid_audio")

    def test_without_a_key_is_401(self, anon):
        assert_error(post(anon, "/v1/transcriptions", tone(1.0)), 401, "unauthorized")
