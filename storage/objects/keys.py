"""Object keys: built here, server-side, from ids only; validated by both backends."""

from __future__ import annotations

import re
import uuid

from storage.errors import InvalidObjectKey

DEFAULT_CHUNK_SIZE = 1024 * 1024
MAX_KEY_LENGTH = 512
DEFAULT_CONTENT_TYPE = "application/octet-stream"

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


# --------------------------------------------------------------------------------------------------------------
# Keys


def _canonical_id(value: uuid.UUID | str, name: str) -> str:
    try:
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
    except ValueError as exc:
        raise InvalidObjectKey(value, f"{name} must be a UUID") from exc


def speaker_prefix(tenant_id: uuid.UUID | str, speaker_id: uuid.UUID | str) -> str:
    """Every object of one speaker lies under this prefix (ends with ``/``): erasure is one ``delete_prefix``."""
    return f"tenants/{_canonical_id(tenant_id, 'tenant_id')}/speakers/{_canonical_id(speaker_id, 'speaker_id')}/"


def utterance_key(
    tenant_id: uuid.UUID | str, speaker_id: uuid.UUID | str, utterance_id: uuid.UUID | str
) -> str:
    """The normalized audio (16 kHz mono FLAC) of one utterance."""
    return f"{speaker_prefix(tenant_id, speaker_id)}utterances/{_canonical_id(utterance_id, 'utterance_id')}.flac"


def head_key(tenant_id: uuid.UUID | str, speaker_id: uuid.UUID | str, head_id: uuid.UUID | str) -> str:
    """The safetensors artifact of one head version."""
    return f"{speaker_prefix(tenant_id, speaker_id)}heads/{_canonical_id(head_id, 'head_id')}.safetensors"


def report_key(tenant_id: uuid.UUID | str, speaker_id: uuid.UUID | str, job_id: uuid.UUID | str) -> str:
    """The evaluation report (per-utterance hypotheses, JSON) of one adaptation job."""
    return f"{speaker_prefix(tenant_id, speaker_id)}reports/{_canonical_id(job_id, 'job_id')}.json"


def _check_segments(value: str, segments: list[str]) -> None:
    for segment in segments:
        if not segment:
            raise InvalidObjectKey(value, "empty path segment")
        if not _SEGMENT.fullmatch(segment):
            raise InvalidObjectKey(value, f"segment {segment!r} has characters outside [A-Za-z0-9._-] "
                                          "or does not start with a letter or digit")


def _check_common(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidObjectKey(value, "not a string")
    if not value:
        raise InvalidObjectKey(value, "empty")
    if len(value) > MAX_KEY_LENGTH:
        raise InvalidObjectKey(value, f"longer than {MAX_KEY_LENGTH} characters")
    if value.startswith("/") or value.startswith("\\") or re.match(r"[A-Za-z]:", value):
        raise InvalidObjectKey(value, "absolute path")
    if "\\" in value:
        raise InvalidObjectKey(value, "backslash")
    if ".." in value:
        raise InvalidObjectKey(value, "'..'")
    return value


def validate_key(key: object) -> str:
    """Return ``key`` if it is a well-formed object key, else raise ``InvalidObjectKey``."""
    key = _check_common(key)
    if key.endswith("/"):
        raise InvalidObjectKey(key, "ends with '/' (that is a prefix, not a key)")
    _check_segments(key, key.split("/"))
    return key


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` if it is a well-formed prefix (non-empty, ending with ``/``), else raise."""
    prefix = _check_common(prefix)
    if not prefix.endswith("/"):
        raise InvalidObjectKey(prefix, "a prefix must end with '/'")
    _check_segments(prefix, prefix[:-1].split("/"))
    return prefix
