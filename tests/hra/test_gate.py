"""The evaluation gate: minimum held-out words, relative margin, paired bootstrap confidence."""

from __future__ import annotations

import pytest

from hra.gate import GateConfig, GateDecision, UtteranceScore, bootstrap_confidence, evaluate_gate

CONFIG = GateConfig(min_eval_words=40, min_relative_improvement=0.05, confidence=0.95, bootstrap_samples=2000, seed=0)


def scores(n: int, words: int, reference_errors: int, candidate_errors: int) -> list[UtteranceScore]:
    return [UtteranceScore(words, reference_errors, candidate_errors) for _ in range(n)]


def test_consistent_large_improvement_is_promoted():
    result = evaluate_gate(scores(10, 10, 4, 1), CONFIG)
    assert result.decision is GateDecision.promote
    assert result.promote
    assert result.confidence == 1.0
    assert result.reference_wer == pytest.approx(0.4)
    assert result.candidate_wer == pytest.approx(0.1)
    assert result.relative_improvement == pytest.approx(0.75)
    assert result.words == 100


def test_too_few_held_out_words_is_rejected_whatever_the_improvement():
    result = evaluate_gate(scores(3, 10, 5, 0), CONFIG)
    assert result.decision is GateDecision.reject
    assert "too few held-out words: 30 < 40" in result.reason


def test_improvement_below_the_margin_is_rejected():
    # 100 reference errors vs 97: 3 % relative, below the 5 % margin.
    s = scores(20, 10, 5, 5)
    s[0] = UtteranceScore(10, 5, 2)
    result = evaluate_gate(s, CONFIG)
    assert result.decision is GateDecision.reject
    assert "below the margin" in result.reason


def test_improvement_carried_by_one_utterance_is_not_significant():
    # Large average gain, but all of it on one utterance out of 20: the bootstrap often leaves it out.
    s = scores(20, 10, 2, 2)
    s[0] = UtteranceScore(10, 10, 0)
    result = evaluate_gate(s, CONFIG)
    assert result.relative_improvement > 0.05
    assert result.decision is GateDecision.reject
    assert "not significant" in result.reason
    assert result.confidence < 0.95


def test_worse_candidate_is_rejected_with_zero_confidence():
    result = evaluate_gate(scores(10, 10, 1, 3), CONFIG)
    assert result.decision is GateDecision.reject
    assert result.confidence == 0.0
    assert result.relative_improvement < 0


def test_perfect_reference_cannot_be_beaten():
    result = evaluate_gate(scores(10, 10, 0, 0), CONFIG)
    assert result.decision is GateDecision.reject
    assert "no errors" in result.reason


def test_no_utterances_is_rejected():
    result = evaluate_gate([], CONFIG)
    assert result.decision is GateDecision.reject
    assert result.words == 0
    assert result.confidence == 0.0


def test_bootstrap_is_deterministic_for_a_seed_and_varies_across_seeds():
    s = [UtteranceScore(10, e, c) for e, c in [(3, 1), (2, 2), (4, 5), (3, 0), (1, 1), (5, 2), (2, 3), (3, 1)]]
    first = bootstrap_confidence(s, 500, seed=1)
    assert first == bootstrap_confidence(s, 500, seed=1)
    assert 0.0 < first < 1.0
    assert {bootstrap_confidence(s, 500, seed=k) for k in range(5)} != {first}


def test_reason_reports_the_numbers():
    result = evaluate_gate(scores(10, 10, 4, 1), CONFIG)
    assert "candidate WER 0.1000 vs reference 0.4000" in result.reason
    assert "10 utterances / 100 words" in result.reason


@pytest.mark.parametrize(
    "kwargs",
    [dict(min_eval_words=-1), dict(confidence=1.5), dict(bootstrap_samples=0)],
)
def test_config_rejects_nonsense(kwargs):
    base = dict(min_eval_words=1, min_relative_improvement=0.0, confidence=0.9, bootstrap_samples=10)
    with pytest.raises(ValueError):
        GateConfig(**{**base, **kwargs})
