"""Batches of enrollment utterances, bounded by encoder frames, with their frozen front-end features cached."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

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
