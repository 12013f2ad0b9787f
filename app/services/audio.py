"""Audio uploads -> decoded 16 kHz mono waveforms, checked against the service's limits.

The one place where the ML seam's decode errors become API errors; enrollment uploads and transcriptions both
decode through ``decode_checked``.

Uploads are hostile until proven otherwise: before a sample is decoded, the container's header (read by
libsndfile, as the decoder reads it) must declare a sample rate, channel count and length within the settings
(``max_audio_sample_rate``, ``max_audio_channels`` and the route's duration limit); the decoder is then told to
stop at that duration, so a header that understates the length cannot make it run on either.
"""

from __future__ import annotations

import io

import soundfile as sf

from app import errors
from app.ml import AudioTooLongForModel, DecodedAudio, InvalidAudio, MLService
from app.settings import Settings

# libsndfile reports SF_COUNT_MAX frames when the container does not declare its length (a FLAC stream written
# without seeking back). libsndfile cannot read such a stream from memory to its end anyway.
_UNKNOWN_LENGTH = 2**62

# The real decoder's refusals carry a stable code (``hra.audio``'s errors' ``code``); the seam keeps that error as
# the cause of its ``InvalidAudio``. These codes become their own API errors; any other is ``invalid_audio``.
_DECODER_REFUSALS: dict[str, type[errors.AppError]] = {
    "unsupported_sample_rate": errors.UnsupportedSampleRate,
    "too_many_channels": errors.TooManyChannels,
}


def check_audio_header(data: bytes, settings: Settings, max_seconds: float) -> None:
    """Refuse audio whose header declares a rate, channel count or length beyond the limits (cheap: no decoding).

    Raises ``InvalidAudio`` (no readable header, or no declared length), ``UnsupportedSampleRate``,
    ``TooManyChannels`` and ``AudioTooLong``.
    """
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate, channels, frames = int(f.samplerate), int(f.channels), int(f.frames)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        reason = getattr(exc, "error_string", None) or str(exc)  # str(exc) would name the in-memory buffer
        raise errors.InvalidAudio(
            f"could not read the upload as audio (WAV, FLAC, OGG or MP3 expected): {reason}"
        ) from exc
    if rate <= 0 or channels <= 0:
        raise errors.InvalidAudio("the audio header is invalid (no sample rate or channels)")
    if rate > settings.max_audio_sample_rate:
        raise errors.UnsupportedSampleRate(
            f"the sample rate is {rate} Hz; at most {settings.max_audio_sample_rate} Hz is accepted"
        )
    if channels > settings.max_audio_channels:
        raise errors.TooManyChannels(
            f"the audio has {channels} channels; at most {settings.max_audio_channels} are accepted"
        )
    if frames >= _UNKNOWN_LENGTH:
        raise errors.InvalidAudio("the audio does not declare its length; re-encode it (e.g. as WAV or FLAC)")
    if frames > max_seconds * rate:
        raise errors.AudioTooLong(f"audio is {frames / rate:.1f} s; at most {max_seconds:g} s allowed")


def decode_checked(
    ml: MLService, data: bytes, settings: Settings, *, min_seconds: float = 0.0, max_seconds: float | None = None
) -> DecodedAudio:
    """Check the header, decode ``data`` (blocking: call from a worker thread) and check its duration.

    ``max_seconds`` defaults to ``settings.max_utterance_seconds``; transcriptions pass
    ``settings.max_transcription_seconds``. The decoder stops at it.

    Raises ``EmptyAudio`` (no bytes), ``InvalidAudio`` (not decodable), ``UnsupportedSampleRate``,
    ``TooManyChannels``, ``AudioTooLong`` (longer than ``max_seconds``) and ``AudioTooShort`` (under
    ``min_seconds``).
    """
    if not data:
        raise errors.EmptyAudio()
    limit = settings.max_utterance_seconds if max_seconds is None else max_seconds
    check_audio_header(data, settings, limit)
    try:
        decoded = ml.decode_audio(data, max_seconds=limit)
    except AudioTooLongForModel as exc:
        raise errors.AudioTooLong(f"audio too long: {exc}") from exc
    except InvalidAudio as exc:
        refusal = _DECODER_REFUSALS.get(getattr(exc.__cause__, "code", ""), errors.InvalidAudio)
        raise refusal(str(exc)) from exc
    if decoded.duration_s < min_seconds:
        raise errors.AudioTooShort(f"audio is {decoded.duration_s:.2f} s; at least {min_seconds:g} s required")
    if decoded.duration_s > limit:
        raise errors.AudioTooLong(f"audio is {decoded.duration_s:.1f} s; at most {limit:g} s allowed")
    return decoded
