"""POST /v1/audio/transcriptions, GET /v1/models: driven by the official ``openai`` client over real HTTP (uvicorn on
127.0.0.1), with the fake ML (the real model on real speech: tests/app/test_openai_real_model.py)."""

from __future__ import annotations

import io
import json
import re
import threading
import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest
from sqlalchemy import update

from storage.models import Speaker, utcnow
from tests.app.api.test_heads import promote_a_head
from tests.app.fakes import FAKE_NO_SPEECH_PROB, bursts, tone
from tests.app.openai_server import serve

SAID = "good morning to you all"


@pytest.fixture
def base_url(app) -> Iterator[str]:
    with serve(app) as url:
        yield url


@pytest.fixture
def oai(base_url, seeded) -> openai.OpenAI:
    return openai.OpenAI(api_key=seeded.api_key, base_url=f"{base_url}/v1", max_retries=0, timeout=60)


def wav(audio: bytes, name: str = "speech.wav") -> tuple[str, io.BytesIO, str]:
    return (name, io.BytesIO(audio), "audio/wav")


def known(ml, seconds: float = 1.0, freq: float = 3000) -> bytes:
    audio = tone(seconds, freq=freq)
    ml.learn(audio, SAID)
    return audio


def error_of(exc: openai.APIStatusError) -> dict:
    body = exc.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"]
    return body["error"]


def set_external_id(services, speaker_id: uuid.UUID, external_id: str) -> None:
    with services.session_factory() as db:
        db.get(Speaker, speaker_id).external_id = external_id
        db.commit()


