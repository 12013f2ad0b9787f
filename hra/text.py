"""One text normalization for WER everywhere (benchmark, gate, tests): Whisper's English normalizer + jiwer.

``normalize`` is whisper_normalizer's ``EnglishTextNormalizer`` (lower case, punctuation removed, numbers
spelled as digits: "ten" -> "10", British -> American spelling, "Mr." -> "mister", contractions expanded)
with a few additions it lacks (see ``_EXTRA``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer

# Applied before Whisper's normalizer, which reads "five o'clock" as "50 clock".
_BEFORE: tuple[tuple[re.Pattern[str], str], ...] = ((re.compile(r"\bo[\u2019']\s*clock\b", re.I), "oclock"),)
# Applied after it: spellings it leaves apart.
_EXTRA: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bokay\b"), "ok"),
    (re.compile(r"\balright\b"), "all right"),
)


@lru_cache(maxsize=1)
def _normalizer() -> EnglishTextNormalizer:
    return EnglishTextNormalizer()


def normalize(text: str) -> str:
    for pattern, repl in _BEFORE:
        text = pattern.sub(repl, text)
    out = _normalizer()(text)
    for pattern, repl in _EXTRA:
        out = pattern.sub(repl, out)
    return " ".join(out.split())


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) after ``normalize``."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    n_ref = len(ref.split())
    if n_ref == 0:
        return len(hyp.split()), 0
    if not hyp:
        return n_ref, n_ref
    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, n_ref


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Total word errors / total reference words over the corpus (loops count in full)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    errors = words = 0
    for ref, hyp in zip(references, hypotheses):
        e, n = word_errors(ref, hyp)
        errors += e
        words += n
    if words == 0:
        raise ValueError("the references contain no words")
    return errors / words
