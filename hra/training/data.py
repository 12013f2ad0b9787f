"""Training data: batches of enrollment utterances, bounded by encoder frames, with their frozen front-end
features cached; the corpus manifest's utterances for controller training."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
import torch
import torchaudio.functional as AF

from hra.backbone.base import Backbone, EncoderInput

SAMPLE_RATE = 16000
SAMPLES_PER_ENCODER_FRAME = 320  # Whisper: 100 mel frames/s, the encoder's stride-2 convolution halves that


def encoder_frames(num_samples: int) -> int:
    return max(1, -(-num_samples // SAMPLES_PER_ENCODER_FRAME))


def frame_bounded_batches(lengths: Sequence[int], max_batch_frames: int, max_batch_size: int = 64) -> list[list[int]]:
    """Indices grouped by similar length so that (longest in batch) x (batch size) <= max_batch_frames.

    lengths: encoder frames per item. An item longer than the bound gets a batch of its own.
    """
    if max_batch_frames <= 0:
        raise ValueError("max_batch_frames must be positive")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = max([lengths[j] for j in current] + [lengths[i]])
        if current and (longest * (len(current) + 1) > max_batch_frames or len(current) >= max_batch_size):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


@dataclass
class PreparedBatch:
    """A batch whose frozen front-end features are computed once and reused every epoch."""

    encoder_input: EncoderInput
    targets: list[list[int]]
    indices: list[int]

    @property
    def num_tokens(self) -> int:
        return sum(len(t) + 1 for t in self.targets)  # + end of text


def prepare_batches(
    backbone: Backbone,
    waveforms: Sequence[torch.Tensor] | Mapping[int, torch.Tensor],
    targets: Sequence[list[int]],
    indices: Sequence[int],
    max_batch_frames: int,
    device: torch.device,
) -> list[PreparedBatch]:
    """Batches of ``indices`` (waveforms[i], targets[i]), features prepared once by the backbone."""
    lengths = [encoder_frames(waveforms[i].numel()) for i in indices]
    batches = []
    for group in frame_bounded_batches(lengths, max_batch_frames):
        rows = [indices[g] for g in group]
        with torch.no_grad():
            enc = backbone.prepare([waveforms[i].to(torch.float32) for i in rows])
        enc = EncoderInput(features=enc.features.to(device), frames=enc.frames.to(device))
        batches.append(PreparedBatch(enc, [targets[i] for i in rows], rows))
    return batches


@dataclass
class Utterance:
    """A controller-training utterance: its voice, 16 kHz waveform and transcript tokens."""

    voice: str
    waveform: torch.Tensor
    tokens: list[int]
    id: str = ""


def load_manifest_utterances(
    manifest: Path,
    backbone: Backbone,
    group: str = "controller",
    split: str = "train",
    voices: Sequence[str] | None = None,
    per_voice: int | None = None,
) -> list[Utterance]:
    """Utterances of ``group``/``split`` from a corpus manifest (paths relative to the manifest's folder)."""
    root = manifest.parent
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r.get("group") == group and r.get("split") == split]
    if voices:
        rows = [r for r in rows if r["voice"] in set(voices)]
    taken: dict[str, int] = {}
    out = []
    for r in rows:
        if per_voice is not None and taken.get(r["voice"], 0) >= per_voice:
            continue
        taken[r["voice"]] = taken.get(r["voice"], 0) + 1
        out.append(Utterance(r["voice"], read_audio(root / r["path"]), backbone.token_ids(r["text"]), r.get("id", "")))
    return out


def read_audio(path: Path) -> torch.Tensor:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    wav = torch.from_numpy(data.mean(axis=1))
    if rate != SAMPLE_RATE:
        wav = AF.resample(wav, rate, SAMPLE_RATE)
    return wav
