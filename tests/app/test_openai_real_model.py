"""The OpenAI-compatible route with the real model (``HRAMLService``: Whisper tiny.en from its wheel, silero-vad from
its wheel) on real speech: the 16 recordings of benchmarks/data/real_speech joined with pauses of 0.3-1.2 s into one
~68-s file, transcribed by the official ``openai`` client over HTTP as ``verbose_json``."""

from __future__ import annotations

import io
import itertools
import json
import random
import time
from pathlib import Path

import numpy as np
import openai
import pytest
import soundfile as sf

from app.main import create_app
from app.hra_ml import HRAMLService
from app.security import create_api_key
from tests.app.openai_server import serve
from tests.app.support import make_services, make_settings

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SR = 16000


def real_speech_folder() -> Path:
    for folder in (REPO / "benchmarks" / "data" / "real_speech", REPO / "tests" / "fixtures" / "real_speech"):
        if (folder / "manifest.jsonl").exists():
            return folder
    pytest.fail("the real speech recordings are missing (benchmarks/data/real_speech)")


def joined_recording(ml: HRAMLService) -> tuple[bytes, list[str], list[tuple[float, float]]]:
    """FLAC bytes of every recording in order with pauses between, their transcripts, and where each one is."""
    folder = real_speech_folder()
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines() if line.strip()]
    rng = random.Random(0)
    parts, spans, t = [np.zeros(SR // 2, dtype=np.float32)], [], 0.5
    for row in rows:
        wave = ml.decode_audio((folder / row["file"]).read_bytes()).waveform.numpy()
        pause = np.zeros(int(rng.uniform(0.3, 1.2) * SR), dtype=np.float32)
        parts += [wave, pause]
        spans.append((t, t + len(wave) / SR))
        t += (len(wave) + len(pause)) / SR
    buf = io.BytesIO()
    sf.write(buf, np.concatenate(parts), SR, format="FLAC", subtype="PCM_16")
    return buf.getvalue(), [row["transcript"] for row in rows], spans


def test_long_recording_with_the_real_model_through_the_openai_client(tmp_path, app_sqlite_url):
    settings = make_settings(
        tmp_path,
        app_sqlite_url,
        # The service's own long-form defaults, not the small ones of the fake-model tests.
        vad="silero",
        max_transcription_seconds=7200.0,
        max_transcription_upload_bytes=128 * 1024 * 1024,
        longform_single_pass_seconds=30.0,
        longform_chunk_seconds=8.0,
        longform_batch_size=8,
        torch_threads=1,
        device="cpu",
    )
    ml = HRAMLService(settings)
    services = make_services(settings, ml)
    with services.session_factory() as db:
        _, key = create_api_key(db, "acme")
        db.commit()
    audio, transcripts, spans = joined_recording(ml)
    duration = spans[-1][1]
    assert duration > 60
    ml.warm_up()
    with serve(create_app(services=services)) as url:
        client = openai.OpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0, timeout=600)
        started = time.perf_counter()
        result = client.audio.transcriptions.create(
            model="whisper-tiny.en", file=("joined.flac", audio, "audio/flac"), response_format="verbose_json"
        )
        elapsed = time.perf_counter() - started
    segments = result.segments
    print(f"\nlong-form: {result.duration:.1f} s of audio in {elapsed:.1f} s ({result.duration / elapsed:.1f}x real "
          f"time, 1 thread), {len(segments)} segments")
    # Segments: in order, inside the recording, each a chunk of at most 8 s, together covering every recording.
    assert duration < result.duration <= duration + 1.2  # the last pause
    assert 4 <= len(segments) <= len(transcripts)
    assert all(0 <= s.start < s.end <= result.duration and s.end - s.start <= 8.0 + 1e-6 for s in segments)
    assert all(a.end <= b.start for a, b in itertools.pairwise(segments))
    for start, end in spans:  # (the recordings have some silence of their own at their edges)
        assert any(s.start <= (start + end) / 2 <= s.end for s in segments), (start, end)
    # Accuracy: these recordings one at a time: WER 0.053 (base, beam 5); this joined file measured 0.067 (8-s chunks).
    errors, words = ml.word_errors(" ".join(transcripts), result.text)
    print(f"long-form WER {errors / words:.3f} ({errors}/{words} words)")
    assert errors / words <= 0.10
    assert result.text == " ".join(s.text for s in segments)
    # the decoder's own numbers: real speech, so low no-speech probability and a log-probability above Whisper's
    # -1 retry threshold on most segments; token ids of the text
    assert all(s.tokens and all(isinstance(t, int) for t in s.tokens) for s in segments)
    assert all(0.0 <= s.no_speech_prob < 0.5 and s.avg_logprob < 0.0 for s in segments)
    assert sum(s.avg_logprob > -1.0 for s in segments) >= len(segments) * 0.8
