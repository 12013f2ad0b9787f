"""hra.audio: decode WAV/FLAC/OGG/MP3 at any rate/channels to mono 16 kHz; reject non-audio clearly."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from hra.audio import SAMPLE_RATE, decode_audio, encode_flac
from hra.errors import AudioDecodeError, AudioTooLong

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


# ---- bounded decoding of hostile input ------------------------------------------------------------------------


def _silent_flac(rate: int, channels: int, seconds: int, declare_length: bool = True) -> bytes:
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", rate, channels, format="FLAC", subtype="PCM_16") as f:
        second = np.zeros((rate, channels), dtype=np.int16)
        for _ in range(seconds):
            f.write(second)
    data = bytearray(buf.getvalue())
    if not declare_length:  # STREAMINFO total samples = 0: "unknown" (libsndfile then reports 2**63 - 1 frames)
        data[8 + 13] &= 0xF0
        data[8 + 14 : 8 + 18] = bytes(4)
    return bytes(data)


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 96000, 7350])
def test_streaming_resampler_matches_torchaudio(rate):
    import torchaudio.functional as AF

    from hra.audio import StreamingResampler

    torch.manual_seed(rate)
    signal = torch.randn(rate * 2 + 123) * 0.3
    resampler = StreamingResampler(rate, SAMPLE_RATE)
    pieces = [resampler.push(signal[i : i + 9999]) for i in range(0, signal.shape[0], 9999)]
    streamed = torch.cat(pieces + [resampler.finish()])
    torch.testing.assert_close(streamed, AF.resample(signal, rate, SAMPLE_RATE), atol=1e-6, rtol=0)


def test_a_64_byte_wav_declaring_999983_hz_is_refused_from_its_header():
    from hra.errors import UnsupportedSampleRate
    from tests.memory import peak_rss_growth

    header = b"RIFF" + (56).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
    header += np.array([1, 1], "<u2").tobytes() + np.array([999_983, 999_983 * 2], "<u4").tobytes()
    header += np.array([2, 16], "<u2").tobytes() + b"data" + (20).to_bytes(4, "little")
    with peak_rss_growth() as growth, pytest.raises(UnsupportedSampleRate, match="999983 Hz"):
        decode_audio(header + bytes(20))
    assert growth.mb < 20


def test_a_rate_too_odd_to_resample_within_bounds_is_refused_before_building_the_kernel():
    from hra.audio import MAX_RESAMPLE_KERNEL, resample_kernel_size
    from hra.errors import UnsupportedSampleRate

    assert resample_kernel_size(191_999, SAMPLE_RATE) > 100 * MAX_RESAMPLE_KERNEL  # ~12 GB as float32
    with pytest.raises(UnsupportedSampleRate, match="191999 Hz"):
        decode_audio(_encode(np.zeros((19_200, 1), np.float32), 191_999, "WAV", "PCM_16"))
    # Every common rate fits.
    for rate in (8000, 11025, 12000, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 176400, 192000):
        assert resample_kernel_size(rate, SAMPLE_RATE) <= MAX_RESAMPLE_KERNEL, rate


def test_channel_and_rate_caps():
    from hra.errors import TooManyChannels, UnsupportedSampleRate

    with pytest.raises(TooManyChannels):
        decode_audio(_encode(np.zeros((160, 9), np.float32), 16000, "WAV", "PCM_16"))
    with pytest.raises(TooManyChannels):
        decode_audio(_encode(np.zeros((160, 2), np.float32), 16000, "WAV", "PCM_16"), max_channels=1)
    with pytest.raises(UnsupportedSampleRate):
        decode_audio(_encode(np.zeros((480, 1), np.float32), 48000, "WAV", "PCM_16"), max_sample_rate=44100)


def test_a_declared_length_over_the_limit_is_refused_before_decoding():
    from tests.memory import peak_rss_growth

    data = _silent_flac(48_000, 1, 600)
    with peak_rss_growth() as growth, pytest.raises(AudioTooLong, match="600.0 s"):
        decode_audio(data, max_seconds=30.0)
    assert growth.mb < 20


def test_a_zip_bomb_without_declared_length_stops_at_the_sample_budget_with_bounded_memory():
    """120 s of 8-channel 192 kHz silence (~200 kB of FLAC; 700 MB as float32) that hides its length."""
    from tests.memory import peak_rss_growth

    data = _silent_flac(192_000, 8, 120, declare_length=False)
    assert len(data) < 256 * 1024
    with peak_rss_growth() as growth, pytest.raises(AudioTooLong, match="longer than 30 s"):
        decode_audio(data, max_seconds=30.0)
    # One block of 8 channels (2 MB) and 30 s of 16 kHz output (2 MB), plus the allocator's slack.
    assert growth.mb < 50


def test_the_budget_admits_audio_exactly_at_the_limit():
    decoded = decode_audio(_encode(_tone(44100, 1, seconds=2.0), 44100, "FLAC", "PCM_16"), max_seconds=2.0)
    assert decoded.waveform.shape[0] == 2 * SAMPLE_RATE
    with pytest.raises(AudioTooLong):
        decode_audio(_encode(_tone(44100, 1, seconds=2.0), 44100, "FLAC", "PCM_16"), max_seconds=1.99)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e6])
def test_nan_infinite_and_garbage_magnitude_samples_are_refused(bad):
    samples = np.full((16000, 1), 0.1, dtype=np.float32)
    samples[12345, 0] = bad
    with pytest.raises(AudioDecodeError, match="invalid samples"):
        decode_audio(_encode(samples, 16000, "WAV", "FLOAT"))


def test_slightly_hot_float_audio_is_kept_and_clamped():
    samples = np.full((16000, 1), 1.5, dtype=np.float32)
    decoded = decode_audio(_encode(samples, 16000, "WAV", "FLOAT"))
    assert float(decoded.waveform.max()) == 1.0


def test_a_truncated_flac_is_refused():
    data = _encode(_tone(44100, 1, seconds=2.0), 44100, "FLAC", "PCM_16")
    with pytest.raises(AudioDecodeError, match="could not decode"):
        decode_audio(data[: len(data) // 2])


def test_memory_holds_the_16k_output_not_the_original_signal():
    """120 s of 48 kHz stereo is 46 MB as float32; decoded, 7.7 MB at 16 kHz mono. Peak growth stays near the latter."""
    from tests.memory import peak_rss_growth

    data = _encode(_tone(48000, 2, seconds=120.0), 48000, "FLAC", "PCM_16")
    decode_audio(_encode(_tone(48000, 2), 48000, "FLAC", "PCM_16"))  # first use pages in code (torch's conv)
    with peak_rss_growth() as growth:
        decoded = decode_audio(data, max_seconds=600.0)
    output_mb = decoded.waveform.numel() * 4 / 2**20
    assert abs(decoded.duration_s - 120.0) < 1e-3
    assert growth.mb < output_mb + 8, (growth.mb, output_mb)  # + one 2-MB block and the allocator's slack


def test_encoded_audio_knows_its_length_from_the_header_and_decodes_on_load():
    from hra.audio import EncodedAudio

    wave = torch.from_numpy(_tone(SAMPLE_RATE, 1, seconds=1.3)[:, 0])
    data = encode_flac(wave)
    audio = EncodedAudio(data)
    assert audio.num_samples == wave.numel() and len(data) < wave.numel() * 4 / 2  # far smaller than float32
    assert torch.equal(audio.load(), decode_audio(data).waveform)
    with pytest.raises(AudioDecodeError, match="16 kHz mono"):
        EncodedAudio(_encode(_tone(44100, 2), 44100, "WAV", "PCM_16"))
    with pytest.raises(AudioDecodeError):
        EncodedAudio(b"not audio at all")
