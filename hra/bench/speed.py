"""How fast this machine trains heads, against the machine the benchmark's budgets were measured on.

The foundation benchmark gives every system the product's wall-clock training budget (60 s). The "same" 2-core
VM has not been the same machine from day to day: run B found it 1.3x slower than run A (both with native
bfloat16 matmuls), and a later day's AVX2-only EPYC (no native bfloat16: float32) trained 2.05x slower than run B,
so a 60-s budget bought 5-6 epochs instead of 12 and every system's WER moved with the hardware, not the method.

So the benchmark times a fixed reference step (a zero linear head's teacher-forced forward and backward on a
fixed batch, in the precision training would use here) and scales every training budget by
``speed factor = this machine's step time / REFERENCE_STEP_SECONDS``: budgets are in *reference seconds*, the
seconds of the run-B machine. Measurements from different days then compare, to within the calibration's spread
(single measurements of the factor varied by about +-10 %). The product itself keeps wall-clock budgets: a speaker
waits in wall-clock time.
"""

from __future__ import annotations

import time

import torch

from hra.foundation import Foundation
from hra.training.data import SAMPLE_RATE, prepare_batches
from hra.training.head import batch_loss, resolve_precision

# Derived on the AVX2-only EPYC (float32) of 2026-11-23: its reference step took 1.82 s (median of 14 measurements,
# 1.60-1.94, each the fastest of 7 steps, while the other core trained a head or measured too, as in the
# benchmark's two lanes), and the product's linear head (prior init, 50 utterances, 12 epochs, no time limit) took
# 2.13 s per step on espeak-hu (twice) and 2.53 s on espeak-da there, against run B's 1.03 s and 1.26 s: 2.05x.
# 1.82 / 2.05 = 0.89. (Run A's machine was 2.9x faster than that day's.) The spread of single measurements
# (+-10 %) is the calibration's own uncertainty.
REFERENCE_STEP_SECONDS = 0.89
REFERENCE_MACHINE = "the machine of the foundation benchmark's run B (2-core AMD EPYC VM, native bfloat16)"

_WARM_UP_STEPS = 3  # caches, allocators, and the first steps ran slower after a process started
_UTTERANCES = 9  # x 250 encoder frames (5 s): one training batch of the head recipe (2,400 frames)
_SECONDS = 5.0
_TEXT = "the quick brown fox jumps over the lazy dog while the five boxing wizards jump quickly"


def reference_step_seconds(foundation: Foundation, repeats: int = 7, precision: str = "auto") -> float:
    """Seconds of one reference step on ``foundation``'s device: the fastest of ``repeats`` after warm-up."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    backbone = foundation.backbone
    generator = torch.Generator().manual_seed(0)
    samples = int(_SECONDS * SAMPLE_RATE)
    waveforms = [0.05 * torch.randn(samples, generator=generator) for _ in range(_UTTERANCES)]
    targets = [backbone.token_ids(_TEXT)] * _UTTERANCES
    indices = list(range(_UTTERANCES))
    (batch,) = prepare_batches(backbone, waveforms, targets, indices, 10**9, foundation.device)
    head = foundation.new_head("linear", seed=0).to(foundation.device).train().requires_grad_(True)
    dtype = resolve_precision(precision, foundation.device)
    times = []
    for i in range(repeats + _WARM_UP_STEPS):
        started = time.perf_counter()
        head.zero_grad(set_to_none=True)
        batch_loss(foundation, head, batch, dtype).backward()
        if foundation.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= _WARM_UP_STEPS:
            times.append(time.perf_counter() - started)
    # The minimum, not the median: what the core does undisturbed. Medians of 7 steps taken while the other lane
    # loaded its models ranged 2.1-3.1 s on one machine; a budget must not depend on such a moment.
    return min(times)


def speed_factor(foundation: Foundation, repeats: int = 7) -> tuple[float, float]:
    """(this machine's reference step seconds / the reference machine's, the measured step seconds)."""
    seconds = reference_step_seconds(foundation, repeats)
    return seconds / REFERENCE_STEP_SECONDS, seconds
