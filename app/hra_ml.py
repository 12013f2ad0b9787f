"""``HRAMLService``: the ``MLService`` seam (``app.ml``) over the ``hra`` package.

It imports ``hra`` (and torch) lazily, loads the foundation once (guarded by a lock), keeps parsed heads in a
byte-bounded LRU cache and transcribes through one engine that batches the utterances of concurrent requests
(``app.engine``).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from app.ml import (
    AudioTooLongForModel,
    DecodedAudio,
    FoundationPart,
    HeadInput,
    HeadRef,
    IncompatibleHead,
    InvalidAudio,
    ModelUnavailable,
    TrainedHead,
    TrainingProgress,
    TrainingRequest,
    TrainingStopped,
    Transcript,
)
from app.settings import Settings

logger = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
# The engine's groups: base-model and head utterances run in different encoder contexts, so in separate passes.
BASE_GROUP, HEADS_GROUP = "base", "heads"


def resolve_device(setting: str) -> str:
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def limit_malloc_arenas(arenas: int) -> bool:
    """At most ``arenas`` glibc malloc arenas from now on (threads started later share them); True when set. A no-op
    for 0 and where the C library is not glibc."""
    if arenas <= 0:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


class HRAMLService:
    """``MLService`` over the ``hra`` package: the foundation is loaded once, on first use; transcription goes
    through one ``TranscriptionEngine`` (started on first use) and parsed heads through a ``HeadCache``."""

    def __init__(self, settings: Settings, loader: Callable[[], Any] | None = None) -> None:
        """``loader`` builds the foundation (default: ``hra.foundation.load_foundation`` per the settings)."""
        from app.engine import HeadCache

        self._settings = settings
        self._loader = loader or self._load_from_settings
        self._load_lock = threading.Lock()
        self._foundation: Any = None
        self._heads = HeadCache(settings.head_cache_bytes)
        self._engine: Any = None
        self._engine_lock = threading.Lock()

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

        # The embedded mode runs the API and a two-thread worker on a 2-core machine: torch's default (one thread per
        # core in every process) oversubscribes the cores and ran ~10x slower than one thread each.
        torch.set_num_threads(max(1, self._settings.torch_threads))
        limit_malloc_arenas(self._settings.malloc_arena_max)
        device = resolve_device(self._settings.device)
        logger.info("loading the foundation on %s", device)
        return load_foundation(
            controller_path=self._settings.controller_path,
            device=device,
            beam_size=self._settings.beam_size,
            decoder=self._settings.decoder,
            encoder_dtype=self._settings.encoder_dtype,
            base_compute_type=self._settings.decoder_base_compute_type,
            parallel_decodes=self._settings.engine_threads,  # the engine's runners decode at the same time
        )

    def warm_up(self) -> None:
        self._get_foundation()

    def describe_foundation(self) -> dict:
        return self._get_foundation().describe()

    def foundation_artifact(self, part: FoundationPart) -> bytes:
        foundation = self._get_foundation()
        return foundation.backbone_artifact() if part == "backbone" else foundation.controller_artifact()

    # ---- audio and text -------------------------------------------------------------------------------------

    def decode_audio(self, data: bytes, max_seconds: float | None = None) -> DecodedAudio:
        from hra.audio import decode_audio
        from hra.errors import AudioDecodeError, AudioTooLong

        try:
            decoded = decode_audio(data) if max_seconds is None else decode_audio(data, max_seconds)
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

    def _parse_for_serving(self, artifact: bytes) -> tuple[Any, int]:
        """(parsed head, bytes it holds) for the cache; refuses a head that does not fit the foundation."""
        from hra.inference import check_head_fits

        head = self._parse_head(artifact)
        try:
            check_head_fits(head, self._get_foundation())
        except ValueError as exc:
            raise IncompatibleHead(str(exc)) from exc
        head.eval()
        size = sum(t.numel() * t.element_size() for t in (*head.parameters(), *head.buffers()))
        return head, size

    def load_head(self, head: HeadInput) -> Any:
        """A parsed head for serving (``None`` for the base model), from the cache: keyed by ``HeadRef.id``, else by
        the artifact's sha256. Parsed heads are shared between requests and never mutated."""
        if head is None:
            return None
        if isinstance(head, HeadRef):
            return self._heads.get_or_load(f"id:{head.id}", lambda: self._parse_for_serving(head.load()))
        if isinstance(head, (bytes, bytearray, memoryview)):
            artifact = bytes(head)
            key = f"sha256:{hashlib.sha256(artifact).hexdigest()}"
            return self._heads.get_or_load(key, lambda: self._parse_for_serving(artifact))
        raise TypeError(f"a head is artifact bytes, a HeadRef or None, not {type(head).__name__}")

    def cache_stats(self) -> dict:
        return self._heads.stats()

    def evict(self, head_id: Any) -> bool:
        return self._heads.evict(f"id:{head_id}")

    def engine_stats(self) -> dict:
        """The engine's counters (batches, items, mean batch size, ...); empty before the first transcription."""
        engine = self._engine
        return engine.stats() if engine is not None else {}

    def _get_engine(self) -> Any:
        if self._engine is not None:
            return self._engine
        with self._engine_lock:
            if self._engine is None:
                from app.engine import TranscriptionEngine

                # The engine thread holds the service weakly: a service dropped without close() is collected
                # (with its foundation) and its thread told to stop.
                run, start = weakref.WeakMethod(self._run_batch), weakref.WeakMethod(self._engine_thread_start)
                engine = TranscriptionEngine(
                    lambda waveforms, heads: run()(waveforms, heads),  # type: ignore[misc]
                    max_batch_size=self._settings.engine_max_batch_size,
                    max_wait_s=self._settings.engine_batch_wait_ms / 1000.0,
                    on_thread_start=lambda: (start() or (lambda: None))(),
                    runners=self._settings.engine_threads,
                    group_batch_sizes={BASE_GROUP: self._settings.engine_base_max_batch_size},
                )
                weakref.finalize(self, engine.close, 0)
                self._engine = engine
        return self._engine

    def _engine_thread_start(self) -> None:
        import torch

        # The engine threads are the ones that run the model: the thread count applies to their parallel regions.
        torch.set_num_threads(max(1, self._settings.torch_threads))

    def _run_batch(self, waveforms: list[Any], heads: list[Any]) -> list[Transcript]:
        """One group of a batch (all base-model or all heads, mixed speakers): one backbone pass (engine thread)."""
        from hra.inference import transcribe

        results = transcribe(self._get_foundation(), waveforms, heads, batch_size=max(1, len(waveforms)),
                             detailed=True)
        return [Transcript(r.text, tuple(int(t) for t in r.tokens), float(r.avg_logprob), float(r.no_speech_prob))
                for r in results]

    def transcribe(self, waveforms: Sequence[Any], heads: Sequence[HeadInput]) -> list[str]:
        return [t.text for t in self.transcribe_detailed(waveforms, heads)]

    def transcribe_detailed(self, waveforms: Sequence[Any], heads: Sequence[HeadInput]) -> list[Transcript]:
        waveforms, heads = list(waveforms), list(heads)
        if len(waveforms) != len(heads):
            raise ValueError(f"{len(waveforms)} waveforms but {len(heads)} heads")
        if not waveforms:
            return []
        self._get_foundation()  # ModelUnavailable here, in the caller's thread
        # Heads are parsed (or found in the cache) before anything is queued: a bad artifact fails this call only.
        # The same head repeated in one call (a long recording's chunks) is looked up once.
        parsed: dict[Any, Any] = {}
        loaded = []
        for head in heads:
            memo = id(head)
            if memo not in parsed:
                parsed[memo] = (head, self.load_head(head))  # keep ``head`` alive so that its id stays unique
            loaded.append(parsed[memo][1])
        # Base-model utterances run in Whisper's 30-s window, heads in the head context: separate passes.
        groups = [BASE_GROUP if h is None else HEADS_GROUP for h in loaded]
        return self._get_engine().transcribe(waveforms, loaded, groups)

    def close(self) -> None:
        """Stop the engine thread (queued utterances are still transcribed); a later call starts a new one."""
        with self._engine_lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    def train(
        self,
        utterances: Sequence[tuple[Any, str]],
        request: TrainingRequest,
        init_head: bytes | None,
        progress: Callable[[TrainingProgress], None],
        should_stop: Callable[[], bool],
    ) -> TrainedHead:
        from hra.adapter.artifacts import head_to_bytes
        from hra.audio import EncodedAudio
        from hra.errors import TrainingCancelled
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

        # Stored bytes stay encoded until their batch's features are made: memory holds the FLAC, not the samples.
        streamed = [(EncodedAudio(bytes(a)) if isinstance(a, (bytes, bytearray)) else a, text) for a, text in utterances]
        try:
            result = train_head(
                foundation, streamed, options, init_head=init, progress=report, should_stop=should_stop
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
