"""Hostile audio through the real decoder on every audio route: a 4xx with a stable code, bounded memory, nothing
stored.

The services use ``HRAMLService`` (the production seam over ``hra.audio``), not ``FakeML``, whose decoder reads
whole files unbounded. Its foundation loader fails: a hostile file that got past decoding would reach the model
and answer 503, failing the test, rather than load a real model. Every file is generated here.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.main import create_app
from app.hra_ml import HRAMLService
from storage.models import Utterance
from tests.app.fakes import tone
from tests.app.support import make_services, make_settings, seed_speaker
from tests.memory import peak_rss_growth

# Production's limits, except a transcription limit under the 600-s files (production allows 2 h of long-form
# audio there, which a 600-s recording would rightly satisfy).
LIMITS = {
    "max_upload_bytes": 25 * 1024 * 1024,
    "max_utterance_seconds": 30.0,
    "max_transcription_seconds": 300.0,
    "max_transcription_upload_bytes": 25 * 1024 * 1024,
    "max_audio_sample_rate": 192_000,
    "max_audio_channels": 8,
}
# Decoding any of these files whole would take from hundreds of MB (600 s x 8 channels x 192 kHz as float32 is
# 3.5 GB) to ~64 GB (the resampler's table for 999,983 Hz); refusing them costs a few MB.
MAX_GROWTH_MB = 100.0


# ---- the corpus ------------------------------------------------------------------------------------------------


def _wav_header(rate: int, channels: int, data_bytes: int) -> bytes:
    """A 16-bit PCM WAV header that declares whatever it is told."""
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16)
    return (
        b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"data" + struct.pack("<I", data_bytes)
    )


def _encode(samples: np.ndarray, rate: int, fmt: str, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def _silent_flac(rate: int, channels: int, seconds: int) -> bytes:
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", rate, channels, format="FLAC", subtype="PCM_16") as f:
        second = np.zeros((rate, channels), dtype=np.int16)
        for _ in range(seconds):
            f.write(second)
    return buf.getvalue()


def _without_declared_length(flac: bytes) -> bytes:
    """STREAMINFO's 36-bit total-samples field set to 0, which FLAC defines as "unknown"."""
    data = bytearray(flac)
    streaminfo = 8  # "fLaC" + the metadata block header
    data[streaminfo + 13] &= 0xF0
    data[streaminfo + 14 : streaminfo + 18] = bytes(4)
    return bytes(data)


def _sine(samples: int, rate: int) -> np.ndarray:
    return (0.3 * np.sin(np.arange(samples) / rate * 2 * np.pi * 440)).astype(np.float32)


def _garbage_frame_mp3() -> bytes:
    """Valid MPEG-1 layer III frame headers (taken from a real encode) each followed by random bytes."""
    rate = 44100
    real = _encode(_sine(rate, rate), rate, "MP3", "MPEG_LAYER_III")
    header = real[real.index(b"\xff\xfb") :][:4]
    rng = np.random.default_rng(19)
    return b"".join(header + rng.integers(0, 256, 413, dtype=np.uint8).tobytes() for _ in range(500))


def _nan_inf_wav() -> bytes:
    samples = np.full(16000, 0.1, dtype=np.float32)
    samples[100], samples[200], samples[300] = np.nan, np.inf, -np.inf
    return _encode(samples, 16000, "WAV", "FLOAT")


