"""API keys: ``hra keys list|revoke``, prefixes, revocation (401), the key ``hra run`` keeps across restarts, and the
production checks of bootstrap keys and default secrets."""

from __future__ import annotations

import os
import uuid

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.cli import run_key
from app.main import create_app
from app.security import (
    KeyNotFound,
    create_api_key,
    ensure_run_key,
    find_api_key,
    find_key_row,
    list_api_keys,
    revoke_api_key,
)
from app.settings import Settings
from storage.models import ApiKey
from tests.app.conftest import assert_error
from tests.app.support import make_services, make_settings
from tests.app.test_cli import hra


def test_keys_list_shows_prefixes_and_revoke_by_prefix_makes_the_key_401(tmp_path):
    env = {"HRA_VAR_DIR": str(tmp_path), "HRA_BOOTSTRAP_API_KEY": ""}
    assert hra("db", "upgrade", env=env).returncode == 0
    first = hra("keys", "create", "--tenant", "acme", "--label", "laptop", env=env).stdout.strip().splitlines()[-1]
    second = hra("keys", "create", "--tenant", "globex", env=env).stdout.strip().splitlines()[-1]
    listed = hra("keys", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert first[:12] + "…" in listed.stdout and second[:12] + "…" in listed.stdout and "laptop" in listed.stdout
    assert first not in listed.stdout and second not in listed.stdout  # never the whole key
    only = hra("keys", "list", "--tenant", "globex", env=env).stdout
    assert second[:12] in only and first[:12] not in only

    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'hra.db'}")
    services = make_services(settings)
    with TestClient(create_app(services=services), raise_server_exceptions=False) as client:
        assert client.get("/v1/speakers", headers={"Authorization": f"Bearer {first}"}).status_code == 200
        revoked = hra("keys", "revoke", first[:12] + "…", env=env)  # pasted from the listing
        assert revoked.returncode == 0, revoked.stderr
        assert "revoked key " + first[:12] in revoked.stdout
        assert_error(client.get("/v1/speakers", headers={"Authorization": f"Bearer {first}"}), 401, "unauthorized")
        assert client.get("/v1/speakers", headers={"Authorization": f"Bearer {second}"}).status_code == 200
    again = hra("keys", "revoke", first[4:12], env=env)  # without "hra_": still found, already revoked
    assert again.returncode == 0 and "already revoked" in again.stdout
    assert "-" not in hra("keys", "list", "--tenant", "acme", env=env).stdout.splitlines()[1].split()[-1]
    missing = hra("keys", "revoke", "hra_zzzzzzzz", env=env)
    assert missing.returncode == 1 and "no key starts with" in missing.stderr


def test_find_api_key_by_id_prefix_or_whole_key_and_refuses_ambiguity(services):
    with services.session_factory() as db:
        _, a = create_api_key(db, "acme")
        _, b = create_api_key(db, "acme")
        db.commit()
        row = find_key_row(db, a)
        assert find_api_key(db, str(row.id)).id == row.id
        assert find_api_key(db, a[:12]).id == row.id
        assert find_api_key(db, a).id == row.id
        with pytest.raises(KeyNotFound, match="at least 4"):
            find_api_key(db, "hra_ab")
        # Two keys with the same shown prefix (48 random bits: rare, but possible): named by id instead.
        db.get(ApiKey, find_key_row(db, b).id).prefix = row.prefix
        db.commit()
        with pytest.raises(KeyNotFound, match="2 keys start with"):
            find_api_key(db, row.prefix)


def test_a_key_records_its_last_use_at_most_hourly(client, services, seeded):
    with services.session_factory() as db:
        assert find_key_row(db, seeded.api_key).last_used_at is None
    assert client.get("/v1/speakers").status_code == 200
    with services.session_factory() as db:
        used = find_key_row(db, seeded.api_key).last_used_at
    assert used is not None
    assert client.get("/v1/speakers").status_code == 200
    with services.session_factory() as db:
        assert find_key_row(db, seeded.api_key).last_used_at == used  # no write per request


def test_a_revoked_bootstrap_key_stays_refused(tmp_path, app_sqlite_url):
    bootstrap = "hra_" + "x1y2z3" * 7
    services = make_services(make_settings(tmp_path, app_sqlite_url, bootstrap_api_key=bootstrap))
    with TestClient(create_app(services=services), raise_server_exceptions=False) as client:
        headers = {"Authorization": f"Bearer {bootstrap}"}
        assert client.get("/v1/speakers", headers=headers).status_code == 200
        with services.session_factory() as db:
            (row, tenant), = list_api_keys(db)
            assert tenant == "default" and row.label == "bootstrap"
            assert revoke_api_key(db, row)
            db.commit()
        assert_error(client.get("/v1/speakers", headers=headers), 401, "unauthorized")


