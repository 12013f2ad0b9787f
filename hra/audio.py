"""Audio in and out: any soundfile-readable upload -> mono float32 16 kHz; waveform -> 16-bit FLAC.

soundfile (libsndfile) reads WAV, FLAC, OGG/Vorbis, OGG/Opus and MP3 (libsndfile >= 1.1); channels are
averaged and the rate converted with ``torchaudio.functional.resample``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from hra.errors import AudioDecodeError

SAMPLE_RATE = 16000
MAX_UPLOAD_SECONDS = 600.0


@dataclass(frozen=True)
class DecodedAudio:
    waveform: torch.Tensor  # (N,) float32, 16 kHz, mono, in [-1, 1]
    original_sample_rate: int
    original_channels: int
    duration_s: float


def decode_audio(data: bytes, max_seconds: float = MAX_UPLOAD_SECONDS) -> DecodedAudio:
    """Decode uploaded bytes; ``AudioDecodeError`` with a human-readable message when they are not audio."""
    if not data:
        raise AudioDecodeError("the upload is empty: expected audio (WAV, FLAC, OGG or MP3)")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate, channels, n = f.samplerate, f.channels, f.frames
            if rate <= 0 or channels <= 0:
                raise AudioDecodeError("the audio header is invalid (no sample rate or channels)")
            if n > max_seconds * rate:
                raise AudioDecodeError(f"the audio is longer than {max_seconds:g} s")
            samples = f.read(dtype="float32", always_2d=True)
    except AudioDecodeError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        # libsndfile's own message names the in-memory buffer object; its error_string is the reason alone.
        reason = getattr(exc, "error_string", None) or str(exc)
        raise AudioDecodeError(
            f"could not decode the upload as audio (WAV, FLAC, OGG or MP3 expected): {reason}"
        ) from exc
    if samples.shape[0] == 0:
        raise AudioDecodeError("the audio contains no samples")
    if not np.isfinite(samples).all():
        raise AudioDecodeError("the audio contains invalid (NaN or infinite) samples")
    mono = torch.from_numpy(np.ascontiguousarray(samples.mean(axis=1, dtype=np.float32)))
    if rate != SAMPLE_RATE:
        mono = AF.resample(mono, orig_freq=rate, new_freq=SAMPLE_RATE)
    mono = mono.clamp_(-1.0, 1.0).contiguous()
    return DecodedAudio(
        waveform=mono,
        original_sample_rate=int(rate),
        original_channels=int(channels),
        duration_s=mono.shape[0] / SAMPLE_RATE,
    )


def encode_flac(waveform: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> bytes:
    """(N,) float waveform in [-1, 1] -> 16-bit mono FLAC bytes."""
    if waveform.dim() != 1:
        raise ValueError(f"expected a mono waveform (N,), got shape {tuple(waveform.shape)}")
    if waveform.numel() == 0:
        raise ValueError("cannot encode an empty waveform")
    buf = io.BytesIO()
    data = waveform.detach().to("cpu", torch.float32).clamp(-1.0, 1.0).numpy()
    sf.write(buf, data, sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()
