"""Audio in and out: any soundfile-readable upload -> mono float32 16 kHz; waveform -> 16-bit FLAC.

soundfile (libsndfile) reads WAV, FLAC, OGG/Vorbis, OGG/Opus and MP3 (libsndfile >= 1.1). Uploads are hostile
until proven otherwise, so decoding is bounded at every step:

- the container's header (rate, channels, declared length) is checked before any sample is decoded;
- samples are read in blocks and never past a budget of ``max_seconds`` at the declared rate, so a header that
  hides its length (FLAC may say "unknown") cannot make the decoder run on;
- each block is checked (NaN, infinities and garbage far beyond full scale are refused), averaged to mono and
  resampled to 16 kHz at once, so memory holds one block and the 16 kHz output, never the whole signal at its
  original rate;
- the resampler is torchaudio's windowed-sinc (same kernel, same output), built once from the gcd-reduced rate
  ratio and refused when that kernel would be large: an odd rate such as 999,983 Hz would otherwise need a
  ~64 GB table.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch

from hra.errors import AudioDecodeError, AudioTooLong, TooManyChannels, UnsupportedSampleRate

SAMPLE_RATE = 16000
MAX_UPLOAD_SECONDS = 600.0
MAX_SAMPLE_RATE = 192_000
MAX_CHANNELS = 8
# new' x (orig' + 2 x width) float32 coefficients: 4M is 16 MB, which every rate sharing a factor of 20 or more
# with 16 kHz fits (8, 11.025, 22.05, 24, 32, 44.1, 48, 88.2, 96, 176.4, 192 kHz ...); a rate coprime to 16 kHz
# near 44 kHz would need ~700M.
MAX_RESAMPLE_KERNEL = 4 * 1024 * 1024
# Float formats may legitimately exceed full scale a little (MP3 overshoot, hot float WAVs); garbage frames decode
# to values millions of times larger. Anything beyond +12 dBFS is treated as not audio.
MAX_SAMPLE_MAGNITUDE = 4.0
BLOCK_FRAMES = 65536  # 2 MB per block at the channel cap
# libsndfile reports SF_COUNT_MAX frames when the container does not know its length (e.g. FLAC total_samples = 0).
_UNKNOWN_LENGTH = 2**62

# Sinc resampling parameters, torchaudio.functional.resample's defaults.
_LOWPASS_FILTER_WIDTH = 6
_ROLLOFF = 0.99




@dataclass(frozen=True)
class DecodedAudio:
    waveform: torch.Tensor  # (N,) float32, 16 kHz, mono, in [-1, 1]
    original_sample_rate: int
    original_channels: int
    duration_s: float


class EncodedAudio:
    """Stored audio kept encoded and decoded only when used (``hra.training.data.AudioSource``): training streams
    an enrollment this way, holding its compressed bytes (16-bit FLAC of speech: about a fifth of the float32
    samples) instead of every waveform at once. For what ``encode_flac`` wrote: 16 kHz mono, its length in the
    header (read here without decoding)."""

    def __init__(self, data: bytes) -> None:
        try:
            with sf.SoundFile(io.BytesIO(data)) as f:
                rate, channels, frames = int(f.samplerate), int(f.channels), int(f.frames)
        except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
            raise AudioDecodeError(f"stored audio does not decode: {getattr(exc, 'error_string', None) or exc}") from exc
        if rate != SAMPLE_RATE or channels != 1 or not 0 < frames < _UNKNOWN_LENGTH:
            raise AudioDecodeError(
                f"stored audio must be 16 kHz mono with a known length (got {rate} Hz, {channels} channels)"
            )
        self.data = data
        self.num_samples = frames

    def load(self) -> torch.Tensor:
        waveform = decode_audio(self.data, max_seconds=self.num_samples / SAMPLE_RATE + 1.0).waveform
        if waveform.shape[0] != self.num_samples:
            raise AudioDecodeError(f"stored audio decoded to {waveform.shape[0]} samples, its header says "
                                   f"{self.num_samples}")
        return waveform


def decode_audio(
    data: bytes,
    max_seconds: float = MAX_UPLOAD_SECONDS,
    *,
    max_sample_rate: int = MAX_SAMPLE_RATE,
    max_channels: int = MAX_CHANNELS,
) -> DecodedAudio:
    """Decode uploaded bytes within the limits.

    Raises ``AudioTooLong`` (longer than ``max_seconds``, declared or decoded), ``UnsupportedSampleRate``,
    ``TooManyChannels`` and ``AudioDecodeError`` (not audio, truncated, no samples, invalid samples), each with
    a human-readable message.
    """
    if not data:
        raise AudioDecodeError("the upload is empty: expected audio (WAV, FLAC, OGG or MP3)")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate, channels = int(f.samplerate), int(f.channels)
            _check_header(rate, channels, int(f.frames), max_seconds, max_sample_rate, max_channels)
            budget = math.floor(max_seconds * rate)
            mono = _read_mono_16k(f, rate, channels, int(f.frames), budget_frames=budget, max_seconds=max_seconds)
    except AudioDecodeError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        # libsndfile's own message names the in-memory buffer object; its error_string is the reason alone.
        reason = getattr(exc, "error_string", None) or str(exc)
        raise AudioDecodeError(
            f"could not decode the upload as audio (WAV, FLAC, OGG or MP3 expected): {reason}"
        ) from exc
    if mono.shape[0] == 0:
        raise AudioDecodeError("the audio contains no samples")
    mono = mono.clamp_(-1.0, 1.0).contiguous()
    return DecodedAudio(
        waveform=mono,
        original_sample_rate=rate,
        original_channels=channels,
        duration_s=mono.shape[0] / SAMPLE_RATE,
    )


def _check_header(
    rate: int, channels: int, frames: int, max_seconds: float, max_sample_rate: int, max_channels: int
) -> None:
    if rate <= 0 or channels <= 0:
        raise AudioDecodeError("the audio header is invalid (no sample rate or channels)")
    if rate > max_sample_rate:
        raise UnsupportedSampleRate(f"the sample rate {rate} Hz is above the limit of {max_sample_rate} Hz")
    if channels > max_channels:
        raise TooManyChannels(f"the audio has {channels} channels; at most {max_channels} are accepted")
    if frames < _UNKNOWN_LENGTH and frames > max_seconds * rate:
        raise AudioTooLong(f"the audio is {frames / rate:.1f} s long; at most {max_seconds:g} s are accepted")


def _read_mono_16k(
    f: sf.SoundFile, rate: int, channels: int, declared_frames: int, budget_frames: int, max_seconds: float
) -> torch.Tensor:
    """Read, check, downmix and resample block by block; never more than ``budget_frames`` frames."""
    resampler = None if rate == SAMPLE_RATE else StreamingResampler(rate, SAMPLE_RATE)
    known = declared_frames < _UNKNOWN_LENGTH
    out = _Output(-(-declared_frames * SAMPLE_RATE // rate) if known else 0)  # ceil: the resampler's length
    block = np.empty((BLOCK_FRAMES, channels), dtype=np.float32)
    total = 0
    while True:
        # One frame past the budget tells "exactly at the limit" from "longer".
        wanted = min(BLOCK_FRAMES, budget_frames + 1 - total)
        got = f.read(wanted, dtype="float32", always_2d=True, out=block[:wanted])
        n = got.shape[0]
        if n == 0:
            break
        total += n
        if total > budget_frames:
            raise AudioTooLong(f"the audio is longer than {max_seconds:g} s")
        # NaN propagates through max, so one comparison refuses NaN, infinities and garbage magnitudes.
        if not float(np.abs(got).max()) <= MAX_SAMPLE_MAGNITUDE:
            raise AudioDecodeError("the audio contains invalid samples (NaN, infinite or far beyond full scale)")
        mono = torch.from_numpy(got.mean(axis=1, dtype=np.float32))
        out.append(mono if resampler is None else resampler.push(mono))
        if n < wanted:
            break
    if resampler is not None:
        out.append(resampler.finish())
    return out.samples()


class _Output:
    """The 16 kHz samples, in one buffer sized from the header's length when it declares one, so that long audio
    is never held twice (a list of pieces joined at the end would be); grown by doubling otherwise."""

    def __init__(self, expected: int) -> None:
        self._buffer = torch.empty(expected)  # pages are touched only as samples arrive
        self._filled = 0

    def append(self, piece: torch.Tensor) -> None:
        end = self._filled + piece.shape[0]
        if end > self._buffer.shape[0]:
            grown = torch.empty(max(end, 2 * self._buffer.shape[0]))
            grown[: self._filled] = self._buffer[: self._filled]
            self._buffer = grown
        self._buffer[self._filled : end] = piece
        self._filled = end

    def samples(self) -> torch.Tensor:
        if self._filled == self._buffer.shape[0]:
            return self._buffer
        return self._buffer[: self._filled].clone()  # a view would keep the whole buffer alive


def resample_kernel_size(orig_freq: int, new_freq: int) -> int:
    """Coefficients of the sinc kernel for ``orig_freq`` -> ``new_freq`` (torchaudio's construction)."""
    g = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // g, new_freq // g
    width = math.ceil(_LOWPASS_FILTER_WIDTH * orig / (min(orig, new) * _ROLLOFF))
    return new * (orig + 2 * width)


class StreamingResampler:
    """``torchaudio.functional.resample`` (sinc_interp_hann, its default parameters) applied block by block.

    torchaudio pads the signal with ``width`` zeros on the left and ``width + orig`` on the right and convolves
    with stride ``orig``: output block k (``new`` samples) depends only on padded input [k*orig, k*orig + kernel
    length). Feeding the padded stream through the same convolution as soon as whole windows are available gives
    the same output while holding one block of input. The kernel is built once and refused when above
    ``MAX_RESAMPLE_KERNEL`` coefficients.
    """

    def __init__(self, orig_freq: int, new_freq: int) -> None:
        size = resample_kernel_size(orig_freq, new_freq)
        if size > MAX_RESAMPLE_KERNEL:
            raise UnsupportedSampleRate(
                f"the sample rate {orig_freq} Hz cannot be converted to {new_freq} Hz within bounded memory "
                "(it shares too small a factor with it); use a standard rate such as 16000, 44100 or 48000 Hz"
            )
        g = math.gcd(orig_freq, new_freq)
        self.orig, self.new = orig_freq // g, new_freq // g
        self.kernel, self.width = _sinc_kernel(self.orig, self.new)
        self._pending = torch.zeros(self.width)
        self._inputs = 0
        self._outputs = 0

    def push(self, samples: torch.Tensor) -> torch.Tensor:
        """Resampled output for ``samples`` (as far as complete windows allow; the rest follows later)."""
        self._inputs += samples.shape[0]
        self._pending = torch.cat([self._pending, samples])
        return self._convolve()

    def finish(self) -> torch.Tensor:
        """The remaining output, trimmed to torchaudio's length: ceil(new * inputs / orig)."""
        self._pending = torch.cat([self._pending, torch.zeros(self.width + self.orig)])
        tail = self._convolve()
        target = math.ceil(self.new * self._inputs / self.orig)
        return tail[: max(0, target - (self._outputs - tail.shape[0]))]

    def _convolve(self) -> torch.Tensor:
        span = self.kernel.shape[-1]
        if self._pending.shape[0] < span:
            return torch.zeros(0)
        blocks = (self._pending.shape[0] - span) // self.orig + 1
        used = (blocks - 1) * self.orig + span
        window = self._pending[:used].view(1, 1, -1)
        out = torch.nn.functional.conv1d(window, self.kernel, stride=self.orig)  # (1, new, blocks)
        self._pending = self._pending[blocks * self.orig :].clone()
        result = out[0].transpose(0, 1).reshape(-1)
        self._outputs += result.shape[0]
        return result


def _sinc_kernel(orig: int, new: int) -> tuple[torch.Tensor, int]:
    """torchaudio's ``_get_sinc_resample_kernel`` for gcd-reduced rates, float32 (copied: that one is private)."""
    base_freq = min(orig, new) * _ROLLOFF
    width = math.ceil(_LOWPASS_FILTER_WIDTH * orig / base_freq)
    idx = torch.arange(-width, width + orig, dtype=torch.float32)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float32)[:, None, None] / new + idx
    t *= base_freq
    t = t.clamp_(-_LOWPASS_FILTER_WIDTH, _LOWPASS_FILTER_WIDTH)
    window = torch.cos(t * math.pi / _LOWPASS_FILTER_WIDTH / 2) ** 2
    t *= math.pi
    kernels = torch.where(t == 0, torch.tensor(1.0), t.sin() / t)
    kernels *= window * (base_freq / orig)
    return kernels, width


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
