"""Per-speaker head training: what the train worker calls.

Only the head trains. The backbone and the controller are frozen (``requires_grad`` off), so autograd only
keeps what the head's gradient needs. Front-end features are computed once and cached for all epochs.
The loss is the frozen decoder's teacher-forced cross-entropy on the transcript tokens.

Recipe: a seeded split of the enrollment data into train and a held-out slice (early stopping on its loss;
the best epoch's head is returned), Adam with warmup and cosine decay, batches bounded by encoder frames,
a wall-clock budget and an epoch budget, a progress callback after every step, cancellation by ``should_stop``.
The loop itself is ``hra.training.loop.fit``, shared with the baseline adapters of the benchmark.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from hra.backbone.base import EncoderInput
from hra.errors import FoundationMismatch
from hra.foundation import ASSETS_DIR, Foundation
from hra.hra.artifacts import head_from_bytes
from hra.hra.heads import HEAD_TYPES, Head
from hra.hra.hook import HRAHook
from hra.inference import check_head_fits
from hra.training.augment import SpecAugment
from hra.training.data import PreparedBatch
from hra.training.loop import (
    TrainProgress, evaluate_loss, fit, lr_factor, prepare_enrollment, split_holdout, teacher_forced_batch_loss,
)

__all__ = [
    "HeadTrainingOptions", "HeadTrainingResult", "TrainProgress", "batch_loss", "load_prior_head", "lr_factor",
    "mean_loss", "prior_path", "resolve_precision", "split_holdout", "train_head",
]


@dataclass(frozen=True)
class HeadTrainingOptions:
    """head_type: "linear" | "ffn"; ffn_hidden: FFN inner width; init: "zero" (fresh head, zero output),
    "prior" (the population prior shipped with the controller; an error if there is none for this foundation) or
    "auto" (the prior when one fits this foundation, else zero); ignored when an ``init_head`` is given.
    max_seconds / max_epochs: budgets (whichever ends first); patience: epochs without held-out improvement
    before stopping; holdout_fraction / min_holdout / min_train: the held-out slice (none when the set is too
    small, then the last epoch wins); max_batch_frames: encoder frames per batch (padding included);
    precision: "float32", "bfloat16" (autocast of the frozen forward/backward; the head's weights and the
    optimizer stay float32) or "auto" (bfloat16 on CPUs that do it natively, float32 elsewhere: see
    ``resolve_precision``); spec_augment: frequency
    and time masks on the cached features of every training step; speed_perturb: speeds of resampled copies of
    the training utterances (each epoch trains on one version; () = none)."""

    head_type: str = "linear"
    ffn_hidden: int = 128
    init: str = "auto"
    max_seconds: float = 60.0
    max_epochs: int = 12
    # 1e-2, not 3e-3: at 3e-3 the best epoch was always the last one (an under-trained head); on 3 failing voices
    # at 50 utterances 1e-2 cut held-out WER by 4-15 % relative, and 3e-2 diverged on one of them.
    learning_rate: float = 1e-2
    weight_decay: float = 0.0
    warmup_steps: int = 4
    min_lr_fraction: float = 0.1
    grad_clip: float = 1.0
    max_batch_frames: int = 2400
    holdout_fraction: float = 0.1
    min_holdout: int = 3
    min_train: int = 5
    patience: int = 5
    precision: str = "auto"
    spec_augment: bool = False
    speed_perturb: tuple[float, ...] = (0.85, 0.93, 1.07, 1.15)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.head_type not in HEAD_TYPES:
            raise ValueError(f"head_type must be one of {HEAD_TYPES}")
        if self.init not in ("zero", "prior", "auto"):
            raise ValueError("init must be 'zero', 'prior' or 'auto'")
        if self.max_seconds <= 0 or self.max_epochs <= 0:
            raise ValueError("budgets must be positive")
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError("holdout_fraction must be in [0, 1)")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be positive")
        if self.precision not in ("auto", "float32", "bfloat16"):
            raise ValueError("precision must be auto, float32 or bfloat16")
        if any(not 0.5 <= s <= 2.0 for s in self.speed_perturb):
            raise ValueError("speed_perturb factors must be in [0.5, 2]")


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


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """"auto": bfloat16 on a CPU with native bfloat16 matmuls (AVX512-BF16/AMX), else float32 (CUDA included)."""
    if precision == "float32":
        return torch.float32
    if precision == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        # Measured on an H100 (benchmarks/results/device_h100.json): under bfloat16 autocast, attention goes to
        # cuDNN, which plans every new utterance-length shape; a new speaker's linear head took 11.5 s against
        # 2.1 s in float32, and bfloat16 was no faster once warm (a 38M-parameter model is launch-bound).
        return torch.float32
    return torch.bfloat16 if _cpu_has_native_bf16() else torch.float32


def _cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and _cpu_flag("avx512_bf16", "amx_bf16")
    except (AttributeError, RuntimeError):
        return False


def _cpu_flag(*flags: str) -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            text = info.read()
    except OSError:
        return False
    return any(f" {flag}" in text for flag in flags)


def batch_loss(
    foundation: Foundation,
    head: Head,
    batch: PreparedBatch,
    dtype: torch.dtype = torch.float32,
    augment: Callable[[EncoderInput], EncoderInput] | None = None,
) -> torch.Tensor:
    """Teacher-forced loss of one batch with ``head`` applied to every sample (scalar, float32)."""

    def encode(enc: EncoderInput):
        hook = HRAHook(foundation.controller, head, frames=enc.frames)
        encoder_out = foundation.backbone.encode(enc, hook)
        return encoder_out, hook.decoder_hook()

    return teacher_forced_batch_loss(foundation.backbone, batch, encode, dtype, augment)


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
    utterances: Sequence[tuple[torch.Tensor, str]],
    options: HeadTrainingOptions = HeadTrainingOptions(),
    init_head: Head | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> HeadTrainingResult:
    """Train a speaker's head on (waveform (N,) float32 16 kHz, transcript) pairs.

    ``init_head`` warm-starts from an existing head (continual updates). Raises ``TrainingCancelled`` when
    ``should_stop()`` turns true, ``ValueError`` for unusable input.
    """
    started = time.monotonic()
    device = foundation.device
    data = prepare_enrollment(foundation.backbone, utterances, options, device)
    head, init_kind = _initial_head(foundation, options, init_head)
    head = head.to(device).train().requires_grad_(True)
    dtype = resolve_precision(options.precision, device)
    augment = None
    if options.spec_augment:
        spec, gen = SpecAugment(), torch.Generator().manual_seed(options.seed)
        augment = lambda enc: spec(enc, gen)  # noqa: E731

    def loss(batch: PreparedBatch, aug) -> torch.Tensor:
        return batch_loss(foundation, head, batch, dtype, aug)

    result = fit(head, loss, data, options, started, augment, progress, should_stop)
    head.eval().requires_grad_(False)
    seconds = time.monotonic() - started
    history = result.history
    metrics = {
        "head_type": head.head_type,
        "init": init_kind,
        "parameters": head.num_parameters,
        "epochs": result.epochs,
        "steps": result.steps,
        "seconds": round(seconds, 3),
        "prepare_seconds": round(result.prepare_seconds, 3),
        "stopped_by": result.stopped_by,
        "best_epoch": result.best_epoch,
        "train_loss": history[-1]["train_loss"] if history else None,
        "holdout_loss": result.best_loss,
        "holdout_loss_initial": result.holdout_initial,
        "train_utterances": len(data.train_indices),
        "holdout_utterances": len(data.hold_indices),
        "history": history,
        "options": asdict(options),
        "precision": str(dtype).removeprefix("torch."),
        "foundation_fingerprint": foundation.fingerprint,
    }
    return HeadTrainingResult(head=head, metrics=metrics)
