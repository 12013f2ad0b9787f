"""Transcript segments rendered as OpenAI's ``response_format``s (text, json, verbose_json, srt, vtt) and as
Server-Sent Events.

``verbose_json`` follows OpenAI's ``TranscriptionVerbose``: ``tokens`` (the text's token ids), ``avg_logprob`` and
``no_speech_prob`` are the decoder's for the segment's chunk (chunks it judged silent yield no segment at all),
``compression_ratio`` is the gzip ratio of the segment's text (the decoder's own guard measure), ``temperature`` is
0.0 (decoding is deterministic beam search whatever the request asked).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Literal

from app.services.longform import Segment, join_text

ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
RESPONSE_FORMATS: tuple[str, ...] = ("json", "text", "srt", "verbose_json", "vtt")
MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


def usage(duration_s: float) -> dict:
    """OpenAI's duration usage (whole seconds, rounded up)."""
    return {"type": "duration", "seconds": math.ceil(duration_s)}


def _compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return round(len(raw) / len(zlib.compress(raw)), 4) if raw else 0.0


def segment_json(segment: Segment) -> dict:
    return {
        "id": segment.id,
        "seek": round(segment.start * 100),  # 10-ms mel frames, as Whisper's seek
        "start": round(segment.start, 3),
        "end": round(segment.end, 3),
        "text": segment.text,
        "tokens": list(segment.tokens),
        "temperature": 0.0,
        "avg_logprob": round(segment.avg_logprob, 4),
        "compression_ratio": _compression_ratio(segment.text),
        "no_speech_prob": round(segment.no_speech_prob, 4),
    }


def json_body(segments: Sequence[Segment], duration_s: float) -> dict:
    return {"text": join_text(segments), "usage": usage(duration_s)}


def verbose_json_body(segments: Sequence[Segment], duration_s: float) -> dict:
    return {
        "task": "transcribe",
        "language": "english",
        "duration": round(duration_s, 3),
        "text": join_text(segments),
        "segments": [segment_json(s) for s in segments],
        "usage": usage(duration_s),
    }


def timestamp(seconds: float, separator: str) -> str:
    """``HH:MM:SS<separator>mmm`` (srt: ``,``; vtt: ``.``)."""
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def srt_cue(segment: Segment, index: int) -> str:
    """One SubRip cue (numbered from 1), ending with its blank line."""
    return f"{index + 1}\n{timestamp(segment.start, ',')} --> {timestamp(segment.end, ',')}\n{segment.text}\n\n"


def vtt_cue(segment: Segment) -> str:
    return f"{timestamp(segment.start, '.')} --> {timestamp(segment.end, '.')}\n{segment.text}\n\n"


def srt(segments: Sequence[Segment]) -> str:
    return "".join(srt_cue(s, i) for i, s in enumerate(segments))


def vtt(segments: Sequence[Segment]) -> str:
    return "WEBVTT\n\n" + "".join(vtt_cue(s) for s in segments)


def text(segments: Sequence[Segment]) -> str:
    return join_text(segments) + "\n"


# ---- Server-Sent Events ---------------------------------------------------------------------------------------


def sse(data: str) -> str:
    """One event: each line of ``data`` on its own ``data:`` line (so that multi-line srt/vtt cues survive)."""
    return "".join(f"data: {line}\n" for line in data.split("\n")) + "\n"


def stream_segment_event(segment: Segment, response_format: str) -> dict | str:
    """What one decoded segment is sent as (see ``app.api.openai_audio``'s docstring for the convention).

    json: speaches' ``{"text"}`` plus OpenAI's ``transcript.text.delta`` fields; verbose_json: the segment as in
    ``verbose_json`` plus the same; text, srt, vtt: the segment rendered in that format, as plain text."""
    if response_format in ("json", "verbose_json"):
        event: dict = {"type": "transcript.text.delta", "delta": segment.text if segment.id == 0 else " " + segment.text}
        if response_format == "json":
            event["text"] = segment.text
        else:
            event.update(segment_json(segment))
        return event
    if response_format == "srt":
        return srt_cue(segment, segment.id).rstrip("\n")
    if response_format == "vtt":
        return vtt_cue(segment).rstrip("\n")
    return segment.text


def stream_done_event(segments: Sequence[Segment], duration_s: float) -> dict:
    """OpenAI's closing ``transcript.text.done`` (json and verbose_json streams only)."""
    return {"type": "transcript.text.done", "text": join_text(segments), "usage": usage(duration_s)}
