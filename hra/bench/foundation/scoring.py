"""Scoring: WER as the benchmark counts it, the product's promotion gate, and the comparisons the report makes."""

from __future__ import annotations

import math
from collections.abc import Sequence

from hra.gate import GateConfig, UtteranceScore, evaluate_gate
from hra.text import word_errors


def score(references: Sequence[str], hypotheses: Sequence[str]) -> dict:
    errors = capped = words = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        e, n = word_errors(ref, hyp)
        errors, capped, words = errors + e, capped + min(e, n), words + n
    return {"wer": errors / words, "wer_capped": capped / words, "errors": errors, "words": words}


def utterance_errors(references: Sequence[str], hypotheses: Sequence[str]) -> list[list[int]]:
    """[errors, reference words] per utterance."""
    return [list(word_errors(ref, hyp)) for ref, hyp in zip(references, hypotheses, strict=True)]


def product_gate_config() -> GateConfig:
    """The evaluation gate as the product ships it (``GateConfig``'s defaults, not this shell's environment)."""
    return GateConfig()


def gate_decision(base_errors: Sequence[Sequence[int]], candidate_errors: Sequence[Sequence[int]]) -> dict:
    """The product's promotion gate (``hra.gate``) on the gate utterances, against the served base."""
    scores = [UtteranceScore(words=n, reference_errors=b, candidate_errors=c)
              for (b, n), (c, _) in zip(base_errors, candidate_errors, strict=True)]
    result = evaluate_gate(scores, product_gate_config())
    return {"decision": result.decision.value, "confidence": result.confidence, "words": result.words,
            "base_wer": result.reference_wer, "candidate_wer": result.candidate_wer, "reason": result.reason}


def rel_reduction(base_wer: float, wer: float) -> float:
    """(base - system) / base; 0 when the base makes no error and neither does the system."""
    if base_wer == 0:
        return 0.0 if wer == 0 else -math.inf
    return (base_wer - wer) / base_wer


def reference_seconds(record: dict) -> float:
    """A measurement's training seconds on the reference machine (``hra.bench.speed``). Measurements taken before
    the benchmark calibrated its budgets carry no factor: they ran on reference-class machines (factor taken as 1;
    run A's machine was about 0.77)."""
    return record["train_seconds"] / (record.get("speed_factor") or 1.0)
