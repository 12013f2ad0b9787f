"""The shared service fixtures of tests/conftest.py do what other test packages rely on."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

from minio import Minio
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from storage import migrate
from storage.db import make_engine, make_session_factory, session_scope
from storage.models import Tenant
from tests.conftest import drop_schema
from tests.conftest import remove_bucket


def test_postgres_url_is_a_migrated_schema_of_its_own(
    postgres_url: str, postgres_url_factory: Callable[..., str], postgres_admin_engine: Engine
) -> None:
    assert migrate.current_revision(postgres_url) == migrate.head_revision()
    other_url = postgres_url_factory()
    engines = [make_engine(postgres_url), make_engine(other_url)]
    try:
        with session_scope(make_session_factory(engines[0])) as session:
            session.add(Tenant(name="only-here"))
        with engines[1].connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM tenants")).scalar() == 0
        with engines[0].connect() as connection:
            schema = connection.execute(text("SELECT current_schema()")).scalar()
            assert schema is not None and schema.startswith("hra_test_")
            assert connection.execute(text("SELECT count(*) FROM tenants")).scalar() == 1
    finally:
        for engine in engines:
            engine.dispose()
    with postgres_admin_engine.connect() as connection:
        found = connection.execute(
            text("SELECT count(*) FROM information_schema.tables WHERE table_schema = :s AND table_name = 'heads'"),
            {"s": schema},
        ).scalar()
    assert found == 1


def test_s3_bucket_fixture_cleanup_removes_objects_and_bucket(s3_endpoint: dict[str, Any], s3_bucket: str) -> None:
    client = Minio(
        s3_endpoint["endpoint"],
        access_key=s3_endpoint["access_key"],
        secret_key=s3_endpoint["secret_key"],
        secure=False,
        region=s3_endpoint["region"],
    )
    assert not client.bucket_exists(s3_bucket)  # the name is reserved, the bucket is not made
    client.make_bucket(s3_bucket)
    client.put_object(s3_bucket, "a/b", io.BytesIO(b"x"), 1)
    remove_bucket(s3_endpoint, s3_bucket)
    assert not client.bucket_exists(s3_bucket)
    remove_bucket(s3_endpoint, s3_bucket)  # and again: nothing to do is not an error


def test_dropping_a_schema_ends_connections_left_open_on_it(
    postgres_url_factory: Callable[..., str], postgres_admin_engine: Engine
) -> None:
    url = postgres_url_factory()
    schema = make_url(url).query["application_name"]
    engine = make_engine(url)
    try:
        connection = engine.connect()
        connection.execute(text("LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE"))  # left "idle in transaction"
        started = time.monotonic()
        drop_schema(postgres_admin_engine, schema)  # type: ignore[arg-type]
        assert time.monotonic() - started < 10
        with postgres_admin_engine.connect() as admin:
            left = admin.execute(text("SELECT count(*) FROM pg_namespace WHERE nspname = :s"), {"s": schema}).scalar()
        assert left == 0
        connection.invalidate()
    finally:
        engine.dispose()
