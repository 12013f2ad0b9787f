"""hra.text: one normalization for WER (Whisper's English normalizer + additions) and jiwer counts."""

from __future__ import annotations

import pytest

from hra.text import corpus_wer, normalize, word_errors


@pytest.mark.parametrize(
    "a,b",
    [
        ("Mr. Smith has 10 dollars.", "mister smith has ten dollars"),
        ("It's twenty-five percent, OK?", "it is 25% ok"),
        ("Dr. Who arrived at St. Louis", "doctor who arrived at saint louis"),
        ("The colour of the centre", "the color of the center"),
        ("ten thousand", "10,000"),
        ("one hundred and two", "102"),
        ("FRONT, CENTER!", "front center"),
        ("I'm gonna go", "I am going to go"),
        ("Okay, alright.", "OK, all right"),
        ("five o'clock", "5 o’clock"),
        ("Uh, hmm, yes", "yes"),
    ],
)
def test_equivalent_spellings_normalize_alike(a, b):
    assert normalize(a) == normalize(b)


@pytest.mark.parametrize("a,b", [("ten of clubs", "two of clubs"), ("he was not", "he was"), ("cat", "cats")])
def test_different_words_stay_different(a, b):
    assert normalize(a) != normalize(b)


def test_word_errors_counts_substitutions_deletions_insertions():
    assert word_errors("Mr. Smith has 10 dollars.", "mister smith has ten dollars") == (0, 4)
    assert word_errors("the cat sat", "the dog sat down") == (2, 3)
    assert word_errors("the cat sat", "") == (3, 3)
    assert word_errors("", "hello there") == (2, 0)


def test_loops_count_in_full():
    assert word_errors("thank you", "thank you thank you thank you") == (4, 2)


def test_corpus_wer_pools_words():
    assert corpus_wer(["a b", "c d e f"], ["a", "c d e f"]) == pytest.approx(1 / 6)
    with pytest.raises(ValueError):
        corpus_wer(["a"], [])
    with pytest.raises(ValueError):
        corpus_wer([""], [""])
