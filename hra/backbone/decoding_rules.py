"""What both decoders (``hra.backbone.decoding``'s Python search, ``hra.backbone.ct2_decoding``'s CTranslate2) share:
the decoding options, the result of one utterance, and the guard rules applied to it (the length bound, loop
detection, the compression ratio, Whisper's no-speech rule).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, fields
from typing import Literal

from hra.backbone.tokenizer import WhisperTokenizer

StopReason = Literal["eot", "length", "loop", "no_speech"]


@dataclass(frozen=True)
class DecodingOptions:
    """Decoding settings, fixed per backbone (``guards=False``, ``beam_size=1``: plain greedy, for comparisons).

    beam_size 5, not greedy (probe: the product's linear head at 50 enrollment utterances, 40 held out, same head
    decoded both ways): held-out WER pt-br 0.560 -> 0.460, hu 0.462 -> 0.364, da 0.533 -> 0.497, atypical pl
    0.746 -> 0.792 (worse), standard US 0.070 -> 0.044; the base in its 30-s window: standard US 0.252 -> 0.198,
    real recordings 0.053 either way. The benchmark's numbers over every voice are in MODEL_CARD.md."""

    guards: bool = True
    beam_size: int = 5
    # Beam search decodes at most this many hypotheses (rows) at once: each row holds its own copy of the
    # cross-attention keys and values (18 MB in the 30-s window). 16 utterances in the 30-s window, beam 5, one CPU
    # thread: all 80 rows at once +2.9 GB peak and 14.3 s; 40 rows +1.3 GB, 12.6 s; 20 rows +0.5 GB, 12.5 s;
    # 10 rows 13.0 s; 5 rows 13.9 s.
    max_beam_rows: int = 20
    max_new_tokens: int = 224
    max_tokens_per_second: float = 7.0
    extra_tokens: int = 10
    max_repeats: int = 3
    max_short_repeats: int = 5
    min_long_period: int = 3
    min_phrase_period: int = 8
    max_period: int = 48
    compression_ratio_threshold: float = 2.4
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    fallback_no_repeat_ngram: int = 3

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if self.max_tokens_per_second <= 0 or self.extra_tokens < 0:
            raise ValueError("the duration bound needs max_tokens_per_second > 0 and extra_tokens >= 0")
        if self.max_repeats < 2 or self.max_short_repeats < 2:
            raise ValueError("repeat counts must be >= 2")
        if self.beam_size < 1:
            raise ValueError("beam_size must be >= 1 (1: greedy)")
        if self.max_beam_rows < 1:
            raise ValueError("max_beam_rows must be >= 1")

    @classmethod
    def with_beam(cls, beam_size: int | None) -> "DecodingOptions":
        """The default options with another beam (None: the default's)."""
        return cls() if beam_size is None else cls(beam_size=beam_size)

    def result_identity(self) -> str:
        """What decoded text depends on, in the dataclass repr's form (benchmark measurement keys):
        ``max_beam_rows`` is left out (it bounds memory; the hypotheses are the same), and so is ``beam_size=1``,
        greedy decoding being what existed before the field did, so that greedy measurements keep their keys."""
        parts = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                 if f.name != "max_beam_rows" and not (f.name == "beam_size" and self.beam_size == 1)]
        return f"{type(self).__name__}({', '.join(parts)})"

    def token_limit(self, duration_s: float) -> int:
        if not self.guards:
            return self.max_new_tokens
        bound = math.ceil(self.max_tokens_per_second * max(duration_s, 0.0)) + self.extra_tokens
        return max(1, min(self.max_new_tokens, bound))


@dataclass(frozen=True)
class DecodeResult:
    text: str
    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    stop_reason: StopReason
    fallback: bool = False


def compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def result_of(
    tokenizer: WhisperTokenizer, tokens: list[int], avg_logprob: float, no_speech_prob: float, reason: StopReason,
    fallback: bool = False,
) -> DecodeResult:
    """The result for ``tokens`` (both decoders): their text and its compression ratio."""
    text = tokenizer.decode(tokens)
    return DecodeResult(text, tokens, avg_logprob, no_speech_prob, compression_ratio(text), reason, fallback)


def silenced(result: DecodeResult, options: DecodingOptions) -> DecodeResult:
    """Whisper's no-speech rule (with the guards on): empty text when P(<|nocaptions|>) at the first position is
    over ``no_speech_threshold`` and the average log-probability under ``logprob_threshold``."""
    if (
        options.guards
        and result.stop_reason != "no_speech"
        and result.no_speech_prob > options.no_speech_threshold
        and result.avg_logprob < options.logprob_threshold
    ):
        return DecodeResult("", [], result.avg_logprob, result.no_speech_prob, 0.0, "no_speech", result.fallback)
    return result


def repeated_tail(tokens: list[int], options: DecodingOptions) -> int:
    """Number of tokens to drop if the tail of ``tokens`` is a loop (0 if none).

    A loop is a span of p tokens repeated consecutively twice (p >= min_phrase_period), ``max_repeats``
    times (p >= min_long_period) or ``max_short_repeats`` times (shorter p); all copies but the first are
    dropped.
    """
    n = len(tokens)
    for p in range(1, min(options.max_period, n // 2) + 1):
        if p >= options.min_phrase_period:
            need = 2
        elif p >= options.min_long_period:
            need = options.max_repeats
        else:
            need = options.max_short_repeats
        if p * need > n:
            continue
        span = tokens[n - p :]
        if all(tokens[n - (k + 1) * p : n - k * p] == span for k in range(1, need)):
            return p * (need - 1)
    return 0
