"""Test doubles for the two seams the service has: ``MLService`` (the model) and ``TaskQueue`` (the broker).

``FakeML`` decodes and encodes real audio (soundfile: WAV/FLAC), scores words with a plain edit distance, and
"transcribes" from a table of known recordings: a recording is known by the fingerprint of its samples, so
what a test uploaded is recognized after the FLAC round trip. How many words come out right depends on the
"quality" of the head used (the base model has ``base_quality``; a trained head has the quality the fake was
told to train, stored in its artifact).
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf

from app.ml import (
    Transcript,
    AudioTooLongForModel,
    DecodedAudio,
    HeadInput,
    IncompatibleHead,
    InvalidAudio,
    ModelUnavailable,
    TrainedHead,
    TrainingProgress,
    TrainingRequest,
    TrainingStopped,
    head_artifact,
)
from app.services.queue import QueueUnavailable

SAMPLE_RATE = 16000
FAKE_FINGERPRINT = "f" * 64
FAKE_NO_SPEECH_PROB = 0.0123


def tone(seconds: float = 1.0, freq: float = 440.0, rate: int = SAMPLE_RATE, channels: int = 1, fmt: str = "WAV") -> bytes:
    """A sine tone as audio file bytes (distinct ``freq`` -> distinct recording)."""
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    data = np.stack([mono] * channels, axis=1) if channels > 1 else mono
    buf = io.BytesIO()
    sf.write(buf, data, rate, format=fmt, subtype="PCM_16")
    return buf.getvalue()


def bursts(seconds: list[float], gap: float = 1.0, rate: int = SAMPLE_RATE, freq: float = 300.0) -> bytes:
    """WAV bytes: tone bursts of the given lengths (distinct pitches), each after ``gap`` seconds of silence, and a
    last ``gap`` of silence (a stand-in for speech with pauses, for the energy voice activity detector)."""
    silence = np.zeros(int(gap * rate), dtype=np.float32)
    parts = []
    for i, length in enumerate(seconds):
        t = np.arange(int(length * rate)) / rate
        parts += [silence, (0.3 * np.sin(2 * np.pi * (freq + 50 * i) * t)).astype(np.float32)]
    buf = io.BytesIO()
    sf.write(buf, np.concatenate(parts + [silence]), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def fingerprint(waveform: np.ndarray) -> str:
    return hashlib.sha256(np.round(np.asarray(waveform) * 32767).astype(np.int32).tobytes()).hexdigest()


def _words(text: str) -> list[str]:
    return "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()


def edit_distance(a: list[str], b: list[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


@dataclass
class TrainCall:
    utterances: int
    request: TrainingRequest
    init_head: dict | None


@dataclass
class FakeML:
    base_quality: float = 0.5
    next_quality: float = 1.0  # the quality of the next head trained
    available: bool = True
    train_steps: int = 3
    # Called at every training step with the step number; may raise to simulate a crash.
    on_train_step: Callable[[int], None] | None = None
    truth: dict[str, str] = field(default_factory=dict)
    train_calls: list[TrainCall] = field(default_factory=list)
    transcribe_calls: int = 0

    # ---- test helpers ----

    def learn(self, audio: bytes, transcript: str) -> None:
        """Remember what is said in ``audio`` (so transcriptions of it can be right or wrong)."""
        self.truth[fingerprint(self.decode_audio(audio).waveform)] = transcript

    @staticmethod
    def head_record(artifact: bytes) -> dict:
        return json.loads(artifact)

    # ---- MLService ----

    def decode_audio(self, data: bytes, max_seconds: float | None = None) -> DecodedAudio:
        try:
            samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except Exception as exc:  # soundfile raises several types for garbage
            raise InvalidAudio(f"cannot decode: {exc}") from exc
        if samples.shape[0] == 0:
            raise InvalidAudio("no samples")
        mono = samples.mean(axis=1).astype(np.float32)
        if rate != SAMPLE_RATE:  # good enough for a fake: nearest-sample resampling
            idx = np.minimum((np.arange(int(len(mono) * SAMPLE_RATE / rate)) * rate / SAMPLE_RATE).astype(int), len(mono) - 1)
            mono = mono[idx]
        if max_seconds is not None and len(mono) > max_seconds * SAMPLE_RATE:
            raise AudioTooLongForModel(f"the audio is longer than {max_seconds:g} s")
        return DecodedAudio(mono, len(mono) / SAMPLE_RATE, int(rate), int(samples.shape[1]))

    def encode_flac(self, waveform: Any) -> bytes:
        buf = io.BytesIO()
        sf.write(buf, np.asarray(waveform, dtype=np.float32), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        return buf.getvalue()

    def word_errors(self, reference: str, hypothesis: str) -> tuple[int, int]:
        ref = _words(reference)
        return edit_distance(ref, _words(hypothesis)), len(ref)

    def _check(self) -> None:
        if not self.available:
            raise ModelUnavailable("the fake foundation is switched off")

    def transcribe(self, waveforms: Sequence[Any], heads: Sequence[HeadInput]) -> list[str]:
        self._check()
        self.transcribe_calls += 1
        out = []
        for waveform, head in zip(waveforms, [head_artifact(h) for h in heads], strict=True):
            if head is None:
                quality = self.base_quality
            else:
                try:
                    record = json.loads(head)
                except ValueError as exc:
                    raise IncompatibleHead("not a fake head") from exc
                if record.get("foundation") != FAKE_FINGERPRINT:
                    raise IncompatibleHead("head made for another foundation")
                quality = record["quality"]
            words = self.truth.get(fingerprint(waveform), "unknown speech here").split()
            keep = round(quality * len(words))
            out.append(" ".join(words[:keep] + ["zzz"] * (len(words) - keep)))
        return out

    def transcribe_detailed(self, waveforms: Sequence[Any], heads: Sequence[HeadInput]) -> list[Transcript]:
        """The texts with made-up decoder numbers that tests can recognize: a token per word (its length), the share
        of "zzz" words as a negative log-probability, and a fixed no-speech probability."""
        out = []
        for text in self.transcribe(waveforms, heads):
            words = text.split()
            out.append(Transcript(text, tuple(len(w) for w in words),
                                  -(words.count("zzz") / len(words)) if words else 0.0, FAKE_NO_SPEECH_PROB))
        return out

    def train(
        self,
        utterances: Sequence[tuple[Any, str]],
        request: TrainingRequest,
        init_head: bytes | None,
        progress: Callable[[TrainingProgress], None],
        should_stop: Callable[[], bool],
    ) -> TrainedHead:
        self._check()
        self.train_calls.append(TrainCall(len(utterances), request, json.loads(init_head) if init_head else None))
        for step in range(1, self.train_steps + 1):
            if should_stop():
                raise TrainingStopped("stopped")
            if self.on_train_step is not None:
                self.on_train_step(step)
            progress(TrainingProgress(step, self.train_steps, 1.0 / step, step / self.train_steps))
        if should_stop():
            raise TrainingStopped("stopped")
        record = {
            "fake_head": True,
            "head_type": request.head_type,
            "quality": self.next_quality,
            "foundation": FAKE_FINGERPRINT,
            "nonce": uuid.uuid4().hex,
            "metadata": request.metadata,
        }
        return TrainedHead(
            artifact=json.dumps(record).encode(),
            head_type=request.head_type,
            parameters=1234,
            backbone_fingerprint="b" * 64,
            controller_fingerprint="c" * 64,
            metrics={"steps": self.train_steps, "holdout_loss": float("nan")},
        )

    def describe_foundation(self) -> dict:
        self._check()
        return {"fingerprint": FAKE_FINGERPRINT, "backbone": {"name": "fake"}, "controller": {"fingerprint": "c" * 64}}

    def foundation_artifact(self, part: str) -> bytes:
        self._check()
        return f"{part}-weights".encode()

    def warm_up(self) -> None:
        self._check()

    def cache_stats(self) -> dict:
        return {"hits": 0, "misses": 0, "evictions": 0, "entries": 0, "bytes": 0, "max_bytes": 0}

    def evict(self, head_id: Any) -> bool:
        return False


@dataclass
class RecordingQueue:
    """Captures the tasks the code enqueues (never runs them)."""

    available: bool = True
    training: list[uuid.UUID] = field(default_factory=list)
    evaluation: list[uuid.UUID] = field(default_factory=list)

    def _check(self) -> None:
        if not self.available:
            raise QueueUnavailable("the fake broker is down")

    def enqueue_training(self, job_id: uuid.UUID) -> None:
        self._check()
        self.training.append(job_id)

    def enqueue_evaluation(self, job_id: uuid.UUID) -> None:
        self._check()
        self.evaluation.append(job_id)

    def ping(self) -> None:
        self._check()
