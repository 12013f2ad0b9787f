"""Training data: batches of enrollment utterances, bounded by encoder frames, with their frozen front-end
features cached up to a byte budget and computed again from the audio past it; the corpus manifest's utterances for
controller training.

Streaming. An enrollment's audio may be waveforms or ``AudioSource``s (``hra.audio.EncodedAudio``: FLAC bytes,
decoded when used). Features are what an epoch re-reads, and with speed-perturbed copies they are several times
the audio: batches are cached while a ``FeatureBudget`` lasts (every enrollment of a normal size fits the default,
so nothing changes for it); the batches past it keep only their rows and compute their features (decode, perturb,
log-mel) each time they are used. Either way a batch's features are the same numbers, so training gives the same
head whatever the budget (a test checks it); only memory and time differ."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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


class AudioSource(Protocol):
    """Audio decoded when used: its length without decoding, its 16 kHz mono float32 waveform on ``load()``."""

    num_samples: int

    def load(self) -> torch.Tensor: ...


Audio = torch.Tensor | AudioSource


def num_samples(audio: Audio) -> int:
    return audio.numel() if isinstance(audio, torch.Tensor) else int(audio.num_samples)


def load_audio(audio: Audio) -> torch.Tensor:
    return audio if isinstance(audio, torch.Tensor) else audio.load()


@dataclass(frozen=True)
class SpeedPerturb:
    """Play ``speed`` times faster (tempo and pitch together, like sox ``speed``) by resampling."""

    speed: float
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ValueError("speed must be positive")

    @property
    def _orig(self) -> int:
        return int(round(self.sample_rate * self.speed))

    def length(self, n: int) -> int:
        """Samples out for ``n`` in (torchaudio's resample: ceil(n x new / orig))."""
        return n if self.speed == 1.0 else -(-n * self.sample_rate // self._orig)

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        if self.speed == 1.0:
            return waveform
        return AF.resample(waveform.to(torch.float32), self._orig, self.sample_rate)


class FeatureBudget:
    """Bytes of features that may stay cached, shared by all of an enrollment's batches: first come, first kept,
    and once one batch does not fit, no later one is kept (so later batches need not be made to be measured)."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.left = int(max_bytes)

    @property
    def spent(self) -> bool:
        return self.left == 0

    def take(self, nbytes: int) -> bool:
        if nbytes > self.left:
            self.left = 0
            return False
        self.left -= nbytes
        return True


class PreparedBatch:
    """A batch of utterances and its frozen front-end features: kept from preparation (``cached``), or computed
    again by ``make`` every time ``encoder_input`` is read."""

    def __init__(
        self,
        encoder_input: EncoderInput | None,
        targets: list[list[int]],
        indices: list[int],
        make: Callable[[], EncoderInput] | None = None,
    ) -> None:
        if (encoder_input is None) == (make is None):
            raise ValueError("a batch needs its features or a way to make them, not both")
        self._features = encoder_input
        self._make = make
        self.targets = targets
        self.indices = indices

    @property
    def cached(self) -> bool:
        return self._features is not None

    @property
    def encoder_input(self) -> EncoderInput:
        return self._features if self._features is not None else self._make()  # type: ignore[misc]

    @property
    def num_tokens(self) -> int:
        return sum(len(t) + 1 for t in self.targets)  # + end of text


def prepare_batches(
    backbone: Backbone,
    waveforms: Sequence[Audio] | Mapping[int, Audio],
    targets: Sequence[list[int]],
    indices: Sequence[int],
    max_batch_frames: int,
    device: torch.device,
    transform: SpeedPerturb | None = None,
    budget: FeatureBudget | None = None,
) -> list[PreparedBatch]:
    """Batches of ``indices`` (waveforms[i] through ``transform``, targets[i]), features prepared by the backbone:
    kept while ``budget`` lasts (no budget: always), else made again on each use."""
    transform = transform or SpeedPerturb(1.0)
    lengths = [encoder_frames(transform.length(num_samples(waveforms[i]))) for i in indices]

    def features(rows: list[int]) -> EncoderInput:
        with torch.no_grad():
            enc = backbone.prepare([transform(load_audio(waveforms[i])).to(torch.float32) for i in rows])
        return EncoderInput(features=enc.features.to(device), frames=enc.frames.to(device))

    batches = []
    for group in frame_bounded_batches(lengths, max_batch_frames):
        rows = [indices[g] for g in group]
        enc = None if budget is not None and budget.spent else features(rows)
        if enc is not None and (budget is None or budget.take(enc.features.numel() * enc.features.element_size())):
            batches.append(PreparedBatch(enc, [targets[i] for i in rows], rows))
        else:
            batches.append(PreparedBatch(None, [targets[i] for i in rows], rows,
                                         make=lambda rows=rows: features(rows)))
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
