"""Per-speaker head training: what the train worker calls.

Only the head trains. The backbone and the controller are frozen (``requires_grad`` off), so autograd only
keeps what the head's gradient needs. Front-end features are computed once and cached for all epochs.
The loss is the frozen decoder's teacher-forced cross-entropy on the transcript tokens.

Recipe: a seeded split of the enrollment data into train and a held-out slice (early stopping on its loss;
the best epoch's head is returned), Adam with warmup and cosine decay, batches bounded by encoder frames,
a wall-clock budget and an epoch budget, a progress callback after every step, cancellation by ``should_stop``.
The set-up and the loop (``hra.training.loop.SpeakerTraining``, ``fit``) are shared with the baseline adapters of
the benchmark; the schedule is a ``hra.training.schedule.TrainingSchedule``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from hra.backbone.base import EncoderInput
from hra.errors import FoundationMismatch
from hra.foundation import ASSETS_DIR, Foundation
from hra.adapter.artifacts import head_from_bytes
from hra.adapter.heads import HEAD_TYPES, Head
from hra.adapter.hook import HRAHook
from hra.inference import check_head_fits
from hra.training.data import Audio, PreparedBatch
from hra.training.loop import (
    Encode, SpeakerTraining, TrainProgress, evaluate_loss, resolve_precision, split_holdout, teacher_forced_batch_loss,
)
from hra.training.schedule import (
    RecordNames, TrainingSchedule, options_from_record, options_record, schedule_names,
)

__all__ = [
    "HEAD_SCHEDULE", "HeadTrainingOptions", "HeadTrainingResult", "TrainProgress", "batch_loss", "head_encode",
    "load_prior_head", "mean_loss", "prior_path", "resolve_precision", "split_holdout", "train_head",
]

# 1e-2, not 3e-3: at 3e-3 the best epoch was always the last one (an under-trained head); on 3 failing voices
# at 50 utterances 1e-2 cut held-out WER by 4-15 % relative, and 3e-2 diverged on one of them.
# Features kept between epochs: 256 MiB holds every copy (recorded and 4 speeds) of ~330 utterances of 5 s
# (160 KB of features each in the >= 5-s head context); a larger enrollment makes the rest again on each use.
DEFAULT_FEATURE_CACHE_BYTES = 256 * 1024 * 1024

HEAD_SCHEDULE = TrainingSchedule(
    learning_rate=1e-2, warmup_steps=4, min_lr_fraction=0.1, grad_clip=1.0, max_batch_frames=2400, weight_decay=0.0
)


@dataclass(frozen=True)
class HeadTrainingOptions:
    """head_type: "linear" | "ffn"; ffn_hidden: FFN inner width; init: "zero" (fresh head, zero output),
    "prior" (the population prior shipped with the controller; an error if there is none for this foundation) or
    "auto" (the prior when one fits this foundation, else zero); ignored when an ``init_head`` is given.
    max_seconds / max_epochs: budgets (whichever ends first); schedule: learning rate, warm-up, decay floor,
    gradient clip, encoder frames per batch and weight decay (``HEAD_SCHEDULE``); patience: epochs without
    held-out improvement before stopping; holdout_fraction / min_holdout / min_train: the held-out slice (none
    when the set is too small, then the last epoch wins); precision: "float32", "bfloat16" (autocast of the
    frozen forward/backward; the head's weights and the optimizer stay float32) or "auto" (bfloat16 on CPUs that
    do it natively, float32 elsewhere: see ``resolve_precision``); spec_augment: frequency and time masks on the
    cached features of every training step; speed_perturb: speeds of resampled copies of the training utterances
    (each epoch trains on one version; () = none); feature_cache_bytes: features kept between epochs (past it
    they are made again from the audio on each use: memory bounded for any enrollment, the same head).

    Records (``to_record``, the metrics' "options") are flat: the schedule's fields under their own names."""

    head_type: str = "linear"
    ffn_hidden: int = 128
    init: str = "auto"
    max_seconds: float = 60.0
    max_epochs: int = 12
    schedule: TrainingSchedule = HEAD_SCHEDULE
    holdout_fraction: float = 0.1
    min_holdout: int = 3
    min_train: int = 5
    patience: int = 5
    precision: str = "auto"
    spec_augment: bool = False
    speed_perturb: tuple[float, ...] = (0.85, 0.93, 1.07, 1.15)
    # Not recorded: it changes memory and time, never the head (``hra.training.data``).
    feature_cache_bytes: int = field(default=DEFAULT_FEATURE_CACHE_BYTES, metadata={"record": False})
    seed: int = 0

    # Record names of the schedule's fields (head metrics and benchmark keys have always used these).
    RECORD_NAMES: ClassVar[RecordNames] = {"schedule": schedule_names()}

    def __post_init__(self) -> None:
        if self.head_type not in HEAD_TYPES:
            raise ValueError(f"head_type must be one of {HEAD_TYPES}")
        if self.init not in ("zero", "prior", "auto"):
            raise ValueError("init must be 'zero', 'prior' or 'auto'")
        if self.max_seconds <= 0 or self.max_epochs <= 0:
            raise ValueError("budgets must be positive")
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError("holdout_fraction must be in [0, 1)")
        if not isinstance(self.schedule, TrainingSchedule):
            raise TypeError("schedule must be a TrainingSchedule")
        if self.precision not in ("auto", "float32", "bfloat16"):
            raise ValueError("precision must be auto, float32 or bfloat16")
        if any(not 0.5 <= s <= 2.0 for s in self.speed_perturb):
            raise ValueError("speed_perturb factors must be in [0.5, 2]")
        if self.feature_cache_bytes < 0:
            raise ValueError("feature_cache_bytes must be >= 0")

    def to_record(self) -> dict[str, Any]:
        """One flat JSON-ready dict, the schedule's fields at the top level (as head metrics record them)."""
        return options_record(self, self.RECORD_NAMES)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "HeadTrainingOptions":
        """Options from ``to_record``'s dict (or the nested form); absent fields keep their defaults."""
        return options_from_record(cls, record, cls.RECORD_NAMES)


@dataclass
class HeadTrainingResult:
    head: Head
    metrics: dict


def prior_path(head_type: str, foundation: Foundation | None = None) -> Path:
    """Where the population prior lies: beside the foundation's controller file (a controller and its priors
    are written together), else in ``hra/assets/``."""
    folder = ASSETS_DIR
    if foundation is not None and foundation.controller_source and Path(foundation.controller_source).is_file():
        folder = Path(foundation.controller_source).parent
    return folder / f"prior_{head_type}.safetensors"


def load_prior_head(foundation: Foundation, head_type: str, path: str | Path | None = None) -> Head:
    """The population prior (mean of the controller-group heads), bound to the foundation it was made with."""
    path = Path(path) if path is not None else prior_path(head_type, foundation)
    if not path.is_file():
        raise FileNotFoundError(f"no population prior for {head_type} heads at {path}")
    head = head_from_bytes(path.read_bytes(), foundation)
    if head.head_type != head_type:
        raise ValueError(f"{path} holds a {head.head_type} head, not {head_type}")
    return head


def head_encode(foundation: Foundation, head: Head) -> Encode:
    """The encoder with ``head`` applied to every sample (through the HRA hook), and its decoder hook."""

    def encode(enc: EncoderInput):
        hook = HRAHook(foundation.controller, head, frames=enc.frames)
        encoder_out = foundation.backbone.encode(enc, hook)
        return encoder_out, hook.decoder_hook()

    return encode


def batch_loss(
    foundation: Foundation,
    head: Head,
    batch: PreparedBatch,
    dtype: torch.dtype = torch.float32,
    augment: Callable[[EncoderInput], EncoderInput] | None = None,
) -> torch.Tensor:
    """Teacher-forced loss of one batch with ``head`` applied to every sample (scalar, float32)."""
    return teacher_forced_batch_loss(foundation.backbone, batch, head_encode(foundation, head), dtype, augment)


def mean_loss(
    foundation: Foundation, head: Head, batches: Sequence[PreparedBatch], dtype: torch.dtype = torch.float32
) -> float:
    """Token-weighted mean teacher-forced loss over batches."""
    return evaluate_loss(lambda batch, _augment: batch_loss(foundation, head, batch, dtype), batches)


def _initial_head(foundation: Foundation, options: HeadTrainingOptions, init_head: Head | None) -> tuple[Head, str]:
    if init_head is not None:
        if init_head.head_type != options.head_type:
            raise ValueError(f"warm start from a {init_head.head_type} head, but head_type={options.head_type}")
        check_head_fits(init_head, foundation)
        return copy.deepcopy(init_head), "warm_start"
    if options.init == "prior":
        return copy.deepcopy(load_prior_head(foundation, options.head_type)), "prior"
    if options.init == "auto":
        try:
            prior = load_prior_head(foundation, options.head_type)
        except (FileNotFoundError, FoundationMismatch):
            prior = None  # no prior for this foundation: a fresh head
        if prior is not None and prior.config == foundation.head_config(options.head_type, options.ffn_hidden):
            return copy.deepcopy(prior), "prior"
    return foundation.new_head(options.head_type, options.ffn_hidden, seed=options.seed), "zero"


def train_head(
    foundation: Foundation,
    utterances: Sequence[tuple[Audio, str]],
    options: HeadTrainingOptions = HeadTrainingOptions(),
    init_head: Head | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> HeadTrainingResult:
    """Train a speaker's head on (audio, transcript) pairs: a waveform (N,) float32 16 kHz, or an ``AudioSource``
    (``hra.audio.EncodedAudio``) decoded only when its batch's features are made (streaming).

    ``init_head`` warm-starts from an existing head (continual updates). Raises ``TrainingCancelled`` when
    ``should_stop()`` turns true, ``ValueError`` for unusable input.
    """
    started = time.monotonic()
    run = SpeakerTraining.prepare(foundation.backbone, utterances, options, foundation.device, started)
    head, init_kind = _initial_head(foundation, options, init_head)
    head = head.to(foundation.device).train().requires_grad_(True)
    result = run.train(head, head_encode(foundation, head), progress, should_stop)
    head.eval().requires_grad_(False)
    metrics = {
        "head_type": head.head_type,
        "init": init_kind,
        "parameters": head.num_parameters,
        **run.metrics(result),
        "options": options.to_record(),
        "precision": run.precision,
        "foundation_fingerprint": foundation.fingerprint,
    }
    return HeadTrainingResult(head=head, metrics=metrics)
