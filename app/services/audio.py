"""Audio uploads -> decoded 16 kHz mono waveforms, checked against the service's duration limits.

The one place where the ML seam's decode errors become API errors; enrollment uploads and transcriptions both
decode through ``decode_checked``.
"""

from __future__ import annotations

from app import errors
from app.ml import AudioTooLongForModel, DecodedAudio, InvalidAudio, MLService
from app.settings import Settings


def decode_checked(ml: MLService, data: bytes, settings: Settings, *, min_seconds: float = 0.0) -> DecodedAudio:
    """Decode ``data`` (blocking: call from a worker thread) and check its duration.

    Raises ``EmptyAudio`` (no bytes), ``InvalidAudio`` (not decodable), ``AudioTooLong`` (longer than the decoder
    accepts, or than ``settings.max_utterance_seconds``) and ``AudioTooShort`` (under ``min_seconds``).
    """
    if not data:
        raise errors.EmptyAudio()
    try:
        decoded = ml.decode_audio(data)
    except AudioTooLongForModel as exc:
        raise errors.AudioTooLong(f"audio too long: {exc}") from exc
    except InvalidAudio as exc:
        raise errors.InvalidAudio(str(exc)) from exc
    if decoded.duration_s < min_seconds:
        raise errors.AudioTooShort(f"audio is {decoded.duration_s:.2f} s; at least {min_seconds:g} s required")
    if decoded.duration_s > settings.max_utterance_seconds:
        raise errors.AudioTooLong(
            f"audio is {decoded.duration_s:.1f} s; at most {settings.max_utterance_seconds:g} s allowed"
        )
    return decoded
