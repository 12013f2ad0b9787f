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
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torchaudio.functional as AF
from torch import nn

from hra.backbone.base import Backbone, DecoderHook, EncoderInput
from hra.errors import TrainingCancelled
from hra.training.data import PreparedBatch, prepare_batches

Augment = Callable[[EncoderInput], EncoderInput]
# (batch, augmentation or None) -> scalar float32 loss, differentiable w.r.t. the trained module.
BatchLoss = Callable[[PreparedBatch, Augment | None], torch.Tensor]


class LoopOptions(Protocol):
    """The loop's settings (``hra.training.head.HeadTrainingOptions`` has them all)."""

    max_seconds: float
    max_epochs: int
    learning_rate: float
    weight_decay: float
    warmup_steps: int
    min_lr_fraction: float
    grad_clip: float
    max_batch_frames: int
    holdout_fraction: float
    min_holdout: int
    min_train: int
    patience: int
    speed_perturb: tuple[float, ...]
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
    utterances: Sequence[tuple[torch.Tensor, str]],
    options: LoopOptions,
    device: torch.device,
) -> Enrollment:
    """(waveform (N,) float32 16 kHz, transcript) pairs -> train and held-out batches with cached features."""
    if not utterances:
        raise ValueError("no utterances to train on")
    waveforms = [w for w, _ in utterances]
    targets = [backbone.token_ids(text) for _, text in utterances]
    if any(not t for t in targets):
        raise ValueError("every utterance needs a non-empty transcript")
    train_idx, hold_idx = split_holdout(len(utterances), options)
    variants = []
    for speed in options.speed_perturb:
        faster = {i: speed_perturb(waveforms[i], speed) for i in train_idx}
        variants.append(prepare_batches(backbone, faster, targets, train_idx, options.max_batch_frames, device))
    return Enrollment(
        train_batches=prepare_batches(backbone, waveforms, targets, train_idx, options.max_batch_frames, device),
        hold_batches=prepare_batches(backbone, waveforms, targets, hold_idx, options.max_batch_frames, device),
        train_indices=train_idx,
        hold_indices=hold_idx,
        train_variants=variants,
    )


def speed_perturb(waveform: torch.Tensor, speed: float, sample_rate: int = 16000) -> torch.Tensor:
    """Play ``speed`` times faster (tempo and pitch together, like sox ``speed``) by resampling."""
    if speed <= 0:
        raise ValueError("speed must be positive")
    if speed == 1.0:
        return waveform
    return AF.resample(waveform.to(torch.float32), int(round(sample_rate * speed)), sample_rate)


def teacher_forced_batch_loss(
    backbone: Backbone,
    batch: PreparedBatch,
    encode: Callable[[EncoderInput], tuple[torch.Tensor, DecoderHook | None]],
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


def lr_factor(step: int, total: int, warmup: int, floor: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


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
    optimizer = torch.optim.Adam(params, lr=options.learning_rate, weight_decay=options.weight_decay)
    total_steps = options.max_epochs * data.steps_per_epoch
    rng = random.Random(options.seed)
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
            for group in optimizer.param_groups:
                group["lr"] = options.learning_rate * lr_factor(
                    step, total_steps, options.warmup_steps, options.min_lr_fraction
                )
            value_t = loss(batch, augment)
            optimizer.zero_grad(set_to_none=True)
            value_t.backward()
            if options.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, options.grad_clip)
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
