"""Training and running the baseline adapters, with the same loop, data split and budget as an HRA head.

``train_adapter`` is ``hra.training.head.train_head`` with an ``EncoderAdapter`` in place of the head: both train
through ``hra.training.loop.SpeakerTraining`` (``fit`` with the frozen decoder's teacher-forced cross-entropy), so
a baseline compared with a head gets the same enrollment batches, held-out slice, schedule, precision,
augmentation and wall-clock budget (only the learning rate is the baseline's own). ``transcribe_adapted`` decodes
with the backbone's guarded decoding.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from hra.backbone.base import Backbone, EncoderInput
from hra.baselines.adapters import AdapterConfig, EncoderAdapter, EncoderSpec, make_adapter
from hra.training.data import PreparedBatch
from hra.training.head import HeadTrainingOptions
from hra.training.loop import Encode, SpeakerTraining, TrainProgress, teacher_forced_batch_loss
from hra.training.schedule import with_schedule

SAMPLE_RATE = 16000

# Learning rates per kind (the head's is HEAD_SCHEDULE.learning_rate, 3e-3), each the best of a sweep
# (houlsby and lora 1e-3 / 3e-3 / 1e-2; full_ft 3e-5 / 1e-4 / 3e-4 / 1e-3) by the teacher-forced loss on 20
# eval utterances of a controller-group voice (espeak-de, never a new speaker) after the head's recipe and 60-s
# budget, 50 enrollment utterances, cut context. Test losses: houlsby 1.30 / 1.14 / 2.62 (diverged);
# lora 0.86 / 0.88 / 2.29; full_ft 0.93 / 0.83 / 0.75 / 1.23; base 3.28.
DEFAULT_LEARNING_RATES: dict[str, float] = {"houlsby": 3e-3, "lora": 1e-3, "full_ft": 3e-4}


@dataclass
class AdapterTrainingResult:
    adapter: EncoderAdapter
    metrics: dict


def adapter_encode(adapter: EncoderAdapter) -> Encode:
    """The adapted encoder (no decoder hook: the baselines leave the decoder alone)."""
    return lambda enc: (adapter.encode(enc), None)


def adapter_loss(
    backbone: Backbone,
    adapter: EncoderAdapter,
    batch: PreparedBatch,
    dtype: torch.dtype = torch.float32,
    augment: Callable[[EncoderInput], EncoderInput] | None = None,
) -> torch.Tensor:
    """Teacher-forced loss of one batch through the adapted encoder (scalar, float32)."""
    return teacher_forced_batch_loss(backbone, batch, adapter_encode(adapter), dtype, augment)


def train_adapter(
    backbone: Backbone,
    utterances: Sequence[tuple[torch.Tensor, str]],
    config: AdapterConfig,
    options: HeadTrainingOptions = HeadTrainingOptions(),
    learning_rate: float | None = None,
    spec: EncoderSpec | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> AdapterTrainingResult:
    """Train a fresh ``config.kind`` adapter on (waveform (N,) float32 16 kHz, transcript) pairs.

    ``options`` is the head's recipe (its loop settings: budgets, split, schedule, precision; head_type,
    ffn_hidden and init do not apply); ``learning_rate`` (in place of the schedule's) defaults to
    ``DEFAULT_LEARNING_RATES[config.kind]``.
    The time budget covers building the adapter (the encoder copy) as well.
    """
    started = time.monotonic()
    lr = learning_rate if learning_rate is not None else DEFAULT_LEARNING_RATES[config.kind]
    options = with_schedule(options, learning_rate=lr)
    device = torch.device(getattr(backbone, "device", torch.device("cpu")))
    run = SpeakerTraining.prepare(backbone, utterances, options, device, started)
    adapter = make_adapter(backbone, config, spec, seed=options.seed)
    result = run.train(adapter, adapter_encode(adapter), progress, should_stop)
    adapter.freeze()
    metrics = {
        "kind": config.kind,
        "config": config.to_dict(),
        "parameters": adapter.num_parameters,
        **run.metrics(result),
        "learning_rate": lr,
        "precision": run.precision,
    }
    return AdapterTrainingResult(adapter=adapter, metrics=metrics)


@torch.inference_mode()
def transcribe_adapted(
    backbone: Backbone, adapter: EncoderAdapter, waveforms: list[torch.Tensor], batch_size: int = 16
) -> list[str]:
    """Like ``hra.inference.transcribe`` for one speaker, with the adapter's encoder; guarded decoding."""
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    order = sorted(range(len(waveforms)), key=lambda i: waveforms[i].numel())
    texts: list[str] = [""] * len(waveforms)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = backbone.prepare([waveforms[i].to(torch.float32) for i in rows])
        encoder_out = adapter.encode(batch)
        durations = [waveforms[i].numel() / SAMPLE_RATE for i in rows]
        for i, text in zip(rows, backbone.decode(encoder_out, durations, frames=batch.frames)):
            texts[i] = text
    return texts
