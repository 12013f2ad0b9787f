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
"""

from __future__ import annotations

import io
import os
import re
import stat as stat_module
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

from storage.errors import InvalidObjectKey, ObjectNotFound, ObjectStoreError, ObjectStoreUnavailable

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_KEY_LENGTH",
    "LocalObjectStore",
    "MinioObjectStore",
    "ObjectStore",
    "ObjectStream",
    "head_key",
    "report_key",
    "speaker_prefix",
    "utterance_key",
    "validate_key",
    "validate_prefix",
]

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


# --------------------------------------------------------------------------------------------------------------
# The protocol


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


# --------------------------------------------------------------------------------------------------------------
# Local directory


_TEMP_PREFIX = ".tmp-"  # never a valid key segment (keys start with a letter or digit), so never listed


class LocalObjectStore:
    """Objects as files under ``root``; the key's segments are the path's. Writes go to a temporary file in the
    target directory and are renamed over the target (``os.replace``), so readers never see a partial object.
    ``content_type`` is not kept."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        with self._os_errors(str(self.root)):
            self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    @contextmanager
    def _os_errors(self, key: str) -> Iterator[None]:
        try:
            yield
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ObjectNotFound(key) from exc
        except OSError as exc:
            raise ObjectStoreUnavailable(f"local object store {self.root}: {exc}") from exc

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def _prefix_path(self, prefix: str) -> Path:
        return self.root.joinpath(*validate_prefix(prefix)[:-1].split("/"))

    def put(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> None:
        path = self._path(key)
        try:
            for attempt in range(3):
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=_TEMP_PREFIX)
                    break
                except FileNotFoundError:  # a concurrent delete_prefix removed the directory: make it again
                    if attempt == 2:
                        raise
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp_name, path)
            except BaseException:
                with suppress(FileNotFoundError):
                    os.unlink(tmp_name)
                raise
            _fsync_directory(path.parent)
        except (NotADirectoryError, FileExistsError, IsADirectoryError) as exc:
            if not self.root.is_dir():
                raise ObjectStoreUnavailable(f"local object store {self.root}: not a directory") from exc
            # S3 can hold both "a" and "a/b"; a directory cannot. The server-side key scheme never asks for both.
            raise ObjectStoreError(f"local object store {self.root}: {key} collides with another key: {exc}") from exc
        except OSError as exc:
            raise ObjectStoreUnavailable(f"local object store {self.root}: cannot write {key}: {exc}") from exc

    def get(self, key: str) -> bytes:
        path = self._path(key)
        with self._os_errors(key):
            return path.read_bytes()

    def stream(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> ObjectStream:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        path = self._path(key)
        with self._os_errors(key):
            handle = path.open("rb")

        def chunks() -> Iterator[bytes]:
            with self._os_errors(key):
                while chunk := handle.read(chunk_size):
                    yield chunk

        return ObjectStream(chunks(), handle.close)

    def stat(self, key: str) -> int:
        path = self._path(key)
        with self._os_errors(key):
            st = path.stat()
        if not stat_module.S_ISREG(st.st_mode):
            raise ObjectNotFound(key)
        return st.st_size

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            with self._os_errors(key):
                if path.is_file():
                    path.unlink()
        except ObjectNotFound:
            pass

    def delete_prefix(self, prefix: str) -> int:
        top = self._prefix_path(prefix)
        if not top.is_dir():
            return 0
        deleted = 0
        try:
            for dirpath, dirnames, filenames in os.walk(top, topdown=False):
                for name in filenames:
                    with suppress(FileNotFoundError):
                        os.unlink(os.path.join(dirpath, name))
                        deleted += not name.startswith(_TEMP_PREFIX)
                for name in dirnames:
                    with suppress(FileNotFoundError, OSError):  # not empty: a concurrent put; its object stays
                        os.rmdir(os.path.join(dirpath, name))
            with suppress(FileNotFoundError, OSError):
                os.rmdir(top)
        except OSError as exc:
            raise ObjectStoreUnavailable(f"local object store {self.root}: cannot delete {prefix}: {exc}") from exc
        return deleted

    def list_keys(self, prefix: str) -> list[str]:
        top = self._prefix_path(prefix)
        keys: list[str] = []
        try:
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                relative = Path(dirpath).relative_to(self.root).as_posix()
                keys.extend(f"{relative}/{name}" for name in filenames if not name.startswith("."))
        except OSError as exc:
            raise ObjectStoreUnavailable(f"local object store {self.root}: cannot list {prefix}: {exc}") from exc
        return sorted(keys)

    def ping(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK | os.X_OK):
            raise ObjectStoreUnavailable(f"local object store {self.root}: not a writable directory")


def _fsync_directory(path: Path) -> None:
    """Make a rename durable. Not every platform can open a directory; there it is skipped."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------------------
# S3 (MinIO) through the minio SDK


_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"})
_T = TypeVar("_T")


class MinioObjectStore:
    """Objects in one S3 bucket, through the ``minio`` SDK. The bucket is created when missing (on the first
    ``put`` or ``ping``, or by ``ensure_bucket()``); no network call is made by the constructor.

    ``endpoint`` is ``host:port``; an ``http://``/``https://`` URL is accepted too and its scheme then decides
    ``secure``. Timeouts and retries are kept short so that a store that is down fails a request (or a readiness
    probe) within seconds, not minutes (the SDK's own default).
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = False,
        region: str | None = None,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        retries: int = 2,
    ) -> None:
        endpoint, secure = _split_endpoint(endpoint, secure)
        self.endpoint = endpoint
        self.bucket = bucket
        self.secure = secure
        self.region = region
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            maxsize=10,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or _certifi_where(),
            retries=urllib3.Retry(
                total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504], raise_on_status=False
            ),
        )
        self._client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region, http_client=http
        )
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()

    def __repr__(self) -> str:
        scheme = "https" if self.secure else "http"
        return f"MinioObjectStore({scheme}://{self.endpoint}, bucket={self.bucket!r})"

    @property
    def client(self) -> Minio:
        """The underlying SDK client (for administration and tests)."""
        return self._client

    def _call(self, key: str, operation: Callable[[], _T]) -> _T:
        with self._s3_errors(key):
            return operation()

    @contextmanager
    def _s3_errors(self, key: str) -> Iterator[None]:
        where = f"S3 {self.endpoint}/{self.bucket}"
        try:
            yield
        except S3Error as exc:
            if exc.code in _NOT_FOUND_CODES:
                raise ObjectNotFound(key) from exc
            status = getattr(exc.response, "status", 0) or 0
            if status >= 500 or exc.code in ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"):
                raise ObjectStoreUnavailable(f"{where}: {exc.code}: {exc.message}") from exc
            raise ObjectStoreError(f"{where}: {exc.code}: {exc.message}") from exc
        except (ServerError, InvalidResponseError) as exc:
            raise ObjectStoreUnavailable(f"{where}: {exc}") from exc
        except MinioException as exc:
            raise ObjectStoreError(f"{where}: {exc}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ObjectStoreUnavailable(f"{where}: unreachable: {exc}") from exc

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (once per instance; safe when several processes race)."""
        if self._bucket_ready:
            return
        with self._bucket_lock, self._s3_errors(self.bucket):
            if self._bucket_ready:
                return
            if not self._client.bucket_exists(self.bucket):
                try:
                    self._client.make_bucket(self.bucket)
                except S3Error as exc:
                    if exc.code != "BucketAlreadyOwnedByYou" and not self._client.bucket_exists(self.bucket):
                        raise
            self._bucket_ready = True

    def put(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> None:
        validate_key(key)
        self.ensure_bucket()
        payload = bytes(data)
        self._call(
            key,
            lambda: self._client.put_object(
                self.bucket, key, io.BytesIO(payload), length=len(payload), content_type=content_type
            ),
        )

    def get(self, key: str) -> bytes:
        validate_key(key)
        response = self._call(key, lambda: self._client.get_object(self.bucket, key))
        try:
            with self._s3_errors(key):
                return response.read()
        finally:
            response.close()
            response.release_conn()

    def stream(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> ObjectStream:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        validate_key(key)
        response = self._call(key, lambda: self._client.get_object(self.bucket, key))

        def chunks() -> Iterator[bytes]:
            with self._s3_errors(key):
                yield from response.stream(chunk_size)

        def release() -> None:
            response.close()
            response.release_conn()

        return ObjectStream(chunks(), release)

    def stat(self, key: str) -> int:
        validate_key(key)
        info = self._call(key, lambda: self._client.stat_object(self.bucket, key))
        return int(info.size or 0)

    def delete(self, key: str) -> None:
        validate_key(key)
        try:
            self._call(key, lambda: self._client.remove_object(self.bucket, key))
        except ObjectNotFound:  # no bucket: nothing to delete
            pass

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list_keys(prefix)
        if not keys:
            return 0
        with self._s3_errors(prefix):
            errors = list(self._client.remove_objects(self.bucket, (DeleteObject(key) for key in keys)))
        failed = [e for e in errors if e.code not in _NOT_FOUND_CODES]
        if failed:
            raise ObjectStoreUnavailable(
                f"S3 {self.endpoint}/{self.bucket}: could not delete {len(failed)} object(s) under {prefix}: "
                f"{failed[0].name}: {failed[0].code} {failed[0].message}"
            )
        return len(keys) - len(errors)

    def list_keys(self, prefix: str) -> list[str]:
        validate_prefix(prefix)
        try:
            with self._s3_errors(prefix):
                return sorted(
                    obj.object_name
                    for obj in self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
                    if obj.object_name
                )
        except ObjectNotFound:  # no bucket yet: nothing under any prefix
            return []

    def ping(self) -> None:
        self._bucket_ready = False  # a probe checks for real, and recreates a bucket removed behind our back
        self.ensure_bucket()


def _split_endpoint(endpoint: str, secure: bool) -> tuple[str, bool]:
    if "://" not in endpoint:
        return endpoint, secure
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise ValueError(f"S3 endpoint must be host:port or http(s)://host:port, not {endpoint!r}")
    return parts.netloc, parts.scheme == "https"


def _certifi_where() -> str:
    import certifi

    return certifi.where()
