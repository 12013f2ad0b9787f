"""/v1/speakers/{id}/utterances"""

from __future__ import annotations

import io
import uuid

import soundfile as sf

from tests.app.conftest import assert_error
from tests.app.fakes import tone


def upload(client, speaker_id, audio: bytes | None = None, transcript: str | None = "hello there", split: str | None = "train", name="a.wav"):
    data = {}
    if transcript is not None:
        data["transcript"] = transcript
    if split is not None:
        data["split"] = split
    files = {"audio": (name, audio if audio is not None else tone(1.0), "audio/wav")}
    return client.post(f"/v1/speakers/{speaker_id}/utterances", files=files, data=data)


class TestUploadUtterance:
    def test_stores_normalized_flac_and_returns_201(self, client, seeded, services):
        response = upload(client, seeded.speaker_id, tone(1.5, rate=44100, channels=2), "  Hello   world ", "eval")
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["split"] == "eval"
        assert body["duration_s"] == 1.5
        assert body["transcript"] == "Hello world"
        assert (body["original_sample_rate"], body["original_channels"], body["sample_rate"]) == (44100, 2, 16000)
        key = f"tenants/{seeded.tenant_id}/speakers/{seeded.speaker_id}/utterances/{body['id']}.flac"
        stored = services.object_store.get(key)
        info = sf.info(io.BytesIO(stored))
        assert (info.format, info.samplerate, info.channels) == ("FLAC", 16000, 1)
        import hashlib

        assert body["sha256"] == hashlib.sha256(stored).hexdigest()

    def test_client_file_name_never_reaches_the_key(self, client, seeded, services):
        body = upload(client, seeded.speaker_id, name="../../etc/passwd").json()
        keys = services.object_store.list_keys(f"tenants/{seeded.tenant_id}/speakers/{seeded.speaker_id}/")
        assert any(k.endswith(f"{body['id']}.flac") for k in keys)
        assert not any("passwd" in k for k in keys)

    def test_without_split_a_stable_hash_decides(self, client, seeded):
        for i in range(4):
            audio = tone(0.5, freq=1000 + 11 * i)
            first = upload(client, seeded.speaker_id, audio, split=None).json()["split"]
            again = upload(client, seeded.speaker_id, audio, split=None).json()["split"]
            assert first == again  # the same recording always lands on the same side

    def test_split_is_case_insensitive(self, client, seeded):
        assert upload(client, seeded.speaker_id, split="EVAL").json()["split"] == "eval"

    def test_empty_transcript_is_422(self, client, seeded):
        assert_error(upload(client, seeded.speaker_id, transcript="   "), 422, "empty_transcript")

    def test_missing_transcript_is_422(self, client, seeded):
        assert_error(upload(client, seeded.speaker_id, transcript=None), 422, "empty_transcript")

    def test_bad_split_is_422(self, client, seeded):
        assert_error(upload(client, seeded.speaker_id, split="test"), 422, "invalid_split")

    def test_non_audio_is_422(self, client, seeded):
        assert_error(upload(client, seeded.speaker_id, b"this is not audio at all" * 10), 422, "invalid_audio")

    def test_empty_file_is_422(self, client, seeded):
        assert_error(upload(client, seeded.speaker_id, b""), 422, "empty_audio")

    def test_too_short_audio_is_422(self, client, seeded):
        assert_error(upload(client, seeded.speaker_id, tone(0.1)), 422, "audio_too_short")

    def test_too_long_audio_is_422(self, client, seeded):
        assert_error(upload(client, seeded.speaker_id, tone(6.0, rate=8000)), 422, "audio_too_long")

    def test_too_large_upload_is_413(self, client, seeded):
        assert_error(upload(client, seeded.speaker_id, tone(14.0)), 413, "payload_too_large")

    def test_missing_audio_is_422(self, client, seeded):
        response = client.post(f"/v1/speakers/{seeded.speaker_id}/utterances", data={"transcript": "x"})
        assert_error(response, 422, "validation_error")

    def test_rejected_uploads_leave_nothing_behind(self, client, seeded, services):
        prefix = f"tenants/{seeded.tenant_id}/speakers/{seeded.speaker_id}/"
        before = services.object_store.list_keys(prefix)
        upload(client, seeded.speaker_id, tone(0.1))
        upload(client, seeded.speaker_id, b"junk" * 50)
        assert services.object_store.list_keys(prefix) == before

    def test_unknown_speaker_is_404(self, client):
        assert_error(upload(client, uuid.uuid4()), 404, "speaker_not_found")

    def test_another_tenants_speaker_is_404(self, client, other):
        assert_error(upload(client, other.speaker_id), 404, "speaker_not_found")


class TestListUtterances:
    def test_lists_the_speakers_utterances(self, client, seeded):
        items = client.get(f"/v1/speakers/{seeded.speaker_id}/utterances").json()["items"]
        assert [i["split"] for i in items].count("train") == 4
        assert [i["split"] for i in items].count("eval") == 2
        assert all(i["speaker_id"] == str(seeded.speaker_id) for i in items)

    def test_unknown_speaker_is_404(self, client):
        assert_error(client.get(f"/v1/speakers/{uuid.uuid4()}/utterances"), 404, "speaker_not_found")

    def test_another_tenants_speaker_is_404(self, client, other):
        assert_error(client.get(f"/v1/speakers/{other.speaker_id}/utterances"), 404, "speaker_not_found")
