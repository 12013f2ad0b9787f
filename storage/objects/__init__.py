"""Object storage: audio, head artifacts and evaluation reports.

Two backends behind one ``ObjectStore`` protocol: ``LocalObjectStore`` (a directory; the embedded default) and
``MinioObjectStore`` (any S3 endpoint through the ``minio`` SDK; MinIO in production). The service's
composition root (``app.container``) picks one from its settings; this module takes paths and endpoints only.

Keys are built here, server-side, from ids only (``utterance_key``, ``head_key``, ``report_key``,
``speaker_prefix``); a client's file name never becomes part of a key. Both backends accept only keys of that
shape: ``/``-separated segments of letters, digits, ``.``, ``_`` and ``-``, each starting with a letter or a
digit, no ``..``, not absolute, at most ``MAX_KEY_LENGTH`` characters (the database column's size).

Contract, the same for both backends (``tests/storage/test_objects.py`` runs it against each):

- ``put`` replaces the whole object atomically: a reader sees the old bytes or the new ones, never a part.
- ``get``/``stream``/``stat`` raise ``ObjectNotFound`` for a missing key, eagerly (``stream`` before it returns,
  so a caller can answer 404 before it starts a response).
- ``delete`` and ``delete_prefix`` are idempotent: deleting what is not there is not an error.
- A prefix ends with ``/``, so that the prefix of speaker ``1`` never matches speaker ``10``.
- Network, server (5xx) and disk failures raise ``ObjectStoreUnavailable`` (transient; retry with backoff).
- ``list_objects`` gives each object's last-modified time (UTC): the orphan sweeper's age of an object.
"""

from storage.objects.base import ObjectInfo, ObjectStore, ObjectStream
from storage.objects.keys import (
    DEFAULT_CHUNK_SIZE,
    MAX_KEY_LENGTH,
    head_key,
    report_key,
    speaker_prefix,
    utterance_key,
    validate_key,
    validate_prefix,
)
from storage.objects.local import LocalObjectStore
from storage.objects.s3 import MinioObjectStore

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_KEY_LENGTH",
    "LocalObjectStore",
    "MinioObjectStore",
    "ObjectInfo",
    "ObjectStore",
    "ObjectStream",
    "head_key",
    "report_key",
    "speaker_prefix",
    "utterance_key",
    "validate_key",
    "validate_prefix",
]
