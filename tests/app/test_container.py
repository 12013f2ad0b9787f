"""The composition root turns the settings into the backing services (storage itself never reads them)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlalchemy import select

from app.container import build_services, object_store_from_settings
from storage.db import session_scope
from storage.migrate import upgrade
from app.settings import Settings
from storage.models import Tenant
from storage.objects import LocalObjectStore, MinioObjectStore
from tests.app.support import make_settings


def test_the_database_is_the_one_the_settings_name(tmp_path):
    url = f"sqlite:///{tmp_path / 'named.db'}"
    upgrade(url)
    services = build_services(make_settings(tmp_path, url))
    assert str(services.session_factory.kw["bind"].url) == url
    with session_scope(services.session_factory) as db:
        db.add(Tenant(name="via-settings"))
    with session_scope(services.session_factory) as db:
        assert db.scalars(select(Tenant.name)).all() == ["via-settings"]


class TestObjectStoreFromSettings:
    def test_local_setting_gives_a_directory_store(self, tmp_path: Path) -> None:
        store = object_store_from_settings(Settings(_env_file=None, object_store="local", object_store_dir=tmp_path / "objs"))
        assert isinstance(store, LocalObjectStore) and store.root == (tmp_path / "objs").resolve()

    def test_local_store_defaults_to_the_var_dir(self, tmp_path: Path) -> None:
        store = object_store_from_settings(Settings(_env_file=None, var_dir=tmp_path))
        assert isinstance(store, LocalObjectStore) and store.root == (tmp_path / "objects").resolve()

    def test_s3_setting_gives_a_working_minio_store(self, s3_endpoint: dict[str, Any], s3_bucket: str) -> None:
        settings = Settings(
            _env_file=None,
            object_store="s3",
            s3_endpoint=s3_endpoint["endpoint"],
            s3_access_key=s3_endpoint["access_key"],
            s3_secret_key=s3_endpoint["secret_key"],
            s3_bucket=s3_bucket,
            s3_region=s3_endpoint["region"],
            s3_secure=False,
        )
        store = object_store_from_settings(settings)
        assert isinstance(store, MinioObjectStore) and store.bucket == s3_bucket
        store.put("made/by/settings", b"ok")
        assert store.get("made/by/settings") == b"ok"

    def test_s3_env_fixture_configures_the_settings(
        self, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for name, value in s3_env.items():
            monkeypatch.setenv(name, value)
        store = object_store_from_settings(Settings(_env_file=None))
        assert isinstance(store, MinioObjectStore)
        store.ping()




@pytest.fixture(autouse=True)
def _no_stray_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings built in these tests must not pick up HRA_* variables of the environment running them."""
    for name in list(os.environ):
        if name.startswith("HRA_"):
            monkeypatch.delenv(name)
    yield