class TestModels:
    def test_base_model_to_transcribe(self, oai, ml):
        for model in ("whisper-1", "whisper-tiny.en", "hra-base"):
            result = oai.audio.transcriptions.create(model=model, file=wav(known(ml)))
            assert result.text == "good morning zzz zzz zzz"  # the fake base model gets half the words

    def test_speaker_head_by_id_and_by_external_id(self, oai, client, services, seeded, ml):
        head_id = promote_a_head(client, services, seeded)
        set_external_id(services, seeded.speaker_id, "alice@example")
        audio = known(ml)
        assert oai.audio.transcriptions.create(model=f"speaker:{seeded.speaker_id}", file=wav(audio)).text == SAID
        raw = oai.audio.transcriptions.with_raw_response.create(model="alice@example", file=wav(audio))
        assert raw.parse().text == SAID
        assert raw.headers["x-hra-head-id"] == head_id
        assert raw.headers["x-hra-model"] == f"speaker:{seeded.speaker_id}"

    def test_speaker_without_a_head_uses_the_base_model(self, oai, seeded, ml):
        result = oai.audio.transcriptions.create(model=f"speaker:{seeded.speaker_id}", file=wav(known(ml)))
        assert result.text == "good morning zzz zzz zzz"

    def test_models_list_shows_the_base_and_the_tenants_speakers(self, oai, client, services, seeded, other):
        head_id = promote_a_head(client, services, seeded)
        set_external_id(services, seeded.speaker_id, "alice@example")
        models = oai.models.list()
        ids = [m.id for m in models.data]
        assert ids == ["whisper-tiny.en", "hra-base", "whisper-1", f"speaker:{seeded.speaker_id}"]  # not globex's
        speaker = models.data[-1]
        assert speaker.object == "model" and speaker.owned_by == "acme" and speaker.created > 1_600_000_000
        assert speaker.model_extra == {
            "speaker_id": str(seeded.speaker_id), "external_id": "alice@example", "head_id": head_id
        }
        assert oai.models.retrieve("alice@example").id == f"speaker:{seeded.speaker_id}"
        assert oai.models.retrieve("whisper-1").owned_by == "hra"

    def test_a_speaker_being_erased_is_no_model(self, oai, services, seeded):
        set_external_id(services, seeded.speaker_id, "bob@example")
        with services.session_factory() as db:
            db.execute(update(Speaker).where(Speaker.id == seeded.speaker_id).values(deleted_at=utcnow()))
            db.commit()
        assert f"speaker:{seeded.speaker_id}" not in [m.id for m in oai.models.list().data]
        for model in (f"speaker:{seeded.speaker_id}", "bob@example"):
            with pytest.raises(openai.NotFoundError):
                oai.audio.transcriptions.create(model=model, file=wav(tone(1.0)))

    def test_unknown_model_is_404_in_openai_shape(self, oai, other):
        for model in ("whisper-large-v3", f"speaker:{uuid.uuid4()}", "speaker:not-a-uuid", f"speaker:{other.speaker_id}"):
            with pytest.raises(openai.NotFoundError) as caught:
                oai.audio.transcriptions.create(model=model, file=wav(tone(1.0)))
            assert error_of(caught.value) == {
                "message": f"The model `{model}` does not exist or you do not have access to it.",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
        with pytest.raises(openai.NotFoundError):
            oai.models.retrieve("nobody")

    def test_bad_key_is_401_in_openai_shape(self, base_url):
        bad = openai.OpenAI(api_key="hra_not-a-key", base_url=f"{base_url}/v1", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            bad.audio.transcriptions.create(model="whisper-1", file=wav(tone(1.0)))
        assert error_of(caught.value)["code"] == "invalid_api_key"
        assert caught.value.response.headers["www-authenticate"] == "Bearer"
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()

    def test_other_routes_keep_the_services_error_shape(self, base_url):
        response = httpx.get(f"{base_url}/v1/speakers", headers={"Authorization": "Bearer nope"})
        assert response.status_code == 401 and set(response.json()["error"]) == {"code", "message"}


class TestFormats:
    def test_verbose_json_has_timed_segments_of_long_audio(self, oai, ml):
        # 1 s pause, then bursts of 1.5, 2 and 1 s separated by 1 s pauses: 8.5 s, chunked (test settings: a
        # recording over 4 s is split into chunks of at most 3 s).
        result = oai.audio.transcriptions.create(
            model="whisper-1", file=wav(bursts([1.5, 2.0, 1.0])), response_format="verbose_json",
            timestamp_granularities=["segment"],
        )
        assert result.duration == pytest.approx(8.5)
        assert result.language == "english"
        spans = [(s.start, s.end) for s in result.segments]
        speech = [(1.0, 2.5), (3.5, 5.5), (6.5, 7.5)]
        assert len(spans) == 3
        for (start, end), (s, e) in zip(spans, speech, strict=True):
            assert s - 0.25 <= start <= s and e <= end <= e + 0.25  # padded by 0.2 s
        assert [s.id for s in result.segments] == [0, 1, 2]
        assert result.text == " ".join(s.text for s in result.segments)
        # the decoder's numbers for each chunk (the fake's: a token per word, its length; "zzz" share as log-prob)
        first = result.segments[0]
        assert first.temperature == 0.0 and first.tokens == [len(w) for w in first.text.split()]
        assert first.no_speech_prob == pytest.approx(FAKE_NO_SPEECH_PROB)
        words = first.text.split()
        assert first.avg_logprob == pytest.approx(-words.count("zzz") / len(words), abs=1e-4)
        assert ml.transcribe_calls == 2  # 3 chunks: batches of 1, then 2 (the batch size of the test settings)

    def test_short_audio_is_one_segment_over_the_whole_recording(self, oai, ml):
        result = oai.audio.transcriptions.create(model="whisper-1", file=wav(known(ml, 1.5)), response_format="verbose_json")
        assert [(s.start, s.end, s.text) for s in result.segments] == [(0.0, 1.5, "good morning zzz zzz zzz")]
        assert result.usage.seconds == 2

    def test_text(self, oai, ml):
        assert oai.audio.transcriptions.create(model="whisper-1", file=wav(known(ml)), response_format="text") == (
            "good morning zzz zzz zzz\n"
        )

    def test_srt(self, oai):
        body = oai.audio.transcriptions.create(model="whisper-1", file=wav(bursts([1.5, 2.0])), response_format="srt")
        cues = body.strip().split("\n\n")
        assert len(cues) == 2
        for number, cue in enumerate(cues, 1):
            index, times, text = cue.split("\n")
            assert index == str(number) and text == "unknown speech zzz"
            assert re.fullmatch(r"\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}", times)
        assert cues[0].split("\n")[1] == "00:00:00,790 --> 00:00:02,720"  # speech at 1.0-2.5 s, 30-ms frames, 0.2-s pads

    def test_vtt(self, oai):
        body = oai.audio.transcriptions.create(model="whisper-1", file=wav(bursts([1.5, 2.0])), response_format="vtt")
        assert body.startswith("WEBVTT\n\n")
        cues = body[len("WEBVTT\n\n"):].strip().split("\n\n")
        assert cues[0] == "00:00:00.790 --> 00:00:02.720\nunknown speech zzz"
        assert len(cues) == 2 and re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}", cues[1].split("\n")[0])

    def test_silence_has_no_segments(self, oai):
        result = oai.audio.transcriptions.create(model="whisper-1", file=wav(bursts([], gap=6.0)), response_format="verbose_json")
        assert result.text == "" and result.segments == []


class TestStreaming:
    def test_segments_stream_as_openai_events(self, oai, ml):
        stream = oai.audio.transcriptions.create(model="whisper-1", file=wav(bursts([1.5, 2.0, 1.0])), stream=True)
        events = list(stream)
        assert [e.type for e in events] == ["transcript.text.delta"] * 3 + ["transcript.text.done"]
        assert "".join(e.delta for e in events[:-1]) == events[-1].text == " ".join(["unknown speech zzz"] * 3)
        assert events[0].model_extra["text"] == "unknown speech zzz"  # speaches' {"text": <segment>}
        assert events[-1].to_dict()["usage"] == {"type": "duration", "seconds": 9}  # 8.5 s

    def test_segments_are_sent_as_each_batch_is_decoded(self, oai, ml, monkeypatch):
        first_received = threading.Event()
        batches: list[int] = []
        transcribe = ml.transcribe

        def gated(waveforms, heads):
            if batches:  # the second batch is decoded only once the client holds the first batch's segments
                assert first_received.wait(10), "the first segments were not sent before the whole file was done"
            batches.append(len(waveforms))
            return transcribe(waveforms, heads)

        monkeypatch.setattr(ml, "transcribe", gated)
        events = iter(oai.audio.transcriptions.create(model="whisper-1", file=wav(bursts([1.5, 2.0, 1.0])), stream=True))
        assert next(events).type == "transcript.text.delta"
        first_received.set()
        assert [e.type for e in events] == ["transcript.text.delta"] * 2 + ["transcript.text.done"]
        assert batches == [1, 2]  # batches grow up to the batch size (2 in the test settings)

    def test_sse_framing_per_format(self, base_url, seeded):
        def events(response_format: str) -> list[str]:
            with httpx.stream(
                "POST",
                f"{base_url}/v1/audio/transcriptions",
                headers={"Authorization": f"Bearer {seeded.api_key}"},
                files={"file": ("a.wav", bursts([1.5, 2.0]), "audio/wav")},
                data={"model": "whisper-1", "response_format": response_format, "stream": "true"},
                timeout=60,
            ) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                body = response.read().decode()
            assert body.endswith("\n\n")
            return ["\n".join(line.removeprefix("data: ") for line in e.split("\n")) for e in body[:-2].split("\n\n")]

        verbose = [json.loads(e) for e in events("verbose_json")]
        assert [e["type"] for e in verbose] == ["transcript.text.delta"] * 2 + ["transcript.text.done"]
        assert [e["id"] for e in verbose[:2]] == [0, 1] and verbose[0]["start"] == 0.79
        assert events("text") == ["unknown speech zzz"] * 2
        srt = events("srt")
        assert srt[0] == "1\n00:00:00,790 --> 00:00:02,720\nunknown speech zzz" and srt[1].startswith("2\n")
        assert events("vtt")[1].endswith("\nunknown speech zzz")

    def test_a_head_that_cannot_serve_is_a_status_not_an_event(self, oai, client, services, seeded):
        head_id = promote_a_head(client, services, seeded)
        key = f"tenants/{seeded.tenant_id}/speakers/{seeded.speaker_id}/heads/{head_id}.safetensors"
        services.object_store.put(key, b'{"foundation": "another", "quality": 1}')
        model = f"speaker:{seeded.speaker_id}"
        with pytest.raises(openai.ConflictError) as caught:
            oai.audio.transcriptions.create(model=model, file=wav(bursts([1.5, 2.0])), stream=True)
        assert error_of(caught.value)["code"] == "head_not_usable"
        services.object_store.delete(key)
        with pytest.raises(openai.NotFoundError) as caught:
            oai.audio.transcriptions.create(model=model, file=wav(bursts([1.5, 2.0])), stream=True)
        assert error_of(caught.value)["code"] == "artifact_not_found"

    def test_an_error_after_the_stream_began_is_the_last_event(self, oai, ml):
        ml.available = False
        with pytest.raises(openai.APIError) as caught:
            list(oai.audio.transcriptions.create(model="whisper-1", file=wav(bursts([1.5])), stream=True))
        assert caught.value.body["code"] == "foundation_unavailable"


class TestRequests:
    def test_language_other_than_english_is_400(self, oai, ml):
        assert oai.audio.transcriptions.create(model="whisper-1", file=wav(known(ml)), language="en").text
        with pytest.raises(openai.BadRequestError) as caught:
            oai.audio.transcriptions.create(model="whisper-1", file=wav(tone(1.0)), language="pt")
        assert error_of(caught.value) | {"message": ""} == {
            "message": "", "type": "invalid_request_error", "param": "language", "code": "unsupported_language"
        }

    def test_prompt_and_temperature_are_accepted(self, oai, ml):
        result = oai.audio.transcriptions.create(model="whisper-1", file=wav(known(ml)), prompt="Good morning.", temperature=0.2)
        assert result.text == "good morning zzz zzz zzz"

    @pytest.mark.parametrize(
        "options, param",
        [
            ({"timestamp_granularities": ["word"], "response_format": "verbose_json"}, "timestamp_granularities"),
            ({"temperature": 1.5}, "temperature"),
            ({"response_format": "xml"}, "response_format"),
        ],
    )
    def test_unsupported_options_are_400(self, oai, options, param):
        with pytest.raises(openai.BadRequestError) as caught:
            oai.audio.transcriptions.create(model="whisper-1", file=wav(tone(1.0)), **options)
        assert error_of(caught.value)["param"] == param

    def test_missing_model_is_400_naming_the_parameter(self, base_url, seeded):
        response = httpx.post(
            f"{base_url}/v1/audio/transcriptions",
            headers={"Authorization": f"Bearer {seeded.api_key}"},
            files={"file": ("a.wav", tone(1.0), "audio/wav")},
        )
        assert response.status_code == 400
        assert response.json()["error"] | {"message": ""} == {
            "message": "", "type": "invalid_request_error", "param": "model", "code": "validation_error"
        }

    def test_not_audio_is_400(self, oai):
        with pytest.raises(openai.BadRequestError) as caught:
            oai.audio.transcriptions.create(model="whisper-1", file=wav(b"garbage" * 30))
        assert error_of(caught.value)["code"] == "invalid_audio"

    def test_longer_than_the_transcription_limit_is_400(self, oai):
        with pytest.raises(openai.BadRequestError) as caught:
            oai.audio.transcriptions.create(model="whisper-1", file=wav(tone(21.0, rate=8000)))
        assert error_of(caught.value)["code"] == "audio_too_long"

    def test_uploads_above_the_enrollment_limit_are_accepted_up_to_the_transcription_limit(self, oai, services):
        settings = services.settings
        audio = tone(15.0)  # 480 KB of WAV: over max_upload_bytes (400 KB), under the transcription limit (1 MB)
        assert settings.max_upload_bytes < len(audio) < settings.max_transcription_upload_bytes
        assert oai.audio.transcriptions.create(model="whisper-1", file=wav(audio)).text
        with pytest.raises(openai.APIStatusError) as caught:
            oai.audio.transcriptions.create(model="whisper-1", file=wav(b"\0" * (2 * settings.max_transcription_upload_bytes)))
        assert caught.value.status_code == 413 and error_of(caught.value)["code"] == "payload_too_large"
