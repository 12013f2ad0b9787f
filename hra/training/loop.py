"""The optimization loop shared by everything trained per speaker: HRA heads and the baseline adapters.

What is trained is any ``nn.Module`` (its parameters with ``requires_grad``); how it changes the frozen backbone
is the caller's ``BatchLoss`` (a head through the HRA hook, a bottleneck adapter through a layer hook, LoRA or a
fine-tuned encoder through a private encoder copy). The recipe is the same for all of them, so that a head and a
baseline compared in the benchmark get the same data, split, schedule and time budget:

- a seeded split of the enrollment utterances into train and a held-out slice (``prepare_enrollment``), plus
  speed-perturbed copies of the training part (``speed_perturb``: each epoch trains on one version, drawn at
  random; the held-out slice stays as recorded);
- Adam with linear warm-up and cosine decay (the schedule is re-fitted after the first epoch to the steps the
  wall-clock budget allows), gradient clipping;
- a wall-clock budget (``max_seconds``, counted from the caller's ``started``, data preparation included; a step
  starts only if the mean step time and a held-out pass still fit in it) and an epoch budget; early stopping on the held-out loss (``patience`` epochs), the best epoch's weights restored;
- a progress callback after every step; cancellation by ``should_stop`` (``TrainingCancelled``).

``SpeakerTraining`` is the set-up around ``fit`` that heads and baselines share (enrollment batches, precision,
feature augmentation, the teacher-forced batch loss, the metrics); a trained kind only says how it encodes.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from hra.adapter.heads import GLOBAL_RNG_LOCK
from hra.backbone.base import Backbone, DecoderHook, EncoderInput
from hra.errors import TrainingCancelled
from hra.training.augment import SpecAugment
from hra.training.data import Audio, FeatureBudget, PreparedBatch, SpeedPerturb, prepare_batches
from hra.training.schedule import TrainingSchedule

Augment = Callable[[EncoderInput], EncoderInput]
# (batch, augmentation or None) -> scalar float32 loss, differentiable w.r.t. the trained module.
BatchLoss = Callable[[PreparedBatch, Augment | None], torch.Tensor]
# The adapted encoder: (augmented) features -> (encoder output, the decoder hook or None).
Encode = Callable[[EncoderInput], tuple[torch.Tensor, DecoderHook | None]]


class LoopOptions(Protocol):
    """The loop's settings (``hra.training.head.HeadTrainingOptions`` has them all)."""

    max_seconds: float
    max_epochs: int
    schedule: TrainingSchedule
    holdout_fraction: float
    min_holdout: int
    min_train: int
    patience: int
    precision: str
    spec_augment: bool
    speed_perturb: tuple[float, ...]
    feature_cache_bytes: int
    seed: int


@dataclass(frozen=True)
class TrainProgress:
    step: int
    total_steps: int
    epoch: int
    loss: float
    fraction: float


@dataclass
class Enrollment:
    """Enrollment utterances as cached batches: the training part and the held-out slice."""

    train_batches: list[PreparedBatch]
    hold_batches: list[PreparedBatch]
    train_indices: list[int]
    hold_indices: list[int]
    train_variants: list[list[PreparedBatch]] = field(default_factory=list)  # speed-perturbed training batches

    @property
    def steps_per_epoch(self) -> int:
        """Batches in the longest version of an epoch (an upper bound for the schedule)."""
        return max(len(b) for b in (self.train_batches, *self.train_variants))

    def epoch_batches(self, rng: random.Random) -> list[PreparedBatch]:
        """The training batches of one epoch: the recorded speed or one of the perturbed versions."""
        if not self.train_variants:
            return self.train_batches
        return rng.choice([self.train_batches, *self.train_variants])


@dataclass
class FitResult:
    steps: int
    best_epoch: int
    best_loss: float | None  # held-out loss of the returned weights (None without a held-out slice)
    holdout_initial: float | None
    stopped_by: str  # "epochs" | "time" | "early_stopping"
    prepare_seconds: float
    history: list[dict] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        return len(self.history)


def split_holdout(n: int, options: LoopOptions) -> tuple[list[int], list[int]]:
    """Seeded split of n utterance indices into (train, holdout)."""
    order = list(range(n))
    random.Random(options.seed).shuffle(order)
    n_hold = max(options.min_holdout, round(n * options.holdout_fraction)) if options.holdout_fraction > 0 else 0
    if n - n_hold < options.min_train:
        n_hold = 0
    return sorted(order[n_hold:]), sorted(order[:n_hold])


