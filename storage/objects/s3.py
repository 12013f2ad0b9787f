"""``MinioObjectStore``: objects in one S3 bucket through the ``minio`` SDK (MinIO in production)."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timezone
from typing import TypeVar
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

from storage.errors import ObjectNotFound, ObjectStoreError, ObjectStoreUnavailable
from storage.objects.base import ObjectInfo, ObjectStream
from storage.objects.keys import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    validate_key,
    validate_prefix,
)

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

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        listing = self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
        try:
            with self._s3_errors(prefix):
                for obj in listing:
                    if obj.object_name and obj.last_modified is not None:
                        modified = obj.last_modified
                        if modified.tzinfo is None:
                            modified = modified.replace(tzinfo=timezone.utc)
                        yield ObjectInfo(obj.object_name, int(obj.size or 0), modified)
        except ObjectNotFound:  # no bucket yet: nothing under any prefix
            return

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
