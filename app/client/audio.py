"""Reading what the client needs to know about a local audio file without sending it."""

from __future__ import annotations

from pathlib import Path


def audio_duration_s(path: Path) -> float | None:
    """Seconds of audio in the file, or None when libsndfile cannot read its format (the server decodes more)."""
    import soundfile  # numpy + libsndfile: loaded only when a duration is needed

    try:
        info = soundfile.info(str(path))
    except Exception:  # noqa: BLE001 - soundfile raises several types for formats it does not know
        return None
    return info.frames / info.samplerate if info.samplerate else None