class TestRunKey:
    def test_kept_across_restarts_printed_only_when_minted(self, tmp_path, app_sqlite_url):
        settings = make_settings(tmp_path, app_sqlite_url)
        key, note = run_key(settings)
        path = tmp_path / "api-key"
        assert path.read_text().strip() == key and key in note
        assert os.stat(path).st_mode & 0o777 == 0o600
        again, note2 = run_key(settings)
        assert again == key and key not in note2 and key[:12] in note2 and str(path) in note2
        with make_services(settings).session_factory() as db:
            (row, _), = list_api_keys(db)
            assert row.label == "hra run" and row.key_hash != key  # stored hashed

    def test_rotate_mints_a_new_key_and_revokes_the_old(self, tmp_path, app_sqlite_url):
        settings = make_settings(tmp_path, app_sqlite_url)
        old, _ = run_key(settings)
        new, note = run_key(settings, rotate=True)
        assert new != old and new in note and f"previous key {old[:12]}… is revoked" in note
        with make_services(settings).session_factory() as db:
            assert find_key_row(db, old) is None and find_key_row(db, new) is not None
        assert run_key(settings)[0] == new

    def test_a_revoked_or_lost_key_is_replaced(self, tmp_path, app_sqlite_url):
        settings = make_settings(tmp_path, app_sqlite_url)
        services = make_services(settings)
        path = tmp_path / "api-key"
        with services.session_factory() as db:
            first = ensure_run_key(db, path)
            assert first.minted
            revoke_api_key(db, find_key_row(db, first.key))
            db.commit()
            second = ensure_run_key(db, path)
            assert second.minted and second.key != first.key and second.revoked_prefix is None
            path.unlink()
            third = ensure_run_key(db, path)
            assert third.minted and third.key != second.key

    def test_a_key_file_others_can_read_is_tightened(self, tmp_path, app_sqlite_url):
        settings = make_settings(tmp_path, app_sqlite_url)
        key, _ = run_key(settings)
        os.chmod(tmp_path / "api-key", 0o644)
        assert run_key(settings)[0] == key
        assert os.stat(tmp_path / "api-key").st_mode & 0o777 == 0o600

    def test_the_bootstrap_key_is_used_as_is_and_cannot_be_rotated(self, tmp_path, app_sqlite_url):
        settings = make_settings(tmp_path, app_sqlite_url, bootstrap_api_key="hra_" + "k" * 40)
        assert run_key(settings)[0] == "hra_" + "k" * 40
        with pytest.raises(SystemExit):
            run_key(settings, rotate=True)
        assert not (tmp_path / "api-key").exists()


PG = "postgresql+psycopg2://hra:{}@db:5432/hra"
GOOD_KEY = "hra_" + "Zq8vN2pL5xR7tY1wK4mB9cD3fG6hJ0sA2eU"


def production(**overrides) -> Settings:
    values = dict(env="production", database_url=PG.format("Vb7#kq2LmP9x"), var_dir="/tmp/hra-prod-test")
    values.update(overrides)
    return Settings(_env_file=None, **values)


class TestProductionRefusals:
    def test_a_long_random_bootstrap_key_and_real_secrets_are_accepted(self):
        settings = production(bootstrap_api_key=GOOD_KEY, object_store="s3", s3_secret_key=uuid.uuid4().hex)
        assert settings.bootstrap_api_key == GOOD_KEY

    @pytest.mark.parametrize(
        ("key", "why"),
        [
            ("hra_short", "characters"),
            ("a" * 40, "not random"),
            ("ab" * 20, "not random"),
            ("hra-local-secret-" + "Zq8vN2pL5xR7tY1wK4", "known default"),
            ("changeme-changeme-changeme-changeme", "known default"),
        ],
    )
    def test_a_short_or_guessable_bootstrap_key_is_refused(self, key, why):
        with pytest.raises(ValidationError, match=why):
            production(bootstrap_api_key=key)

    def test_the_same_keys_are_fine_locally(self):
        assert Settings(_env_file=None, bootstrap_api_key="hra_short").bootstrap_api_key == "hra_short"

    @pytest.mark.parametrize("password", ["hra-local-password", "postgres", "password"])
    def test_a_default_database_password_is_refused(self, password):
        with pytest.raises(ValidationError, match="HRA_DATABASE_URL"):
            production(database_url=PG.format(password))

    def test_a_default_broker_password_is_refused(self):
        with pytest.raises(ValidationError, match="HRA_BROKER_URL"):
            production(broker_url="redis://:changeme@redis:6379/0")

    @pytest.mark.parametrize("secret", ["minioadmin", "hra-local-secret"])
    def test_a_default_object_store_secret_is_refused(self, secret):
        with pytest.raises(ValidationError, match="S3 secret"):
            production(object_store="s3", s3_secret_key=secret)
