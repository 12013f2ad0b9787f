"""Synthesize one utterance: engine subprocess, sox effects, seeded noise, 16 kHz mono FLAC.

Every step is deterministic for a given voice, text and utterance key (espeak-ng, flite and festival are
deterministic; noise comes from numpy seeded by the voice seed and the key), so a rebuilt corpus is identical.
"""

from __future__ import annotations

import hashlib
import math
import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from hra.corpus.voices import Voice

SAMPLE_RATE = 16000
MIN_SECONDS = 1.5
MAX_SECONDS = 10.0
ESPEAK_DEFAULT_WPM = 175
PEAK_DBFS = -3.0
_ENGINE_TIMEOUT_S = 120


class SynthesisError(RuntimeError):
    """An engine or sox failed, or produced no audio."""


@dataclass(frozen=True)
class SynthesisResult:
    duration_s: float
    fitted_tempo: float | None  # tempo applied to bring an over-long utterance under MAX_SECONDS
    padded: bool  # silence added to reach MIN_SECONDS


def estimate_seconds(voice: Voice, text: str) -> float:
    """A rough duration estimate (about 16 characters per second at rate 1), used to choose sentences."""
    return 0.4 + len(text) / (16.0 * voice.speed) + len(text.split()) * voice.word_gap_ms / 1000.0


def engine_command(voice: Voice, text_file: Path, out_wav: Path) -> list[str]:
    """The command line that makes ``out_wav`` from the text in ``text_file`` (its sample rate is the engine's)."""
    if voice.engine == "espeak-ng":
        cmd = ["espeak-ng", "-v", voice.engine_voice, "-s", str(round(ESPEAK_DEFAULT_WPM * voice.rate))]
        if voice.pitch is not None:
            cmd += ["-p", str(voice.pitch)]
        if voice.word_gap_ms:
            cmd += ["-g", str(max(1, round(voice.word_gap_ms / 10)))]
        return cmd + ["-w", str(out_wav), "-f", str(text_file)]
    if voice.engine == "flite":
        cmd = ["flite", "-voice", voice.engine_voice]
        if voice.rate != 1.0:
            cmd += ["--setf", f"duration_stretch={1.0 / voice.rate:.4f}"]
        return cmd + ["-f", str(text_file), "-o", str(out_wav)]
    if voice.engine == "festival":
        cmd = ["text2wave", "-eval", f"(voice_{voice.engine_voice})"]
        if voice.rate != 1.0:
            cmd += ["-eval", f"(Parameter.set 'Duration_Stretch {1.0 / voice.rate:.4f})"]
        return cmd + ["-o", str(out_wav), str(text_file)]
    raise ValueError(f"unknown engine {voice.engine!r}")


def sox_command(in_wav: Path, out_wav: Path, effects: tuple[str, ...], tempo: float | None = None) -> list[str]:
    """Effects at the engine's rate, then mono, 16 kHz (high quality), peak-normalized, 16-bit."""
    cmd = ["sox", "-R", "-V1", str(in_wav), "-b", "16", str(out_wav)]
    for effect in effects:
        cmd += shlex.split(effect)
    if tempo is not None:
        cmd += ["tempo", "-s", f"{tempo:.4f}"]
    return cmd + ["remix", "-", "rate", "-v", str(SAMPLE_RATE), "gain", "-n", str(PEAK_DBFS)]


def _run(cmd: list[str]) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=_ENGINE_TIMEOUT_S, check=False)
    except FileNotFoundError as exc:
        raise SynthesisError(f"{cmd[0]} is not installed (Debian package: see README, `make deps`)") from exc
    except subprocess.TimeoutExpired as exc:
        raise SynthesisError(f"{cmd[0]} timed out: {shlex.join(cmd)}") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()[-500:]
        raise SynthesisError(f"{shlex.join(cmd)} exited {proc.returncode}: {err}")


def noise_seed(voice: Voice, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{voice.seed}\x00{key}".encode()).digest()[:8], "big")


def add_noise(audio: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """White noise at ``snr_db`` relative to the signal's active-speech power (frames above -40 dB of the peak)."""
    rng = np.random.default_rng(seed)
    frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
    power = (frames**2).mean(axis=1)
    active = power[power > power.max() * 1e-4]
    signal_power = float(active.mean()) if active.size else float(power.mean())
    noise = rng.standard_normal(len(audio)).astype(np.float32) * math.sqrt(signal_power / 10 ** (snr_db / 10))
    mixed = audio + noise
    peak = float(np.abs(mixed).max())
    limit = 10 ** (PEAK_DBFS / 20)
    return mixed * (limit / peak) if peak > limit else mixed


def synthesize(voice: Voice, text: str, key: str, out_flac: Path) -> SynthesisResult:
    """Write ``out_flac`` (16 kHz mono 16-bit FLAC, 1.5-10 s) atomically: a crash never leaves a partial file.

    ``key`` names the utterance within the voice (it seeds the noise). Utterances over MAX_SECONDS are sped up
    with sox ``tempo`` to fit (recorded in the result); short ones are padded with silence at both ends.
    """
    out_flac.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hra-synth-") as tmp_dir:
        tmp = Path(tmp_dir)
        text_file = tmp / "text.txt"
        text_file.write_text(text + "\n", encoding="utf-8")
        raw, processed = tmp / "raw.wav", tmp / "processed.wav"
        _run(engine_command(voice, text_file, raw))
        _run(sox_command(raw, processed, voice.effects))
        audio, rate = sf.read(processed, dtype="float32")
        fitted = None
        if len(audio) / rate > MAX_SECONDS - 0.2:
            fitted = round(len(audio) / rate / (MAX_SECONDS - 0.5), 4)
            _run(sox_command(raw, processed, voice.effects, tempo=fitted))
            audio, rate = sf.read(processed, dtype="float32")
        if rate != SAMPLE_RATE or audio.ndim != 1 or len(audio) == 0 or not np.any(audio):
            raise SynthesisError(f"{voice.name}: no usable audio for {text!r}")
        if voice.noise_snr_db is not None:
            audio = add_noise(audio, voice.noise_snr_db, noise_seed(voice, key))
        padded = len(audio) < MIN_SECONDS * SAMPLE_RATE
        if padded:
            missing = int(MIN_SECONDS * SAMPLE_RATE) + 160 - len(audio)
            audio = np.pad(audio, (missing // 2, missing - missing // 2))
        partial = out_flac.with_name(f".{out_flac.name}.{os.getpid()}.part")
        sf.write(partial, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        os.replace(partial, out_flac)
    return SynthesisResult(duration_s=len(audio) / SAMPLE_RATE, fitted_tempo=fitted, padded=padded)


def is_valid_flac(path: Path) -> bool:
    """True if ``path`` is a readable 16 kHz mono FLAC of MIN_SECONDS..MAX_SECONDS (header check only)."""
    try:
        info = sf.info(path)
    except (RuntimeError, OSError, sf.LibsndfileError):
        return False
    return (
        info.format == "FLAC" and info.samplerate == SAMPLE_RATE and info.channels == 1
        and MIN_SECONDS - 1e-3 <= info.frames / SAMPLE_RATE <= MAX_SECONDS + 1e-3
    )
