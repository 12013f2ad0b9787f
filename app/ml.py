"""The one seam between the service and the ML package.

The API and the workers talk to the model only through ``MLService``: audio in, text or head artifacts out.
Heads cross the seam as artifact bytes (safetensors) or as a ``HeadRef`` (the head's immutable id and a callable
that fetches its artifact, called only when the head is not already parsed in memory); waveforms as opaque values
produced by ``decode_audio``. ``app.hra_ml.HRAMLService`` is the real implementation over ``hra``; tests inject a
fake through ``app.container.Services``. This module imports neither ``hra`` nor torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

FoundationPart = Literal["backbone", "controller"]


class MLError(Exception):
    """Base of the errors the seam raises (the ML package's own errors are translated into these)."""


class InvalidAudio(MLError):
    """The bytes are not decodable audio."""


class AudioTooLongForModel(InvalidAudio):
    """Audio longer than the decoder accepts at all (checked while decoding, before the service's own limit)."""


class TrainingStopped(MLError):
    """Training ended early because ``should_stop()`` turned true."""


class ModelUnavailable(MLError):
    """The foundation (backbone wheel or controller weights) cannot be loaded."""


class IncompatibleHead(MLError):
    """A head artifact was made for another foundation, or is not a head artifact at all."""


@dataclass(frozen=True)
class HeadRef:
    """A head by its immutable id (a head row's artifact never changes: a new version is a new id).

    ``load`` returns the artifact bytes (e.g. ``functools.partial(store.get, head.object_key)``); a service with a
    head cache calls it only on a miss, in the caller's thread, and lets its exceptions (``ObjectNotFound``,
    ``ObjectStoreUnavailable``) through unchanged. Which head is in service is the caller's per-request lookup."""

    id: str
    load: Callable[[], bytes] = field(compare=False, repr=False)


HeadInput = bytes | HeadRef | None  # what ``MLService.transcribe`` takes per utterance


def head_artifact(head: HeadInput) -> bytes | None:
    """The artifact bytes of a head input (loads a ``HeadRef``): for services that keep no cache."""
    return head.load() if isinstance(head, HeadRef) else head


@dataclass(frozen=True)
class Transcript:
    """One utterance's transcription with what the decoder knows of it (OpenAI's ``verbose_json`` segment fields)."""

    text: str
    tokens: tuple[int, ...] = ()  # the text's token ids (no special tokens)
    avg_logprob: float = 0.0  # log-probability per token of the chosen hypothesis (end-of-text counted)
    no_speech_prob: float = 0.0  # P(<|nocaptions|>) at the first position


@dataclass(frozen=True)
class DecodedAudio:
    waveform: Any  # 16 kHz mono float32 samples (a torch tensor in the real service)
    duration_s: float
    original_sample_rate: int
    original_channels: int


@dataclass(frozen=True)
class TrainingRequest:
    head_type: str
    max_seconds: float
    max_epochs: int
    seed: int = 0
    metadata: dict = field(default_factory=dict)  # stored in the artifact as given


@dataclass(frozen=True)
class TrainingProgress:
    step: int
    total_steps: int | None
    loss: float | None
    fraction: float  # 0..1


@dataclass(frozen=True)
class TrainedHead:
    artifact: bytes  # safetensors
    head_type: str
    parameters: int
    backbone_fingerprint: str
    controller_fingerprint: str
    metrics: dict


class MLService(Protocol):
    def decode_audio(self, data: bytes, max_seconds: float | None = None) -> DecodedAudio:
        """Any supported container/rate/channels -> 16 kHz mono; raises ``InvalidAudio``. ``max_seconds``: decode
        at most this long (``AudioTooLongForModel`` beyond; default: the decoder's own limit)."""
        ...

    def encode_flac(self, waveform: Any) -> bytes: ...

    def word_errors(self, reference: str, hypothesis: str) -> tuple[int, int]:
        """(word errors, reference words) after the shared text normalization."""
        ...

    def transcribe(self, waveforms: Sequence[Any], heads: Sequence[HeadInput]) -> list[str]:
        """Texts of ``waveforms`` in order; ``heads[i]`` is a head artifact, a ``HeadRef`` or ``None`` for the base
        model. Thread-safe: concurrent calls may be batched together. Raises ``IncompatibleHead`` for a head that
        does not load (for this call only)."""
        ...

    def transcribe_detailed(self, waveforms: Sequence[Any], heads: Sequence[HeadInput]) -> list[Transcript]:
        """``transcribe`` with each text's tokens, average log-probability and no-speech probability."""
        ...

    def cache_stats(self) -> dict:
        """The head cache's counters: hits, misses, evictions, entries, bytes, max_bytes."""
        ...

    def evict(self, head_id: Any) -> bool:
        """Forget the parsed head of ``head_id`` (erasure); True when it was cached."""
        ...

    def train(
        self,
        utterances: Sequence[tuple[Any, str]],
        request: TrainingRequest,
        init_head: bytes | None,
        progress: Callable[[TrainingProgress], None],
        should_stop: Callable[[], bool],
    ) -> TrainedHead:
        """A head trained on (audio, transcript) pairs; audio is a waveform or the stored bytes of an utterance
        (16 kHz mono FLAC, as ``encode_flac`` wrote it), which training decodes only when it uses them."""
        ...

    def describe_foundation(self) -> dict: ...

    def foundation_artifact(self, part: FoundationPart) -> bytes: ...

    def warm_up(self) -> None:
        """Load the foundation now (workers call this once at start-up)."""
        ...
