"""The one seam between the service and the ML package.

The API and the workers talk to the model only through ``MLService``: audio in, text or head artifacts out.
Heads cross the seam as artifact bytes (safetensors), waveforms as opaque values produced by ``decode_audio``.
``HRAMLService`` is the real implementation over ``hra``; it imports ``hra`` (and torch) lazily, loads the
foundation once (guarded by a lock) and serializes inference. Tests inject a fake through
``app.container.Services``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from app.settings import Settings

logger = logging.getLogger(__name__)

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
    def decode_audio(self, data: bytes) -> DecodedAudio:
        """Any supported container/rate/channels -> 16 kHz mono; raises ``InvalidAudio``."""
        ...

    def encode_flac(self, waveform: Any) -> bytes: ...

    def word_errors(self, reference: str, hypothesis: str) -> tuple[int, int]:
        """(word errors, reference words) after the shared text normalization."""
        ...

    def transcribe(self, waveforms: Sequence[Any], heads: Sequence[bytes | None]) -> list[str]:
        """One pass over a batch; ``heads[i]`` is a head artifact or ``None`` for the base model."""
        ...

    def train(
        self,
        utterances: Sequence[tuple[Any, str]],
        request: TrainingRequest,
        init_head: bytes | None,
        progress: Callable[[TrainingProgress], None],
        should_stop: Callable[[], bool],
    ) -> TrainedHead: ...

    def describe_foundation(self) -> dict: ...

    def foundation_artifact(self, part: FoundationPart) -> bytes: ...

    def warm_up(self) -> None:
        """Load the foundation now (workers call this once at start-up)."""
        ...


def resolve_device(setting: str) -> str:
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class HRAMLService:
    """``MLService`` over the ``hra`` package: the foundation is loaded once, on first use."""

    def __init__(
        self, settings: Settings, head_cache_size: int = 32, loader: Callable[[], Any] | None = None
    ) -> None:
        """``loader`` builds the foundation (default: ``hra.foundation.load_foundation`` per the settings)."""
        self._settings = settings
        self._loader = loader or self._load_from_settings
        self._load_lock = threading.Lock()
        self._infer_lock = threading.Lock()  # one model pass at a time: torch already uses every thread given
        self._foundation: Any = None
        self._heads: OrderedDict[str, Any] = OrderedDict()
        self._head_cache_size = head_cache_size

    # ---- foundation -----------------------------------------------------------------------------------------

    def _get_foundation(self) -> Any:
        if self._foundation is not None:
            return self._foundation
        with self._load_lock:
            if self._foundation is None:
                from hra.errors import HraError

                try:
                    self._foundation = self._loader()
                except HraError as exc:
                    raise ModelUnavailable(str(exc)) from exc
        return self._foundation

    def _load_from_settings(self) -> Any:
        import torch

        from hra.foundation import load_foundation

        # The embedded mode runs the API and two workers on a 2-core machine: torch's default (one thread per
        # core in every process) oversubscribes the cores and ran ~10x slower than one thread each.
        torch.set_num_threads(max(1, self._settings.torch_threads))
        device = resolve_device(self._settings.device)
        logger.info("loading the foundation on %s", device)
        return load_foundation(
            controller_path=self._settings.controller_path, device=device, beam_size=self._settings.beam_size
        )

    def warm_up(self) -> None:
        self._get_foundation()

    def describe_foundation(self) -> dict:
        return self._get_foundation().describe()

    def foundation_artifact(self, part: FoundationPart) -> bytes:
        foundation = self._get_foundation()
        return foundation.backbone_artifact() if part == "backbone" else foundation.controller_artifact()

    # ---- audio and text -------------------------------------------------------------------------------------

    def decode_audio(self, data: bytes) -> DecodedAudio:
        from hra.audio import decode_audio
        from hra.errors import AudioDecodeError, AudioTooLong

        try:
            decoded = decode_audio(data)
        except AudioTooLong as exc:
            raise AudioTooLongForModel(str(exc)) from exc
        except AudioDecodeError as exc:
            raise InvalidAudio(str(exc)) from exc
        return DecodedAudio(
            waveform=decoded.waveform,
            duration_s=float(decoded.duration_s),
            original_sample_rate=int(decoded.original_sample_rate),
            original_channels=int(decoded.original_channels),
        )

    def encode_flac(self, waveform: Any) -> bytes:
        from hra.audio import encode_flac

        return encode_flac(waveform)

    def word_errors(self, reference: str, hypothesis: str) -> tuple[int, int]:
        from hra.text import word_errors

        errors, words = word_errors(reference, hypothesis)
        return int(errors), int(words)

    # ---- heads, inference, training -------------------------------------------------------------------------

    def _parse_head(self, artifact: bytes) -> Any:
        from hra.errors import FoundationMismatch, InvalidArtifact
        from hra.adapter.artifacts import head_from_bytes

        try:
            return head_from_bytes(artifact, self._get_foundation())
        except (FoundationMismatch, InvalidArtifact) as exc:
            raise IncompatibleHead(str(exc)) from exc

    def _load_head(self, artifact: bytes) -> Any:
        """A parsed head for serving, from a small LRU keyed by the artifact's sha256 (never mutated)."""
        digest = hashlib.sha256(artifact).hexdigest()
        head = self._heads.get(digest)
        if head is not None:
            self._heads.move_to_end(digest)
            return head
        head = self._parse_head(artifact)
        self._heads[digest] = head
        while len(self._heads) > self._head_cache_size:
            self._heads.popitem(last=False)
        return head

    def transcribe(self, waveforms: Sequence[Any], heads: Sequence[bytes | None]) -> list[str]:
        from hra.inference import transcribe

        foundation = self._get_foundation()
        with self._infer_lock:
            loaded = [None if artifact is None else self._load_head(artifact) for artifact in heads]
            return list(transcribe(foundation, list(waveforms), loaded))

    def train(
        self,
        utterances: Sequence[tuple[Any, str]],
        request: TrainingRequest,
        init_head: bytes | None,
        progress: Callable[[TrainingProgress], None],
        should_stop: Callable[[], bool],
    ) -> TrainedHead:
        from hra.errors import TrainingCancelled
        from hra.adapter.artifacts import head_to_bytes
        from hra.training.head import HeadTrainingOptions, train_head

        foundation = self._get_foundation()
        init = self._parse_head(init_head) if init_head is not None else None  # a private copy: training mutates
        options = HeadTrainingOptions(
            head_type=request.head_type,
            max_seconds=request.max_seconds,
            max_epochs=request.max_epochs,
            seed=request.seed,
        )

        def report(p: Any) -> None:
            progress(
                TrainingProgress(
                    step=int(p.step),
                    total_steps=None if p.total_steps is None else int(p.total_steps),
                    loss=None if p.loss is None else float(p.loss),
                    fraction=float(p.fraction),
                )
            )

        try:
            result = train_head(
                foundation, list(utterances), options, init_head=init, progress=report, should_stop=should_stop
            )
        except TrainingCancelled as exc:
            raise TrainingStopped(str(exc)) from exc
        head = result.head
        return TrainedHead(
            artifact=head_to_bytes(head, foundation, request.metadata),
            head_type=head.head_type,
            parameters=int(head.num_parameters),
            backbone_fingerprint=foundation.backbone.fingerprint,
            controller_fingerprint=foundation.controller_fingerprint,
            metrics=dict(result.metrics),
        )