def prepare_enrollment(
    backbone: Backbone,
    utterances: Sequence[tuple[Audio, str]],
    options: LoopOptions,
    device: torch.device,
) -> Enrollment:
    """(audio: a waveform (N,) float32 16 kHz or an ``AudioSource``, transcript) pairs -> train and held-out
    batches, features cached within ``options.feature_cache_bytes`` (the recorded speed first, then the perturbed
    copies) and made again on each use past it (``hra.training.data``)."""
    if not utterances:
        raise ValueError("no utterances to train on")
    audio = [a for a, _ in utterances]
    targets = [backbone.token_ids(text) for _, text in utterances]
    if any(not t for t in targets):
        raise ValueError("every utterance needs a non-empty transcript")
    train_idx, hold_idx = split_holdout(len(utterances), options)
    frames = options.schedule.max_batch_frames
    budget = FeatureBudget(options.feature_cache_bytes)
    train = prepare_batches(backbone, audio, targets, train_idx, frames, device, budget=budget)
    hold = prepare_batches(backbone, audio, targets, hold_idx, frames, device, budget=budget)
    variants = [
        prepare_batches(backbone, audio, targets, train_idx, frames, device, SpeedPerturb(speed), budget)
        for speed in options.speed_perturb
    ]
    return Enrollment(
        train_batches=train,
        hold_batches=hold,
        train_indices=train_idx,
        hold_indices=hold_idx,
        train_variants=variants,
    )


def teacher_forced_batch_loss(
    backbone: Backbone,
    batch: PreparedBatch,
    encode: Encode,
    dtype: torch.dtype = torch.float32,
    augment: Augment | None = None,
) -> torch.Tensor:
    """Teacher-forced loss of one batch (scalar, float32) for anything trained per speaker: ``encode`` runs the
    adapted encoder on the (augmented) features and returns its output and the decoder hook, if any."""
    enc = batch.encoder_input if augment is None else augment(batch.encoder_input)
    with torch.autocast(enc.features.device.type, dtype=dtype, enabled=dtype != torch.float32):
        encoder_out, decoder_hook = encode(enc)
        loss = backbone.teacher_forced_loss(encoder_out, batch.targets, frames=enc.frames, decoder_hook=decoder_hook)
    return loss.float()


