"""English sentences for synthetic speech, with their licence, and their deterministic assignment to voices.

Source: the fortune-cookie files of Debian's ``fortunes-min`` and ``fortunes`` packages (BSD licence of the
Regents of the University of California; the notice is kept in ``hra/assets/sentences/LICENSE``). Plain sentences
are extracted once by :func:`extract_fortune_sentences` and shipped as ``hra/assets/sentences/fortunes_en.tsv``
(``source<TAB>sentence``), so a corpus does not depend on the Debian package versions of the machine that builds it.

Assignment: every sentence belongs for good to the ``train`` or the ``eval`` pool (a stable hash of its text), so no
sentence that any voice reads for training is ever held out for another voice. Each voice reads its pools in its own
seeded order; asking for more utterances extends a voice's list without changing its beginning.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

Split = Literal["train", "eval"]

SENTENCE_LICENCE = "BSD-4-Clause-UC (Debian fortunes/fortunes-min cookie files; see hra/assets/sentences/LICENSE)"
ASSET_PATH = "assets/sentences/fortunes_en.tsv"  # inside the hra package

# fortunes-min's three files, then neutral files of the full ``fortunes`` package (same copyright file). Files of
# jokes about groups of people, politics, drugs, or long quoted songs and novels are left out on purpose.
FORTUNE_FILES: tuple[str, ...] = (
    "fortunes", "literature", "riddles",
    "wisdom", "platitudes", "science", "work", "people", "humorists", "miscellaneous", "education", "food",
    "kids", "pets", "love", "art", "goedel", "magic",
)
FORTUNES_DIR = Path("/usr/share/games/fortunes")
DICTIONARY = Path("/usr/share/dict/words")

# Sentences with these words are dropped: the corpus is read aloud in a product demo.
_BLOCKLIST = frozenset(
    "kill killed killing kills murder murdered dead death die died dies suicide gun guns weapon weapons bomb war "
    "sex sexual sexy naked nude drunk drug drugs beer whiskey hell damn god gods lord jesus christ bible church "
    "religion religious sin sins devil satan hate pregnant pregnancy divorce divorced shit ass bastard fool fools "
    "stupid idiot idiots women woman wife wives husband girl girls".split()
)
_SENTENCE_RE = re.compile(r"[A-Z][A-Za-z ,;'\-]*[a-z][.!?]")
_REJECT_RE = re.compile(r"\b[A-Z]{2,}\b|\s-|-\s|--|''|\b[A-Za-z]\.|\s'|'\s|^'|\b'|'\b(?!(s|t|d|ll|re|ve|m)\b)")


@dataclass(frozen=True)
class Sentence:
    text: str
    source: str

    @property
    def n_words(self) -> int:
        return len(self.text.split())

    @property
    def pool(self) -> Split:
        """The pool this sentence belongs to for good: about 30% ``eval``."""
        digest = hashlib.sha256(self.text.encode("utf-8")).digest()
        return "eval" if int.from_bytes(digest[:4], "big") % 100 < EVAL_POOL_PERCENT else "train"


EVAL_POOL_PERCENT = 30


def _split_fortune(fortune: str) -> list[str]:
    lines = [line for line in fortune.split("\n") if not re.match(r"^\s*--", line)]
    text = re.sub(r"\s+", " ", " ".join(line.strip() for line in lines)).strip()
    text = text.replace('"', "")
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text)]


def _is_plain(sentence: str, min_words: int, max_words: int, vocabulary: frozenset[str] | None) -> bool:
    if not _SENTENCE_RE.fullmatch(sentence) or _REJECT_RE.search(sentence):
        return False
    words = sentence.split()
    if not min_words <= len(words) <= max_words:
        return False
    bare = [re.sub(r"'(s|t|d|ll|re|ve|m)$", "", w.strip(",;.!?").lower()) for w in words]
    if any(w in _BLOCKLIST for w in bare):
        return False
    if vocabulary is not None:
        # every word must be a dictionary word (drops typos, invented words, odd names); hyphenated parts each
        parts = [p for w in bare for p in w.split("-")]
        if not all(p in vocabulary or p.capitalize() in vocabulary for p in parts if p):
            return False
    return True


def extract_fortune_sentences(
    fortunes_dir: Path = FORTUNES_DIR,
    files: Iterable[str] = FORTUNE_FILES,
    dictionary: Path | None = DICTIONARY,
    min_words: int = 4,
    max_words: int = 20,
) -> list[Sentence]:
    """Plain sentences of ``min_words``..``max_words`` words from the fortune files, first occurrence kept.

    Plain means: one capitalized sentence of letters, spaces, commas, semicolons, hyphens and apostrophes, no
    digits, abbreviations or all-caps words, no word from a small blocklist and, if ``dictionary`` is given, only
    dictionary words.
    """
    vocabulary = None
    if dictionary is not None:
        vocabulary = frozenset(dictionary.read_text(encoding="utf-8", errors="replace").split())
    seen: set[str] = set()
    sentences: list[Sentence] = []
    for name in files:
        raw = (fortunes_dir / name).read_text(encoding="utf-8", errors="replace")
        if "\b" in raw:  # overstruck text (x\bx) is not prose
            raw = re.sub(r".\x08", "", raw)
        for fortune in raw.split("\n%\n"):
            for sentence in _split_fortune(fortune):
                if sentence not in seen and _is_plain(sentence, min_words, max_words, vocabulary):
                    seen.add(sentence)
                    sentences.append(Sentence(sentence, name))
    return sentences


def write_sentence_asset(sentences: Sequence[Sentence], path: Path) -> None:
    path.write_text("".join(f"{s.source}\t{s.text}\n" for s in sentences), encoding="utf-8")


def load_sentences() -> tuple[Sentence, ...]:
    """The shipped sentence list, in file order."""
    data = resources.files("hra").joinpath(ASSET_PATH).read_text(encoding="utf-8")
    out = []
    for line in data.splitlines():
        source, _, text = line.partition("\t")
        if text:
            out.append(Sentence(text, source))
    return tuple(out)


def _order_key(seed: int, sentence: Sentence) -> bytes:
    return hashlib.sha256(f"{seed}\x00{sentence.text}".encode("utf-8")).digest()


def assign_sentences(
    seed: int,
    split: Split,
    count: int,
    sentences: Sequence[Sentence] | None = None,
    min_words: int = 4,
    max_words: int = 20,
) -> list[Sentence]:
    """The first ``count`` sentences a voice with this ``seed`` reads in ``split``.

    Deterministic and independent of Python's ``random``: the ``split`` pool, filtered by word count, sorted by
    sha256(seed, text). Different seeds read different sentences in different orders; a larger ``count`` extends the
    list. Raises ``ValueError`` when the pool is too small.
    """
    pool = [
        s for s in (sentences if sentences is not None else load_sentences())
        if s.pool == split and min_words <= s.n_words <= max_words
    ]
    if count > len(pool):
        raise ValueError(f"only {len(pool)} {split} sentences of {min_words}-{max_words} words, {count} asked")
    return sorted(pool, key=lambda s: _order_key(seed, s))[:count]
