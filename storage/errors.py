"""Typed errors of the persistence layer.

Storage knows nothing of HTTP: the API maps these to responses (``ObjectNotFound`` -> 404,
``ObjectStoreUnavailable`` -> 503) and the workers retry ``ObjectStoreUnavailable`` with backoff.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every error raised by ``storage``."""


class ObjectStoreError(StorageError):
    """An object-store operation failed for a reason that retrying will not fix (bad credentials, bad request)."""


class ObjectNotFound(ObjectStoreError):
    """The key (or its bucket) does not exist."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object not found: {key}")
        self.key = key


class ObjectStoreUnavailable(ObjectStoreError):
    """The object store cannot be reached or failed on its side (network error, 5xx, disk error).

    Transient by nature: callers may retry with backoff.
    """


class InvalidObjectKey(ObjectStoreError, ValueError):
    """A key or prefix that the server-side key scheme would never produce (``..``, absolute, odd characters)."""

    def __init__(self, key: object, reason: str) -> None:
        super().__init__(f"invalid object key {key!r}: {reason}")
        self.key = key
        self.reason = reason