@pytest.fixture(scope="module")
def corpus() -> dict[str, tuple[bytes, str]]:
    """name -> (file, the error code every audio route must answer with)."""
    silence_8ch_192k = _silent_flac(192_000, 8, 600)
    tone_flac = _encode(_sine(88200, 44100), 44100, "FLAC", "PCM_16")
    odd_rate_wav = _encode(np.zeros(95_999, np.float32), 191_999, "WAV", "PCM_16")
    files = {
        # 64 bytes: its header alone asked the old resampler for a ~64 GB table.
        "wav_declaring_999983_hz_64_bytes": (_wav_header(999_983, 1, 20) + bytes(20), "unsupported_sample_rate"),
        # Under the rate cap but coprime with 16 kHz: the decoder's resampler refuses it (a 12 GB kernel).
        "wav_191999_hz_coprime_with_16k": (odd_rate_wav, "unsupported_sample_rate"),
        "wav_64_channels": (_encode(np.zeros((1600, 64), np.float32), 16000, "WAV", "PCM_16"), "too_many_channels"),
        "flac_600s_silence_mono_48k": (_silent_flac(48_000, 1, 600), "audio_too_long"),
        "flac_600s_silence_8ch_192k_zip_bomb": (silence_8ch_192k, "audio_too_long"),
        "flac_zip_bomb_without_declared_length": (_without_declared_length(silence_8ch_192k), "invalid_audio"),
        "flac_truncated_mid_stream": (tone_flac[: len(tone_flac) // 2], "invalid_audio"),
        "wav_float_nan_and_inf": (_nan_inf_wav(), "invalid_audio"),
        "mp3_garbage_frames": (_garbage_frame_mp3(), "invalid_audio"),
        "zero_length": (b"", "empty_audio"),
    }
    for name, (data, _) in files.items():
        assert len(data) < LIMITS["max_upload_bytes"], name  # each must reach the decoder, not the size limit
    return files


# ---- the service, with the real decoder ------------------------------------------------------------------------


def _no_foundation():
    raise AssertionError("a hostile file reached the model")


@pytest.fixture
def real_decoder(tmp_path, app_sqlite_url, queue):
    settings = make_settings(tmp_path, app_sqlite_url, **LIMITS)
    services = make_services(settings, HRAMLService(settings, loader=_no_foundation), queue)
    seeded = seed_speaker(services, "acme", train=0, eval=0)
    with TestClient(create_app(services=services), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {seeded.api_key}"
        yield client, services, seeded
    services.session_factory.kw["bind"].dispose()


def _routes(speaker_id) -> dict[str, tuple[str, str, dict, int]]:
    """route name -> (path, file field, other form fields, status for an unprocessable file)."""
    return {
        "upload_utterance": (
            f"/v1/speakers/{speaker_id}/utterances", "audio", {"transcript": "hello", "split": "train"}, 422
        ),
        "transcribe_for_speaker": (f"/v1/speakers/{speaker_id}/transcriptions", "audio", {}, 422),
        "transcribe_base": ("/v1/transcriptions", "audio", {}, 422),
        "openai_transcriptions": ("/v1/audio/transcriptions", "file", {"model": "whisper-1"}, 400),  # OpenAI's 400
    }


def _stored(services) -> tuple[int, int]:
    with services.session_factory() as db:
        rows = db.scalar(select(func.count()).select_from(Utterance))
    objects = sum(1 for p in services.settings.object_store_dir.rglob("*") if p.is_file())
    return rows, objects


def test_hostile_files_are_refused_with_bounded_memory_and_nothing_stored(real_decoder, corpus, capsys):
    client, services, seeded = real_decoder
    routes = _routes(seeded.speaker_id)
    # Warm up (imports, first allocations) with a valid file through the same decoder: a normal upload works.
    warm = client.post(routes["upload_utterance"][0], files={"audio": ("ok.wav", tone(1.0, rate=44100, channels=2))},
                       data={"transcript": "hello", "split": "train"})
    assert warm.status_code == 201, warm.text
    for path, field, form, _ in routes.values():
        client.post(path, files={field: ("x.wav", b"RIFF")}, data=form)
    stored_before = _stored(services)

    table = []
    for name, (data, code) in corpus.items():
        for route, (path, field, form, status) in routes.items():
            with peak_rss_growth() as growth:
                response = client.post(path, files={field: (f"{name}.bin", data)}, data=form)
            table.append((name, route, response.status_code, response.json()["error"]["code"], growth.mb))
            assert response.status_code == status, (name, route, response.text)
            assert response.json()["error"]["code"] == code, (name, route, response.text)
            assert growth.mb < MAX_GROWTH_MB, (name, route, growth.mb)
    assert _stored(services) == stored_before

    with capsys.disabled():
        print("\nfile | route | status | code | peak RSS growth (MiB)")
        for row in table:
            print(f"{row[0]} | {row[1]} | {row[2]} | {row[3]} | {row[4]:.1f}")
