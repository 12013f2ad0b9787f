"""The object-store contract, run against both backends: a local directory and a real S3 HTTP endpoint (moto
server) through the minio SDK. Then what is particular to each, and the server-side key scheme."""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from storage.errors import InvalidObjectKey, ObjectNotFound, ObjectStoreError, ObjectStoreUnavailable
from storage.objects import (
    MAX_KEY_LENGTH,
    LocalObjectStore,
    MinioObjectStore,
    ObjectStore,
    head_key,
    report_key,
    speaker_prefix,
    utterance_key,
    validate_key,
    validate_prefix,
)


def minio_store(s3: dict[str, Any], bucket: str, **kwargs: Any) -> MinioObjectStore:
    return MinioObjectStore(
        endpoint=s3["endpoint"],
        access_key=s3["access_key"],
        secret_key=s3["secret_key"],
        bucket=bucket,
        secure=False,
        region=s3["region"],
        **kwargs,
    )


@pytest.fixture(params=["local", "minio"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    return minio_store(request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket"))


BAD_KEYS = [
    "",
    "/etc/passwd",
    "\\windows\\system32",
    "C:/x",
    "../outside",
    "a/../../b",
    "a/..",
    "a//b",
    "a/./b",
    ".hidden",
    "a/.tmp-123",
    "-rf",
    "a b",
    "a\\b",
    "naïve.flac",
    "a/b\x00",
    "x" * (MAX_KEY_LENGTH + 1),
]


class TestContract:
    def test_put_then_get_returns_the_same_bytes(self, store: ObjectStore) -> None:
        data = os.urandom(4096)
        store.put("a/b/c.bin", data, "application/octet-stream")
        assert store.get("a/b/c.bin") == data

    def test_put_replaces_an_existing_object(self, store: ObjectStore) -> None:
        store.put("k/v", b"first version, longer")
        store.put("k/v", b"second")
        assert store.get("k/v") == b"second"
        assert store.stat("k/v") == 6

    def test_empty_object_round_trips(self, store: ObjectStore) -> None:
        store.put("empty", b"")
        assert store.get("empty") == b""
        assert store.stat("empty") == 0
        assert b"".join(store.stream("empty")) == b""

    def test_stat_returns_the_size(self, store: ObjectStore) -> None:
        store.put("sized", b"x" * 1234)
        assert store.stat("sized") == 1234

    def test_stream_yields_the_object_in_bounded_chunks(self, store: ObjectStore) -> None:
        data = os.urandom(2 * 1024 * 1024 + 17)
        store.put("big/object.bin", data)
        chunks = list(store.stream("big/object.bin", chunk_size=256 * 1024))
        assert b"".join(chunks) == data
        assert len(chunks) >= 9
        assert all(len(chunk) <= 256 * 1024 for chunk in chunks)

    def test_stream_can_be_abandoned_midway(self, store: ObjectStore) -> None:
        store.put("partial", b"0123456789" * 1000)
        chunks = store.stream("partial", chunk_size=10)
        assert next(chunks) == b"0123456789"
        chunks.close()  # type: ignore[attr-defined]
        assert store.get("partial") == b"0123456789" * 1000  # the store is still usable

    def test_stream_releases_its_resource_when_closed_unstarted(self, store: ObjectStore) -> None:
        store.put("unread", b"abc")
        for _ in range(25):  # more than the HTTP pool's size: a leaked connection per stream would show
            with store.stream("unread") as stream:  # type: ignore[attr-defined]
                pass
            assert list(stream) == []
        assert b"".join(store.stream("unread")) == b"abc"

    @pytest.mark.parametrize("operation", ["get", "stat", "stream"])
    def test_missing_key_raises_object_not_found(self, store: ObjectStore, operation: str) -> None:
        store.put("present/one", b"1")
        with pytest.raises(ObjectNotFound) as raised:
            getattr(store, operation)("present/two")  # stream: raised by the call, before any iteration
        assert raised.value.key == "present/two"

    def test_a_prefix_is_not_an_object(self, store: ObjectStore) -> None:
        store.put("dir/file", b"1")
        with pytest.raises(ObjectNotFound):
            store.get("dir")
        with pytest.raises(ObjectNotFound):
            store.stat("dir")

    def test_delete_removes_the_object_and_is_idempotent(self, store: ObjectStore) -> None:
        store.put("gone/soon", b"1")
        store.delete("gone/soon")
        with pytest.raises(ObjectNotFound):
            store.get("gone/soon")
        store.delete("gone/soon")
        store.delete("never/there")

    def test_delete_prefix_removes_only_what_is_under_it(self, store: ObjectStore) -> None:
        for key in ("t/s1/a", "t/s1/deep/b", "t/s1/deep/deeper/c", "t/s10/a", "t/s1x", "other/a"):
            store.put(key, key.encode())
        assert store.delete_prefix("t/s1/") == 3
        assert store.list_keys("t/") == ["t/s10/a", "t/s1x"]
        assert store.get("other/a") == b"other/a"
        assert store.delete_prefix("t/s1/") == 0
        assert store.delete_prefix("nothing/here/") == 0

    def test_list_keys_is_sorted_and_recursive(self, store: ObjectStore) -> None:
        for key in ("p/z", "p/a/2", "p/a/1", "q/x"):
            store.put(key, b".")
        assert store.list_keys("p/") == ["p/a/1", "p/a/2", "p/z"]
        assert store.list_keys("empty/") == []

    def test_list_objects_gives_size_and_last_modified_in_utc(self, store: ObjectStore) -> None:
        before = datetime.now(timezone.utc) - timedelta(seconds=5)  # S3 keeps whole seconds
        for key, data in (("p/z", b"12345"), ("p/a/1", b"1"), ("q/x", b"xx")):
            store.put(key, data)
        after = datetime.now(timezone.utc) + timedelta(seconds=5)
        listed = {info.key: info for info in store.list_objects("p/")}
        assert set(listed) == {"p/z", "p/a/1"}
        assert (listed["p/z"].size, listed["p/a/1"].size) == (5, 1)
        for info in listed.values():
            assert info.modified.tzinfo is not None and before <= info.modified <= after
        assert list(store.list_objects("empty/")) == []

    @pytest.mark.parametrize("prefix", ["", "t/s1", "/t/", "../", "t//"])
    def test_prefix_must_be_well_formed_and_end_with_slash(self, store: ObjectStore, prefix: str) -> None:
        with pytest.raises(InvalidObjectKey):
            store.delete_prefix(prefix)
        with pytest.raises(InvalidObjectKey):
            store.list_keys(prefix)

    @pytest.mark.parametrize("key", BAD_KEYS, ids=range(len(BAD_KEYS)))
    def test_malformed_keys_are_refused_by_every_operation(self, store: ObjectStore, key: str) -> None:
        with pytest.raises(InvalidObjectKey):
            store.put(key, b"x")
        for operation in (store.get, store.stat, store.delete, store.stream):
            with pytest.raises(InvalidObjectKey):
                operation(key)

    def test_key_validation_errors_are_value_errors(self, store: ObjectStore) -> None:
        with pytest.raises(ValueError):
            store.get("../x")

    def test_ping_succeeds_on_a_working_store(self, store: ObjectStore) -> None:
        store.ping()

    def test_is_an_object_store(self, store: ObjectStore) -> None:
        assert isinstance(store, ObjectStore)

    def test_erasing_a_speaker_removes_all_its_objects_and_nothing_else(self, store: ObjectStore) -> None:
        tenant, alice, bob = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        keys = {
            who: [utterance_key(tenant, who, uuid.uuid4()), head_key(tenant, who, uuid.uuid4()),
                  report_key(tenant, who, uuid.uuid4())]
            for who in (alice, bob)
        }
        for who_keys in keys.values():
            for key in who_keys:
                store.put(key, b"payload")
        assert store.delete_prefix(speaker_prefix(tenant, alice)) == 3
        for key in keys[alice]:
            with pytest.raises(ObjectNotFound):
                store.stat(key)
        assert store.list_keys(speaker_prefix(tenant, bob)) == sorted(keys[bob])


class TestMinioBackend:
    def test_bucket_is_created_on_first_put(self, s3_endpoint: dict[str, Any], s3_bucket: str) -> None:
        store = minio_store(s3_endpoint, s3_bucket)
        assert not store.client.bucket_exists(s3_bucket)
        store.put("first", b"1")
        assert store.client.bucket_exists(s3_bucket)

    def test_ping_creates_a_missing_bucket(self, s3_endpoint: dict[str, Any], s3_bucket: str) -> None:
        store = minio_store(s3_endpoint, s3_bucket)
        store.ping()
        assert store.client.bucket_exists(s3_bucket)

    def test_existing_bucket_is_reused(self, s3_endpoint: dict[str, Any], s3_bucket: str) -> None:
        minio_store(s3_endpoint, s3_bucket).put("kept", b"1")
        other = minio_store(s3_endpoint, s3_bucket)
        other.ensure_bucket()
        other.put("second", b"2")
        assert other.get("kept") == b"1" and other.get("second") == b"2"

    def test_reads_from_a_missing_bucket_find_nothing(self, s3_endpoint: dict[str, Any], s3_bucket: str) -> None:
        store = minio_store(s3_endpoint, s3_bucket)
        with pytest.raises(ObjectNotFound):
            store.get("a")
        with pytest.raises(ObjectNotFound):
            store.stat("a")
        assert store.list_keys("a/") == []
        assert store.delete_prefix("a/") == 0
        store.delete("a")
        assert not store.client.bucket_exists(s3_bucket)  # reads and deletes never create it

    def test_content_type_is_stored(self, s3_endpoint: dict[str, Any], s3_bucket: str) -> None:
        store = minio_store(s3_endpoint, s3_bucket)
        store.put("audio.flac", b"fLaC", "audio/flac")
        assert store.client.stat_object(s3_bucket, "audio.flac").content_type == "audio/flac"

    def test_endpoint_may_be_given_as_a_url(self, s3_endpoint: dict[str, Any], s3_bucket: str) -> None:
        store = minio_store({**s3_endpoint, "endpoint": s3_endpoint["url"]}, s3_bucket)
        assert store.endpoint == s3_endpoint["endpoint"] and not store.secure
        store.put("x", b"y")
        assert store.get("x") == b"y"

    def test_unreachable_endpoint_raises_unavailable(self, s3_bucket: str) -> None:
        with socket.socket() as probe:  # a port nobody listens on
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        store = MinioObjectStore(
            f"127.0.0.1:{port}", "k", "s", s3_bucket, region="us-east-1", connect_timeout=1, retries=0
        )
        for call in (store.ping, lambda: store.put("a", b"1"), lambda: store.get("a"), lambda: store.stat("a")):
            with pytest.raises(ObjectStoreUnavailable):
                call()
        assert issubclass(ObjectStoreUnavailable, ObjectStoreError)

    def test_invalid_endpoint_url_is_refused(self) -> None:
        with pytest.raises(ValueError):
            MinioObjectStore("ftp://host:21", "k", "s", "bucket")


class TestLocalBackend:
    def test_keys_map_to_files_under_the_root(self, tmp_path: Path) -> None:
        store = LocalObjectStore(tmp_path / "root")
        store.put("a/b/c.bin", b"data")
        assert (tmp_path / "root" / "a" / "b" / "c.bin").read_bytes() == b"data"

    def test_writes_leave_no_temporary_files(self, tmp_path: Path) -> None:
        store = LocalObjectStore(tmp_path)
        for i in range(3):
            store.put("k/v", str(i).encode())
        assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["v"]

    def test_failed_write_keeps_the_old_object_and_cleans_up(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store = LocalObjectStore(tmp_path)
        store.put("k/v", b"old")

        def broken_replace(src: str, dst: str) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "replace", broken_replace)
        with pytest.raises(ObjectStoreUnavailable, match="No space left"):
            store.put("k/v", b"new")
        monkeypatch.undo()
        assert store.get("k/v") == b"old"
        assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["v"]

    def test_stale_temporaries_of_an_interrupted_put_are_removed(self, tmp_path: Path) -> None:
        store = LocalObjectStore(tmp_path)
        store.put("t/s/kept", b"x")
        old, young = tmp_path / "t" / "s" / ".tmp-old", tmp_path / "t" / "s" / ".tmp-young"
        old.write_bytes(b"half")
        young.write_bytes(b"half")
        an_hour_ago = datetime.now(timezone.utc) - timedelta(hours=1)
        os.utime(old, (an_hour_ago.timestamp(), an_hour_ago.timestamp()))
        assert [info.key for info in store.list_objects("t/")] == ["t/s/kept"]  # never listed as objects
        assert store.remove_stale_temporaries("t/", an_hour_ago + timedelta(minutes=1)) == 1
        assert not old.exists() and young.exists() and store.get("t/s/kept") == b"x"

    def test_a_key_that_needs_a_file_to_be_a_directory_is_refused(self, tmp_path: Path) -> None:
        store = LocalObjectStore(tmp_path)
        store.put("a", b"file")
        with pytest.raises(ObjectStoreError, match="collides"):
            store.put("a/b", b"under a file")
        store.put("c/d", b"1")
        with pytest.raises(ObjectStoreError, match="collides"):
            store.put("c", b"over a directory")
        assert store.get("a") == b"file"

    def test_delete_prefix_removes_the_emptied_directories(self, tmp_path: Path) -> None:
        store = LocalObjectStore(tmp_path)
        store.put("t/s/u/1", b"1")
        store.put("t/s/h/2", b"2")
        assert store.delete_prefix("t/s/") == 2
        assert not (tmp_path / "t" / "s").exists()

    def test_a_put_racing_a_delete_prefix_writes_again(self, tmp_path: Path, monkeypatch) -> None:
        """A speaker's erasure removes the directory between the temporary file and the rename: the write starts
        over instead of failing as an outage (a 503 to the uploader)."""
        store = LocalObjectStore(tmp_path)
        store.put("t/s/u/old", b"0")
        real_replace, raced = os.replace, []

        def replace_after_a_delete(src, dst):
            if not raced:
                raced.append(store.delete_prefix("t/s/"))
            return real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace_after_a_delete)
        store.put("t/s/u/new", b"1")
        assert raced == [1] and store.get("t/s/u/new") == b"1"
        assert [p.name for p in (tmp_path / "t" / "s" / "u").iterdir()] == ["new"]

    def test_ping_fails_when_the_root_is_gone(self, tmp_path: Path) -> None:
        store = LocalObjectStore(tmp_path / "root")
        (tmp_path / "root").rmdir()
        (tmp_path / "root").write_bytes(b"not a directory")
        with pytest.raises(ObjectStoreUnavailable):
            store.ping()
        with pytest.raises(ObjectStoreUnavailable):
            store.put("a", b"1")

    def test_root_is_created(self, tmp_path: Path) -> None:
        LocalObjectStore(tmp_path / "new" / "objects").ping()
        assert (tmp_path / "new" / "objects").is_dir()


class TestKeys:
    def test_keys_are_built_from_canonical_ids(self) -> None:
        tenant, speaker, item = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        prefix = f"tenants/{tenant}/speakers/{speaker}/"
        assert speaker_prefix(tenant, speaker) == prefix
        assert utterance_key(tenant, speaker, item) == f"{prefix}utterances/{item}.flac"
        assert head_key(tenant, speaker, item) == f"{prefix}heads/{item}.safetensors"
        assert report_key(tenant, speaker, item) == f"{prefix}reports/{item}.json"
        assert utterance_key(str(tenant).upper(), str(speaker), item.hex) == utterance_key(tenant, speaker, item)

    def test_built_keys_pass_validation(self) -> None:
        ids = [uuid.uuid4() for _ in range(3)]
        for build in (utterance_key, head_key, report_key):
            assert validate_key(build(*ids)) == build(*ids)
        assert validate_prefix(speaker_prefix(*ids[:2])) == speaker_prefix(*ids[:2])

    @pytest.mark.parametrize("bad", ["../../etc/passwd", "clip.wav", "", "1234", "my recording.mp3"])
    def test_ids_that_are_not_uuids_are_refused(self, bad: str) -> None:
        good = uuid.uuid4()
        for build in (utterance_key, head_key, report_key):
            with pytest.raises(InvalidObjectKey, match="must be a UUID"):
                build(good, good, bad)
        with pytest.raises(InvalidObjectKey):
            speaker_prefix(bad, good)

    def test_prefix_of_one_speaker_never_covers_another(self) -> None:
        tenant, one, two = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        assert not head_key(tenant, two, uuid.uuid4()).startswith(speaker_prefix(tenant, one))
        assert speaker_prefix(tenant, one).endswith("/")
