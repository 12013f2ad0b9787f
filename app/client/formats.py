"""A transcription written as text, JSON, SubRip (srt) or WebVTT (vtt).

``POST /v1/transcriptions`` returns the text of the whole file, without segments or timestamps, so a subtitle file
has one cue spanning the file: from 0 to its duration, read locally from the file (libsndfile). When the local
library cannot read the format, the cue ends at ``FALLBACK_END_S`` and the caller warns.
"""

from __future__ import annotations

import json

from app.client.models import Transcription

FORMATS = ("text", "json", "srt", "vtt")
FALLBACK_END_S = 30.0


def _timestamp(seconds: float, decimal: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def render(result: Transcription, fmt: str, *, duration_s: float | None, source: str, speaker_id: str | None) -> str:
    """The output document; ``duration_s`` None means unknown (subtitle cues then end at FALLBACK_END_S)."""
    text = " ".join(result.text.split())
    end = duration_s if duration_s is not None else FALLBACK_END_S
    if fmt == "text":
        return text + "\n"
    if fmt == "json":
        body = {
            "text": result.text,
            "head_id": result.head_id,
            "speaker_id": speaker_id,
            "file": source,
            "duration_s": None if duration_s is None else round(duration_s, 3),
        }
        return json.dumps(body, indent=2) + "\n"
    if fmt == "srt":  # an empty transcript is a file without cues, not a cue without text
        return f"1\n{_timestamp(0, ',')} --> {_timestamp(end, ',')}\n{text}\n" if text else ""
    if fmt == "vtt":
        cue = f"\n{_timestamp(0, '.')} --> {_timestamp(end, '.')}\n{text}\n" if text else ""
        return "WEBVTT\n" + cue
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
