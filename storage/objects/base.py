"""The ``ObjectStore`` protocol both backends implement, and the stream ``stream()`` returns."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from storage.objects.keys import DEFAULT_CHUNK_SIZE, DEFAULT_CONTENT_TYPE


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: its key, size and when it was last written (UTC, timezone-aware)."""

    key: str
    size: int
    modified: datetime


@runtime_checkable
class ObjectStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> None:
        """Store ``data`` under ``key``, replacing any previous object atomically."""

    def get(self, key: str) -> bytes:
        """The object's bytes; ``ObjectNotFound`` if there is none."""

    def stream(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        """The object's bytes in chunks of at most ``chunk_size``; ``ObjectNotFound`` is raised by this call.
        The backends return an ``ObjectStream``: ``close()`` it when stopping early."""

    def stat(self, key: str) -> int:
        """The object's size in bytes; ``ObjectNotFound`` if there is none."""

    def delete(self, key: str) -> None:
        """Delete the object if it exists."""

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with ``prefix`` (ending with ``/``); return how many."""

    def list_keys(self, prefix: str) -> list[str]:
        """The keys under ``prefix`` (ending with ``/``), sorted."""

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        """The objects under ``prefix`` (ending with ``/``) with their size and last-modified time, in no set
        order, as they are listed (the orphan sweeper's view of the store: ``app.services.housekeeping``)."""

    def ping(self) -> None:
        """Return if the store is usable, else raise ``ObjectStoreUnavailable`` (or ``ObjectStoreError``)."""


class ObjectStream(Iterator[bytes]):
    """The chunks of one object. The file or HTTP connection behind it is released when the chunks run out, on
    ``close()``, or when the stream is garbage-collected, even if iteration never started (a plain generator
    cannot do that last part)."""

    def __init__(self, chunks: Iterator[bytes], release: Callable[[], None]) -> None:
        self._chunks = chunks
        self._release: Callable[[], None] | None = release

    def __next__(self) -> bytes:
        if self._release is None:
            raise StopIteration
        try:
            return next(self._chunks)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def __enter__(self) -> ObjectStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
