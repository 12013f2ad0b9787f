"""Augmentation for head and controller training.

Waveform level (controller training, features recomputed each step): speed (resampling), gain, white noise
at a random SNR. Feature level (head training, on the cached log-mel): SpecAugment-style frequency and time
masks, filled with 0 (Whisper's padding value in its normalized log-mel space).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torchaudio.functional as AF

from hra.backbone.base import EncoderInput


@dataclass(frozen=True)
class WaveAugment:
    """speeds: factors drawn uniformly (1.0 = unchanged); gain_db: +/- range; snr_db: (low, high) for white
    noise, applied with probability noise_prob."""

    speeds: tuple[float, ...] = (0.9, 1.0, 1.1)
    gain_db: float = 6.0
    snr_db: tuple[float, float] = (15.0, 40.0)
    noise_prob: float = 0.5

    def __call__(self, wav: torch.Tensor, rng: random.Random, sample_rate: int = 16000) -> torch.Tensor:
        speed = rng.choice(self.speeds)
        if speed != 1.0:
            # Playing faster = fewer samples: resample from sr*speed to sr (pitch moves with it, like sox speed).
            wav = AF.resample(wav, int(round(sample_rate * speed)), sample_rate)
        if self.gain_db:
            wav = wav * 10 ** (rng.uniform(-self.gain_db, self.gain_db) / 20)
        if self.noise_prob and rng.random() < self.noise_prob:
            power = wav.pow(2).mean().clamp_min(1e-10)
            snr = rng.uniform(*self.snr_db)
            g = torch.Generator().manual_seed(rng.getrandbits(31))
            wav = wav + torch.randn(wav.shape, generator=g) * torch.sqrt(power / 10 ** (snr / 10))
        peak = wav.abs().max()
        return wav / peak * 0.99 if peak > 0.99 else wav


@dataclass(frozen=True)
class SpecAugment:
    """freq_masks masks of up to freq_width mel bins; time_masks masks of up to time_fraction of each sample's
    valid frames."""

    freq_masks: int = 2
    freq_width: int = 8
    time_masks: int = 2
    time_fraction: float = 0.05

    def __call__(self, batch: EncoderInput, generator: torch.Generator) -> EncoderInput:
        feats = batch.features.clone()
        b, n_mels, _ = feats.shape
        for i in range(b):
            valid = int(batch.frames[i]) * 2  # mel frames
            for _ in range(self.freq_masks):
                width = int(torch.randint(0, self.freq_width + 1, (1,), generator=generator))
                start = int(torch.randint(0, max(1, n_mels - width), (1,), generator=generator))
                feats[i, start : start + width, :valid] = 0.0
            max_t = int(valid * self.time_fraction)
            for _ in range(self.time_masks):
                width = int(torch.randint(0, max_t + 1, (1,), generator=generator))
                start = int(torch.randint(0, max(1, valid - width), (1,), generator=generator))
                feats[i, :, start : start + width] = 0.0
        return EncoderInput(features=feats, frames=batch.frames)
