"""``LocalObjectStore``: objects as files under one directory (the embedded default)."""

from __future__ import annotations

import os
import stat as stat_module
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path

from storage.errors import ObjectNotFound, ObjectStoreError, ObjectStoreUnavailable
from storage.objects.base import ObjectInfo, ObjectStream
from storage.objects.keys import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    validate_key,
    validate_prefix,
)

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
                    self._write_then_rename(path, data)
                    break
                except FileNotFoundError:
                    # A concurrent delete_prefix removed the directory (and our temporary file with it) between
                    # the mkdir and the rename: make it again and write again.
                    if attempt == 2:
                        raise
            _fsync_directory(path.parent)
        except (NotADirectoryError, FileExistsError, IsADirectoryError) as exc:
            if not self.root.is_dir():
                raise ObjectStoreUnavailable(f"local object store {self.root}: not a directory") from exc
            # S3 can hold both "a" and "a/b"; a directory cannot. The server-side key scheme never asks for both.
            raise ObjectStoreError(f"local object store {self.root}: {key} collides with another key: {exc}") from exc
        except OSError as exc:
            raise ObjectStoreUnavailable(f"local object store {self.root}: cannot write {key}: {exc}") from exc

    @staticmethod
    def _write_then_rename(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=_TEMP_PREFIX)
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

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        top = self._prefix_path(prefix)
        try:
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                relative = Path(dirpath).relative_to(self.root).as_posix()
                for name in filenames:
                    if name.startswith("."):
                        continue
                    try:
                        st = os.stat(os.path.join(dirpath, name))
                    except FileNotFoundError:  # deleted since it was listed
                        continue
                    modified = datetime.fromtimestamp(st.st_mtime, timezone.utc)
                    yield ObjectInfo(f"{relative}/{name}", st.st_size, modified)
        except OSError as exc:
            raise ObjectStoreUnavailable(f"local object store {self.root}: cannot list {prefix}: {exc}") from exc

    def remove_stale_temporaries(self, prefix: str, older_than: datetime) -> int:
        """Delete the temporary files of writes that never finished (a process killed inside ``put``) under
        ``prefix``, last touched before ``older_than``; how many. S3 has no such leftovers (one PUT per object)."""
        top = self._prefix_path(prefix)
        cutoff = older_than.timestamp()
        removed = 0
        try:
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                for name in filenames:
                    if not name.startswith(_TEMP_PREFIX):
                        continue
                    path = os.path.join(dirpath, name)
                    with suppress(FileNotFoundError):
                        if os.stat(path).st_mtime < cutoff:
                            os.unlink(path)
                            removed += 1
        except OSError as exc:
            raise ObjectStoreUnavailable(f"local object store {self.root}: cannot sweep {prefix}: {exc}") from exc
        return removed

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
