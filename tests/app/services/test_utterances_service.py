"""Pure parts of app.services.utterances: split parsing and the stable hashed split."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from app import errors
from app.services.utterances import clean_transcript, hashed_split, parse_split
from storage.models import Split


def test_hashed_split_holds_out_about_one_in_four_and_is_stable():
    speaker = uuid.UUID(int=7)
    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
    splits = [hashed_split(speaker, d) for d in digests]
    assert splits == [hashed_split(speaker, d) for d in digests]
    share = splits.count(Split.eval) / len(splits)
    assert 0.22 < share < 0.28


def test_hashed_split_depends_on_the_speaker():
    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(64)]
    a = [hashed_split(uuid.UUID(int=1), d) for d in digests]
    b = [hashed_split(uuid.UUID(int=2), d) for d in digests]
    assert a != b


@pytest.mark.parametrize("value,expected", [(None, None), ("", None), (" train ", Split.train), ("Eval", Split.eval)])
def test_parse_split(value, expected):
    assert parse_split(value) is expected


def test_parse_split_rejects_anything_else():
    with pytest.raises(errors.InvalidSplit):
        parse_split("validation")


def test_clean_transcript_collapses_whitespace_and_refuses_blank():
    assert clean_transcript(" a \n b\t c ") == "a b c"
    with pytest.raises(errors.EmptyTranscript):
        clean_transcript(" \n ")
    with pytest.raises(errors.EmptyTranscript):
        clean_transcript(None)
