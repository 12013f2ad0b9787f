"""Whisper's front-end features and the encoder context policy.

Log-mel exactly as faster-whisper computes it (max difference ~3e-5): torchaudio ``MelSpectrogram``
(n_fft 400, hop 160, 80 Slaney mels, power 2, centered STFT with reflect padding) of the audio followed by
160 zero samples, the last STFT frame dropped; log10 clamped at 1e-10, floored at (max - 8), then (x + 4) / 4.
faster-whisper then keeps ``N // 160`` frames of an N-sample utterance (its ``content_frames``) and pads the
window to 3,000 frames with zeros in this normalized space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torchaudio

SAMPLE_RATE = 16000
HOP_LENGTH = 160
N_FFT = 400
WINDOW_SECONDS = 30
WINDOW_FRAMES = WINDOW_SECONDS * SAMPLE_RATE // HOP_LENGTH  # 3000 mel frames = 1500 encoder positions
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100 mel frames per second


@dataclass(frozen=True)
class ContextPolicy:
    """How much encoder context an utterance gets (frozen per backbone: training and serving must agree).

    kind="full": every utterance padded to Whisper's 30-s window (3,000 mel frames), as Whisper was trained
    and as faster-whisper serves it. kind="cut": the context is the utterance itself, padded with silence
    (zeros in normalized log-mel space) up to ``min_seconds`` when it is shorter; padding added only to
    batch utterances together is masked in the encoder's self-attention and the decoder's cross-attention.
    """

    kind: Literal["full", "cut"] = "full"
    min_seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("full", "cut"):
            raise ValueError(f"ContextPolicy.kind must be 'full' or 'cut', got {self.kind!r}")
        if not 0.0 <= self.min_seconds <= WINDOW_SECONDS:
            raise ValueError(f"ContextPolicy.min_seconds must be in [0, {WINDOW_SECONDS}], got {self.min_seconds}")
        if self.kind == "full" and self.min_seconds:
            raise ValueError("min_seconds only applies to kind='cut'")

    @classmethod
    def parse(cls, spec: str) -> "ContextPolicy":
        """'full' | 'cut' | 'min5' (cut, at least 5 s) -> ContextPolicy."""
        if spec in ("full", "cut"):
            return cls(kind=spec)  # type: ignore[arg-type]
        if spec.startswith("min"):
            return cls(kind="cut", min_seconds=float(spec[3:]))
        raise ValueError(f"unknown context policy {spec!r} (use full, cut or minN)")

    @property
    def label(self) -> str:
        if self.kind == "full":
            return "full"
        return "cut" if not self.min_seconds else f"min{self.min_seconds:g}"

    def context_frames(self, content_frames: int) -> int:
        """Mel frames the encoder sees for an utterance of ``content_frames`` frames (even, <= 3000)."""
        if content_frames > WINDOW_FRAMES:
            raise ValueError(f"{content_frames} frames exceed the {WINDOW_SECONDS}-s window")
        if self.kind == "full":
            return WINDOW_FRAMES
        frames = max(content_frames, math.ceil(self.min_seconds * FRAMES_PER_SECOND), 2)
        # Even, so that the stride-2 convolution never reads a batch-padding frame for a valid position.
        return min(frames + frames % 2, WINDOW_FRAMES)


class LogMel(torch.nn.Module):
    """Waveform (N,) float32 16 kHz -> normalized log-mel (n_mels, N // 160), faster-whisper's features."""

    def __init__(self, n_mels: int = 80) -> None:
        super().__init__()
        self.n_mels = n_mels
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE,
            n_fft=N_FFT,
            hop_length=HOP_LENGTH,
            n_mels=n_mels,
            power=2.0,
            norm="slaney",
            mel_scale="slaney",
            center=True,
            pad_mode="reflect",
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() != 1:
            raise ValueError(f"expected a mono waveform (N,), got shape {tuple(waveform.shape)}")
        n = waveform.shape[0]
        padded = torch.nn.functional.pad(waveform.to(torch.float32), (0, HOP_LENGTH))
        spec = self.mel(padded)[:, :-1]  # (n_mels, N // 160 + 1)
        log_spec = torch.clamp(spec, min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
        log_spec = (log_spec + 4.0) / 4.0
        return log_spec[:, : n // HOP_LENGTH]