@torch.no_grad()
def evaluate_loss(loss: BatchLoss, batches: Sequence[PreparedBatch]) -> float:
    """Token-weighted mean loss over batches (no augmentation)."""
    total, tokens = 0.0, 0
    for batch in batches:
        total += float(loss(batch, None)) * batch.num_tokens
        tokens += batch.num_tokens
    return total / max(tokens, 1)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the trained parameters (what a checkpoint of the best epoch needs; frozen weights excluded)."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def fit(
    model: nn.Module,
    loss: BatchLoss,
    data: Enrollment,
    options: LoopOptions,
    started: float,
    augment: Augment | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FitResult:
    """Train ``model``'s parameters that require grad; on return it holds the best epoch's weights.

    ``started``: ``time.monotonic()`` when the caller began (data preparation counts against ``max_seconds``).
    Raises ``TrainingCancelled`` when ``should_stop()`` turns true, ``ValueError`` with nothing to train.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    if not data.train_batches:
        raise ValueError("no training batches")
    schedule = options.schedule
    optimizer = schedule.optimizer(params)
    total_steps = options.max_epochs * data.steps_per_epoch
    rng = random.Random(options.seed)
    with GLOBAL_RNG_LOCK:
        torch.manual_seed(options.seed)

    def check_stop() -> None:
        if should_stop is not None and should_stop():
            raise TrainingCancelled("training cancelled by the caller")

    check_stop()
    hold = data.hold_batches
    t0 = time.monotonic()
    holdout_initial = evaluate_loss(loss, hold) if hold else None
    eval_cost = time.monotonic() - t0  # what one held-out pass costs: reserved in the budget
    best_loss = holdout_initial if holdout_initial is not None else math.inf
    best_state = trainable_state(model)
    best_epoch = 0
    prepare_seconds = time.monotonic() - started
    history: list[dict] = []
    step = 0
    step_seconds = 0.0
    stopped_by = "epochs"
    for epoch in range(1, options.max_epochs + 1):
        batches = data.epoch_batches(rng)
        order = list(range(len(batches)))
        rng.shuffle(order)
        epoch_loss, epoch_tokens, out_of_time = 0.0, 0, False
        for b in order:
            check_stop()
            # A step starts only if it is expected to end, with the epoch's held-out pass, within the budget.
            expected_step = step_seconds / step if step else 0.0
            if time.monotonic() - started + eval_cost + expected_step > options.max_seconds:
                out_of_time = True
                break
            step_started = time.monotonic()
            batch = batches[b]
            schedule.set_rates(optimizer, step, total_steps, [schedule.learning_rate])
            value_t = loss(batch, augment)
            optimizer.zero_grad(set_to_none=True)
            value_t.backward()
            schedule.clip(params)
            optimizer.step()
            step += 1
            step_seconds += time.monotonic() - step_started
            value = float(value_t.detach())
            epoch_loss += value * batch.num_tokens
            epoch_tokens += batch.num_tokens
            if progress is not None:
                elapsed = time.monotonic() - started
                fraction = min(1.0, max(step / total_steps, elapsed / options.max_seconds))
                progress(TrainProgress(step, total_steps, epoch, value, fraction))
        if epoch_tokens == 0:
            stopped_by = "time"
            break
        if epoch == 1 and step:
            # The schedule spans the steps the budget allows, measured on the first epoch.
            per_step = (time.monotonic() - started - prepare_seconds) / step
            affordable = (
                int((options.max_seconds - prepare_seconds) / (per_step * 1.08)) if per_step > 0 else total_steps
            )
            total_steps = max(step, min(total_steps, affordable))
        record = {"epoch": epoch, "train_loss": epoch_loss / epoch_tokens, "complete": not out_of_time}
        if hold:
            t0 = time.monotonic()
            record["holdout_loss"] = evaluate_loss(loss, hold)
            eval_cost = time.monotonic() - t0
            if record["holdout_loss"] < best_loss:
                best_loss, best_epoch = record["holdout_loss"], epoch
                best_state = trainable_state(model)
        else:
            best_epoch, best_state = epoch, trainable_state(model)
        history.append(record)
        if out_of_time:
            stopped_by = "time"
            break
        if hold and epoch - best_epoch >= options.patience:
            stopped_by = "early_stopping"
            break

    with torch.no_grad():
        named = dict(model.named_parameters())
        for name, value in best_state.items():
            named[name].copy_(value)
    return FitResult(
        steps=step,
        best_epoch=best_epoch,
        best_loss=best_loss if hold else None,
        holdout_initial=holdout_initial,
        stopped_by=stopped_by,
        prepare_seconds=prepare_seconds,
        history=history,
    )


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


@dataclass
class SpeakerTraining:
    """One speaker's training set-up, the same for an HRA head and a baseline adapter: the enrollment batches
    (split, speed-perturbed copies, cached features), the precision (autocast dtype of the frozen forward and
    backward), SpecAugment when the options ask for it, and the frozen decoder's teacher-forced loss through the
    trained model's ``Encode``. ``started`` (``time.monotonic()``) is when the caller began: the budget counts
    from it."""

    backbone: Backbone
    options: LoopOptions
    data: Enrollment
    dtype: torch.dtype
    augment: Augment | None
    started: float

    @classmethod
    def prepare(
        cls,
        backbone: Backbone,
        utterances: Sequence[tuple[Audio, str]],
        options: LoopOptions,
        device: torch.device,
        started: float,
    ) -> "SpeakerTraining":
        data = prepare_enrollment(backbone, utterances, options, device)
        augment = None
        if options.spec_augment:
            spec, gen = SpecAugment(), torch.Generator().manual_seed(options.seed)
            augment = lambda enc: spec(enc, gen)  # noqa: E731
        return cls(backbone, options, data, resolve_precision(options.precision, device), augment, started)

    @property
    def precision(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def batch_loss(self, encode: Encode) -> BatchLoss:
        """The teacher-forced loss of a batch through ``encode``, in this set-up's precision."""
        return lambda batch, augment: teacher_forced_batch_loss(self.backbone, batch, encode, self.dtype, augment)

    def train(
        self,
        model: nn.Module,
        encode: Encode,
        progress: Callable[[TrainProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> FitResult:
        """``fit`` ``model`` (the parameters ``encode`` trains) on the enrollment batches."""
        return fit(model, self.batch_loss(encode), self.data, self.options, self.started, self.augment, progress,
                   should_stop)

    def metrics(self, result: FitResult) -> dict:
        """What every per-speaker training reports of its run (the caller adds what is its own)."""
        history = result.history
        return {
            "epochs": result.epochs,
            "steps": result.steps,
            "seconds": round(time.monotonic() - self.started, 3),
            "prepare_seconds": round(result.prepare_seconds, 3),
            "stopped_by": result.stopped_by,
            "best_epoch": result.best_epoch,
            "train_loss": history[-1]["train_loss"] if history else None,
            "holdout_loss": result.best_loss,
            "holdout_loss_initial": result.holdout_initial,
            "train_utterances": len(self.data.train_indices),
            "holdout_utterances": len(self.data.hold_indices),
            "history": history,
        }
