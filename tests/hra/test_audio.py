"""hra.audio: decode WAV/FLAC/OGG/MP3 at any rate/channels to mono 16 kHz; reject non-audio clearly."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from hra.audio import SAMPLE_RATE, decode_audio, encode_flac
from hra.errors import AudioDecodeError

torch.set_num_threads(1)
TONE_HZ = 440.0


def _tone(rate: int, channels: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    mono = 0.5 * np.sin(2 * math.pi * TONE_HZ * t)
    return np.stack([mono] * channels, axis=1).astype(np.float32)


def _encode(data: np.ndarray, rate: int, fmt: str, subtype: str | None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, data, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def _dominant_hz(wave: torch.Tensor) -> float:
    spectrum = torch.fft.rfft(wave * torch.hann_window(wave.shape[0]))
    return float(spectrum.abs().argmax()) * SAMPLE_RATE / wave.shape[0]


@pytest.mark.parametrize(
    "fmt,subtype,rate,channels",
    [
        ("WAV", "PCM_16", 16000, 1),
        ("WAV", "PCM_24", 44100, 2),
        ("WAV", "FLOAT", 8000, 1),
        ("FLAC", "PCM_16", 48000, 2),
        ("FLAC", "PCM_16", 22050, 1),
        ("OGG", "VORBIS", 44100, 2),
        ("OGG", "OPUS", 48000, 1),
        ("MP3", "MPEG_LAYER_III", 44100, 2),
        ("MP3", "MPEG_LAYER_III", 16000, 1),
    ],
)
def test_decodes_common_formats_to_mono_16k(fmt, subtype, rate, channels):
    decoded = decode_audio(_encode(_tone(rate, channels), rate, fmt, subtype))
    assert decoded.original_sample_rate == rate and decoded.original_channels == channels
    assert decoded.waveform.dtype == torch.float32 and decoded.waveform.dim() == 1
    # Lossy codecs add encoder delay/padding: duration within 0.1 s.
    assert abs(decoded.duration_s - 1.0) < 0.1
    assert decoded.waveform.shape[0] == round(decoded.duration_s * SAMPLE_RATE)
    assert abs(_dominant_hz(decoded.waveform) - TONE_HZ) < 5.0
    assert 0.2 < float(decoded.waveform.abs().max()) <= 1.0


def test_stereo_channels_are_averaged():
    rate = 16000
    left = _tone(rate, 1)[:, 0]
    data = np.stack([left, np.zeros_like(left)], axis=1)
    decoded = decode_audio(_encode(data, rate, "WAV", "FLOAT"))
    torch.testing.assert_close(decoded.waveform, torch.from_numpy(left / 2))


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "empty"),
        (b"this is not audio at all, just text" * 10, "could not decode"),
        (bytes(range(256)) * 40, "could not decode"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "could not decode"),  # truncated WAV header
        (b"fLaC" + b"\x00" * 100, "could not decode"),
    ],
)
def test_rejects_garbage_with_a_human_message(data, message):
    with pytest.raises(AudioDecodeError, match=message):
        decode_audio(data)


def test_rejects_audio_without_samples():
    with pytest.raises(AudioDecodeError):
        decode_audio(_encode(np.zeros((0, 1), dtype=np.float32), 16000, "WAV", "PCM_16"))


def test_flac_roundtrip_is_16_bit_and_lossless_to_quantization():
    wave = torch.from_numpy(_tone(SAMPLE_RATE, 1)[:, 0])
    data = encode_flac(wave)
    info = sf.info(io.BytesIO(data))
    assert (info.format, info.subtype, info.samplerate, info.channels) == ("FLAC", "PCM_16", 16000, 1)
    back = decode_audio(data)
    assert float((back.waveform - wave).abs().max()) < 1.0 / 32768 + 1e-6


def test_encode_flac_rejects_bad_shapes():
    with pytest.raises(ValueError):
        encode_flac(torch.zeros(2, 100))
    with pytest.raises(ValueError):
        encode_flac(torch.zeros(0))
