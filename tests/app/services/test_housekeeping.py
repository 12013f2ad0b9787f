"""Housekeeping (app/services/housekeeping.py): orphan objects older than the grace are deleted, younger and
referenced ones kept, on the local store and on S3 (moto); interrupted speaker erasures are finished; the workers'
reaper thread and ``hra objects sweep`` run it. The main cases run on (local store, SQLite) and (S3, PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.services.housekeeping import (
    finish_interrupted_erasures,
    housekeep,
    sweep_orphan_objects,
)
from app.services.speakers import tombstone_speaker
from storage.models import AdaptationJob, Head, Speaker, Utterance, utcnow
from storage.objects import (
    LocalObjectStore,
    MinioObjectStore,
    head_key,
    report_key,
    speaker_prefix,
    utterance_key,
)
from tests.app.fakes import FakeML, RecordingQueue
from tests.app.support import create_job, make_services, make_settings, seed_speaker
from workers.evaluation import run_evaluation
from workers.reaper import start_reaper_thread
from workers.training import run_training

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(params=["local-sqlite", "s3-postgres"])
def services(request, tmp_path):
    store, database = request.param.split("-")
    if database == "sqlite":
        url = request.getfixturevalue("app_sqlite_url")
    else:
        url = request.getfixturevalue("postgres_url_factory")()
    settings = make_settings(tmp_path, url)
    services = make_services(settings, FakeML(), RecordingQueue())
    if store == "s3":
        s3 = request.getfixturevalue("s3_endpoint")
        services.object_store = MinioObjectStore(
            s3["endpoint"], s3["access_key"], s3["secret_key"], request.getfixturevalue("s3_bucket"),
            region=s3["region"],
        )
    yield services
    services.session_factory.kw["bind"].dispose()


def adapt(services, speaker_id) -> uuid.UUID:
    job_id = create_job(services, speaker_id)
    assert run_training(services, job_id).action == "trained"
    assert run_evaluation(services, job_id).action == "promoted"
    return job_id


def all_keys(store) -> set[str]:
    return {info.key for info in store.list_objects("tenants/")}


def test_old_orphans_are_deleted_young_and_referenced_objects_kept(services):
    store = services.object_store
    s = seed_speaker(services)
    adapt(services, s.speaker_id)
    referenced = all_keys(store)
    assert len(referenced) == 8  # 6 utterances, a head, a report
    stranger = uuid.uuid4()  # a speaker with no row at all
    old_orphans = [
        utterance_key(s.tenant_id, s.speaker_id, uuid.uuid4()),  # the API died between put and commit
        head_key(s.tenant_id, s.speaker_id, uuid.uuid4()),  # a run taken over after its upload
        report_key(s.tenant_id, s.speaker_id, uuid.uuid4()),  # a report whose decision did not commit
        utterance_key(s.tenant_id, stranger, uuid.uuid4()),
    ]
    unrecognized = f"tenants/{s.tenant_id}/notes.txt"  # not the service's layout: never touched
    for key in [*old_orphans, unrecognized]:
        store.put(key, b"orphan")
    written = utcnow()
    time.sleep(2.1)  # S3 keeps whole seconds
    young = utterance_key(s.tenant_id, s.speaker_id, uuid.uuid4())  # e.g. an upload about to commit its row
    store.put(young, b"young")
    now = written + timedelta(seconds=0.6) + timedelta(seconds=services.settings.orphan_grace_seconds)

    dry = sweep_orphan_objects(services, now=now, dry_run=True)
    assert sorted(dry.orphans) == sorted(old_orphans)
    assert all_keys(store) == referenced | set(old_orphans) | {young, unrecognized}

    report = sweep_orphan_objects(services, now=now)
    assert sorted(report.orphans) == sorted(old_orphans)
    assert (report.listed, report.referenced, report.recent, report.unrecognized) == (14, 8, 1, 1)
    assert all_keys(store) == referenced | {young, unrecognized}
    # Grace 0 at the real time: the young one goes too; the referenced ones never do.
    assert sweep_orphan_objects(services, 0.0).orphans == [young]
    assert all_keys(store) == referenced | {unrecognized}


def test_an_interrupted_speaker_erasure_is_finished_once_old_enough(services):
    store = services.object_store
    gone = seed_speaker(services)
    adapt(services, gone.speaker_id)
    kept = seed_speaker(services, "globex", offset=20)
    with services.session_factory() as db:  # a DELETE whose process died right after its first step
        tombstone_speaker(db, gone.speaker_id)
        db.commit()
    assert finish_interrupted_erasures(services) == []  # too recent: the DELETE may still be running
    later = utcnow() + timedelta(seconds=services.settings.erasure_resume_after_seconds + 1)
    report = housekeep(services, now=later)
    assert report.erasures_finished == [gone.speaker_id]
    assert store.list_keys(speaker_prefix(gone.tenant_id, gone.speaker_id)) == []
    assert len(store.list_keys(speaker_prefix(kept.tenant_id, kept.speaker_id))) == 6
    with services.session_factory() as db:
        assert db.get(Speaker, gone.speaker_id) is None
        for model in (Utterance, Head, AdaptationJob):
            assert db.scalar(select(func.count()).select_from(model).where(model.speaker_id == gone.speaker_id)) == 0


def test_the_workers_reaper_thread_housekeeps_periodically(tmp_path, app_sqlite_url):
    settings = make_settings(tmp_path, app_sqlite_url, housekeeping_interval_seconds=0.2, orphan_grace_seconds=0)
    services = make_services(settings)
    s = seed_speaker(services)
    orphan = utterance_key(s.tenant_id, s.speaker_id, uuid.uuid4())
    services.object_store.put(orphan, b"orphan")
    stop = threading.Event()
    thread = start_reaper_thread(services, stop)
    try:
        deadline = time.monotonic() + 20
        while orphan in all_keys(services.object_store) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert orphan not in all_keys(services.object_store)
        assert len(all_keys(services.object_store)) == 6
    finally:
        stop.set()
        thread.join(timeout=10)


def test_local_store_temporaries_of_killed_writes_are_swept(tmp_path, app_sqlite_url):
    services = make_services(make_settings(tmp_path, app_sqlite_url))
    s = seed_speaker(services)
    leftover = Path(services.object_store.root) / speaker_prefix(s.tenant_id, s.speaker_id) / "utterances" / ".tmp-x"
    leftover.write_bytes(b"half an upload")
    past = time.time() - 2 * services.settings.orphan_grace_seconds
    os.utime(leftover, (past, past))
    report = sweep_orphan_objects(services)
    assert report.temporaries == 1 and not leftover.exists() and report.orphans == []
    assert isinstance(services.object_store, LocalObjectStore)


def test_hra_objects_sweep_command(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HRA_")}
    env.update(HRA_VAR_DIR=str(tmp_path), HRA_OBJECT_STORE="local")

    def hra(*args):
        done = subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    hra("db", "upgrade")
    store = LocalObjectStore(tmp_path / "objects")
    orphan = utterance_key(uuid.uuid4(), uuid.uuid4(), uuid.uuid4())
    store.put(orphan, b"orphan")
    assert "orphans deleted: 0" in hra("objects", "sweep")  # younger than the default grace (1 h)
    assert f"would delete {orphan}" in hra("objects", "sweep", "--grace-seconds", "0", "--dry-run")
    assert store.list_keys("tenants/") == [orphan]
    assert f"deleted {orphan}" in hra("objects", "sweep", "--grace-seconds", "0")
    assert store.list_keys("tenants/") == []
