"""The evaluation gate, a pure function (the service and the benchmarks both decide with it): should a candidate head replace the reference?

The reference is the head in service, or the base model when the speaker has none. The candidate is promoted
only if

1. the held-out set has at least ``min_eval_words`` reference words,
2. the candidate's corpus WER beats the reference's by at least ``min_relative_improvement`` (relative), and
3. the improvement holds under a paired bootstrap over utterances: resampling utterances with replacement
   ``bootstrap_samples`` times (seeded), the candidate makes fewer word errors than the reference in at least a
   ``confidence`` fraction of the resamples.

Both systems are scored on the same utterances, so a resample's word count is shared and "fewer errors" is the
same as "lower WER".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import enum

import numpy as np


class GateDecision(str, enum.Enum):
    """What the gate says of a candidate (the service stores it as its own ``Decision``, same values)."""

    promote = "promote"
    reject = "reject"


@dataclass(frozen=True)
class GateConfig:
    """The gate's thresholds; the defaults are what the product ships (its settings start from them)."""

    min_eval_words: int = 40
    min_relative_improvement: float = 0.05
    confidence: float = 0.95
    bootstrap_samples: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.min_eval_words < 0:
            raise ValueError("min_eval_words must be >= 0")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError("confidence must be within [0, 1]")
        if self.bootstrap_samples < 1:
            raise ValueError("bootstrap_samples must be >= 1")


@dataclass(frozen=True)
class UtteranceScore:
    """Word errors of the reference and the candidate on one held-out utterance with ``words`` reference words."""

    words: int
    reference_errors: int
    candidate_errors: int


@dataclass(frozen=True)
class GateResult:
    decision: GateDecision
    reason: str
    confidence: float  # bootstrap P(candidate makes fewer errors than the reference)
    words: int
    reference_wer: float
    candidate_wer: float
    relative_improvement: float

    @property
    def promote(self) -> bool:
        return self.decision is GateDecision.promote


def bootstrap_confidence(scores: Sequence[UtteranceScore], samples: int, seed: int) -> float:
    """Fraction of utterance resamples in which the candidate makes strictly fewer errors than the reference."""
    n = len(scores)
    if n == 0:
        return 0.0
    delta = np.array([s.reference_errors - s.candidate_errors for s in scores], dtype=np.int64)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=samples)  # (samples, n): how often each is drawn
    return float(np.mean(counts @ delta > 0))


def evaluate_gate(scores: Sequence[UtteranceScore], config: GateConfig) -> GateResult:
    words = sum(s.words for s in scores)
    reference_errors = sum(s.reference_errors for s in scores)
    candidate_errors = sum(s.candidate_errors for s in scores)
    reference_wer = reference_errors / words if words else 0.0
    candidate_wer = candidate_errors / words if words else 0.0
    relative = (reference_wer - candidate_wer) / reference_wer if reference_wer > 0 else 0.0
    confidence = bootstrap_confidence(scores, config.bootstrap_samples, config.seed)

    def result(decision: GateDecision, reason: str) -> GateResult:
        return GateResult(decision, reason, confidence, words, reference_wer, candidate_wer, relative)

    numbers = (
        f"candidate WER {candidate_wer:.4f} vs reference {reference_wer:.4f} "
        f"({relative:+.1%} relative) on {len(scores)} utterances / {words} words, confidence {confidence:.3f}"
    )
    if words < config.min_eval_words:
        return result(
            GateDecision.reject, f"too few held-out words: {words} < {config.min_eval_words} required; {numbers}"
        )
    if reference_wer == 0.0:
        return result(GateDecision.reject, f"the reference already makes no errors; nothing to improve; {numbers}")
    if relative < config.min_relative_improvement:
        return result(
            GateDecision.reject,
            f"improvement below the margin of {config.min_relative_improvement:.1%} relative; {numbers}",
        )
    if confidence < config.confidence:
        return result(
            GateDecision.reject, f"improvement not significant at confidence {config.confidence:.3f}; {numbers}"
        )
    return result(GateDecision.promote, f"candidate beats the reference; {numbers}")
