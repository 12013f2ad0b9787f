"""Quotas per tenant (app.services.quotas), on SQLite and on PostgreSQL: each quota answers 429 ``quota_exceeded``
with its name, limit and usage (in the message and as fields), stores nothing, leaves other tenants alone, and
holds under concurrent requests; the CLI override (``hra tenants quota``/``show``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from app import errors
from app.cli import build_parser
from app.main import create_app
from app.services import quotas
from app.services import speakers as speaker_service
from storage.models import AdaptationJob, Head, HeadType, Speaker, Tenant, Utterance, utcnow
from tests.app.conftest import assert_error
from tests.app.fakes import tone
from tests.app.support import create_job, make_services, make_settings, seed_speaker

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path, ml, queue):
    """(services, client of tenant ``acme`` with one speaker that has enough data to adapt, the seed)."""
    if request.param == "sqlite":
        url = request.getfixturevalue("app_sqlite_url")
    else:  # a fresh schema per test (``postgres_url`` is shared by a module): the counts start from zero
        url = request.getfixturevalue("postgres_url_factory")()
    services = make_services(make_settings(tmp_path, url), ml, queue)
    seeded = seed_speaker(services, "acme")
    with TestClient(create_app(services=services), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {seeded.api_key}"
        yield services, client, seeded
    services.session_factory.kw["bind"].dispose()


def override(services, tenant: str, **values) -> None:
    with services.session_factory() as db:
        row = db.scalar(select(Tenant).where(Tenant.name == tenant))
        quotas.set_overrides(db, row, values)
        db.commit()


def assert_quota_error(response, quota: str, limit: float, usage: float) -> dict:
    error = assert_error(response, 429, "quota_exceeded")
    assert (error["quota"], error["limit"], error["usage"]) == (quota, limit, usage), error
    assert f"{limit:g}" in error["message"] and f"{usage:g}" in error["message"], error["message"]
    return error


def count(services, model) -> int:
    with services.session_factory() as db:
        return int(db.scalar(select(func.count()).select_from(model)))


def objects(services) -> int:
    return sum(1 for p in Path(services.settings.object_store_dir).rglob("*") if p.is_file())


def upload(client, speaker_id, seconds: float = 1.0, freq: float = 300.0):
    files = {"audio": ("a.wav", tone(seconds, freq=freq), "audio/wav")}
    return client.post(f"/v1/speakers/{speaker_id}/utterances", files=files, data={"transcript": "hello there"})


def test_speakers(backend):
    services, client, _ = backend
    override(services, "acme", speakers=3)  # the seeded speaker is one
    for i in range(2):
        assert client.post("/v1/speakers", json={"external_id": f"s{i}"}).status_code == 201
    before = count(services, Speaker)
    assert_quota_error(client.post("/v1/speakers", json={"external_id": "s2"}), "speakers", 3, 3)
    assert count(services, Speaker) == before
    # Another tenant has its own count and the defaults.
    other = seed_speaker(services, "globex", offset=20)
    response = client.post("/v1/speakers", json={}, headers={"Authorization": f"Bearer {other.api_key}"})
    assert response.status_code == 201, response.text
    # A duplicate external_id is still a 409 (checked first), and the override can be lifted.
    assert_error(client.post("/v1/speakers", json={"external_id": "s0"}), 409, "speaker_exists")
    override(services, "acme", speakers=None)
    assert client.post("/v1/speakers", json={"external_id": "s2"}).status_code == 201


def test_a_tombstoned_speaker_no_longer_counts(backend):
    services, client, seeded = backend
    override(services, "acme", speakers=1)
    assert_quota_error(client.post("/v1/speakers", json={}), "speakers", 1, 1)
    with services.session_factory() as db:
        speaker_service.tombstone_speaker(db, seeded.speaker_id)
        db.commit()
    assert client.post("/v1/speakers", json={}).status_code == 201


def test_utterances_per_speaker(backend):
    services, client, seeded = backend  # 6 utterances
    override(services, "acme", utterances_per_speaker=7)
    assert upload(client, seeded.speaker_id).status_code == 201
    rows, stored = count(services, Utterance), objects(services)
    assert_quota_error(upload(client, seeded.speaker_id), "utterances_per_speaker", 7, 7)
    assert (count(services, Utterance), objects(services)) == (rows, stored)  # nothing stored
    other = client.post("/v1/speakers", json={}).json()["id"]  # the limit is per speaker
    assert upload(client, other).status_code == 201


def test_stored_bytes_counts_audio_and_heads(backend):
    services, client, seeded = backend
    with services.session_factory() as db:
        used = quotas.stored_bytes(db, seeded.tenant_id)
        assert used == int(db.scalar(select(func.sum(Utterance.size_bytes)))) > 0
    override(services, "acme", stored_bytes=used + 100)
    rows, stored = count(services, Utterance), objects(services)
    # Below the limit, but this upload would cross it: refused after decoding, its object removed again.
    error = assert_quota_error(upload(client, seeded.speaker_id), "stored_bytes", used + 100, used)
    assert "this upload needs" in error["message"]
    assert (count(services, Utterance), objects(services)) == (rows, stored)
    override(services, "acme", stored_bytes=used + 64 * 1024)
    response = upload(client, seeded.speaker_id)
    assert response.status_code == 201, response.text
    with services.session_factory() as db:
        used = quotas.stored_bytes(db, seeded.tenant_id)
    # Heads count too: at the limit, uploads and new jobs are refused before anything is decoded or queued.
    with services.session_factory() as db:
        limit = quotas.limits_for(db, services.settings, seeded.tenant_id).stored_bytes
        db.add(
            Head(
                speaker_id=seeded.speaker_id, version=1, head_type=HeadType.linear, object_key="heads/x",
                sha256="0" * 64, size_bytes=limit - used, parameters=1, backbone_fingerprint="b",
                controller_fingerprint="c",
            )
        )
        db.commit()
    assert_quota_error(upload(client, seeded.speaker_id, seconds=0.5), "stored_bytes", limit, limit)
    response = client.post(f"/v1/speakers/{seeded.speaker_id}/adaptations", json={"head_type": "linear"})
    assert_quota_error(response, "stored_bytes", limit, limit)
    assert count(services, AdaptationJob) == 0


def test_active_jobs(backend):
    services, client, seeded = backend
    second = seed_speaker(services, "acme", offset=10)
    override(services, "acme", active_jobs=1)
    first = client.post(f"/v1/speakers/{seeded.speaker_id}/adaptations", json={"head_type": "linear"})
    assert first.status_code == 202, first.text
    response = client.post(f"/v1/speakers/{second.speaker_id}/adaptations", json={"head_type": "linear"})
    assert_quota_error(response, "active_jobs", 1, 1)
    assert count(services, AdaptationJob) == 1
    # The one active job of the same speaker is still a 409 (checked first).
    again = client.post(f"/v1/speakers/{seeded.speaker_id}/adaptations", json={"head_type": "linear"})
    assert_error(again, 409, "job_already_active")
    assert client.post(f"/v1/jobs/{first.json()['id']}/cancel").status_code == 200
    response = client.post(f"/v1/speakers/{second.speaker_id}/adaptations", json={"head_type": "linear"})
    assert response.status_code == 202, response.text


def test_training_seconds_per_day(backend):
    services, client, seeded = backend
    second = seed_speaker(services, "acme", offset=10)
    override(services, "acme", train_seconds_per_day=200)

    def adapt(speaker_id, seconds):
        body = {"head_type": "linear", "max_train_seconds": seconds}
        return client.post(f"/v1/speakers/{speaker_id}/adaptations", json=body)

    first = adapt(seeded.speaker_id, 150)
    assert first.status_code == 202, first.text
    response = adapt(second.speaker_id, 100)
    assert_quota_error(response, "train_seconds_per_day", 200, 150)
    # It fits again when the first job's budget leaves the 24-h window: about a day from now.
    assert 24 * 3600 - 120 <= int(response.headers["Retry-After"]) <= 24 * 3600
    assert adapt(second.speaker_id, 50).status_code == 202  # exactly the rest
    # A job that ended before training started used nothing; one that trained counts even after it ended.
    assert client.post(f"/v1/jobs/{first.json()['id']}/cancel").status_code == 200
    with services.session_factory() as db:
        assert quotas.train_seconds_used(db, seeded.tenant_id) == 50
    third = seed_speaker(services, "acme", offset=30)
    assert adapt(third.speaker_id, 150).status_code == 202
    with services.session_factory() as db:  # the first job had trained (test setup writes the row directly)
        first_id = uuid.UUID(first.json()["id"])
        db.execute(update(AdaptationJob).where(AdaptationJob.id == first_id).values(started_at=utcnow()))
        # ... and a job older than a day has left the window.
        db.execute(
            update(AdaptationJob)
            .where(AdaptationJob.speaker_id == third.speaker_id)
            .values(created_at=utcnow() - timedelta(hours=25))
        )
        db.commit()
        assert quotas.train_seconds_used(db, seeded.tenant_id) == 200
    # A request larger than the whole daily budget never fits: no Retry-After.
    override(services, "acme", train_seconds_per_day=100)
    response = adapt(seeded.speaker_id, 150)
    assert_quota_error(response, "train_seconds_per_day", 100, 200)
    assert "Retry-After" not in response.headers


def test_service_level_job_creation_enforces_the_quota_too(backend):
    services, _, seeded = backend
    override(services, "acme", active_jobs=0)
    with pytest.raises(errors.QuotaExceeded) as raised:
        create_job(services, seeded.speaker_id)
    assert raised.value.details == {"quota": "active_jobs", "limit": 0, "usage": 0}


def test_concurrent_creations_never_exceed_the_quota(backend):
    """Eight requests race for the last three units: exactly three speakers are created."""
    services, _, seeded = backend
    override(services, "acme", speakers=4)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def create(i: int) -> None:
        with services.session_factory() as db:
            barrier.wait(timeout=30)
            try:
                speaker_service.create_speaker(db, services.settings, seeded.tenant_id, f"racer-{i}", None)
                db.commit()
                outcomes.append("created")
            except errors.QuotaExceeded:
                db.rollback()
                outcomes.append("quota")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["created"] * 3 + ["quota"] * 5
    with services.session_factory() as db:
        assert quotas.speaker_count(db, seeded.tenant_id) == 4


def test_cli_overrides_and_shows_quotas(backend, capsys):
    services, client, _ = backend

    def hra(*argv: str) -> tuple[int, str]:
        args = build_parser().parse_args(["tenants", *argv])
        code = args.func(args, services.settings)
        return code, capsys.readouterr().out

    code, out = hra("quota", "acme", "--speakers", "1", "--stored-bytes", "2MiB", "--train-seconds-per-day", "90.5")
    assert code == 0
    shown = json.loads(out)["quotas"]
    assert shown["speakers"] == {"limit": 1, "source": "override", "usage": 1}
    assert shown["stored_bytes"]["limit"] == 2 * 1024**2 and shown["stored_bytes"]["source"] == "override"
    assert shown["train_seconds_per_day"]["limit"] == 90.5
    assert shown["active_jobs"] == {"limit": services.settings.quota_active_jobs, "source": "default", "usage": 0}
    assert shown["utterances_per_speaker"]["usage"] == 6
    assert_quota_error(client.post("/v1/speakers", json={}), "speakers", 1, 1)  # the API applies it at once

    code, out = hra("quota", "acme", "--speakers", "default")
    assert code == 0 and json.loads(out)["quotas"]["speakers"]["source"] == "default"
    assert client.post("/v1/speakers", json={}).status_code == 201
    code, out = hra("quota", "acme", "--reset")
    assert all(q["source"] == "default" for q in json.loads(out)["quotas"].values())
    code, out = hra("show", "acme")
    assert code == 0 and json.loads(out)["quotas"]["speakers"]["usage"] == 2

    assert hra("show", "nobody")[0] == 2
    assert hra("quota", "acme")[0] == 2  # nothing to change
    with pytest.raises(SystemExit):
        build_parser().parse_args(["tenants", "quota", "acme", "--speakers", "-1"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["tenants", "quota", "acme", "--stored-bytes", "2 parsecs"])


def test_cli_console_script(tmp_path, app_sqlite_url):
    """The installed entry point end to end, on the database the settings name."""
    services = make_services(make_settings(tmp_path, app_sqlite_url))
    seed_speaker(services, "acme", train=0, eval=0)
    services.session_factory.kw["bind"].dispose()
    env = {**os.environ, "HRA_DATABASE_URL": app_sqlite_url, "HRA_VAR_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "tenants", "quota", "acme", "--active-jobs", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["quotas"]["active_jobs"] == {"limit": 2, "source": "override", "usage": 0}
    with make_services(make_settings(tmp_path, app_sqlite_url)).session_factory() as db:
        assert db.scalar(select(Tenant.quotas).where(Tenant.name == "acme")) == {"active_jobs": 2}


def test_hand_edited_overrides_cannot_break_the_checks(backend):
    services, client, _ = backend
    with services.session_factory() as db:
        hand_edited = {"speakers": "many", "bogus": 1, "active_jobs": -3}
        db.execute(update(Tenant).where(Tenant.name == "acme").values(quotas=hand_edited))
        db.commit()
    assert client.post("/v1/speakers", json={}).status_code == 201  # ignored: the defaults apply


def test_defaults_come_from_the_settings(tmp_path, app_sqlite_url):
    services = make_services(make_settings(tmp_path, app_sqlite_url, quota_speakers=1))
    seeded = seed_speaker(services, "acme", train=0, eval=0)
    with TestClient(create_app(services=services), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {seeded.api_key}"
        assert_quota_error(client.post("/v1/speakers", json={}), "speakers", 1, 1)
    services.session_factory.kw["bind"].dispose()
