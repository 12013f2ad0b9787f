"""Service fixtures shared by every test package: real PostgreSQL, a real S3 endpoint, SQLite files.

A service that cannot be reached FAILS the tests that need it (``pytest.fail``); nothing is skipped.

PostgreSQL (``HRA_TEST_POSTGRES_URL``, default ``postgresql+psycopg2://postgres@127.0.0.1:5432/test``): every
``postgres_url`` is a fresh schema in that database, migrated to head (~0.1-0.5 s), dropped afterwards (its
connections are ended first); the URL carries ``options=-csearch_path=<schema>``, so the service, Alembic and
child processes given that URL all work inside it. (A database per test, cloned from a migrated template,
measured 3-4x slower here.) Schema names carry their creation time (``hra_test_<unix time>_<random>``): schemas
left by a killed run are dropped by a later run once they are a day old.

S3: a moto server (``moto.server.ThreadedMotoServer``) in a child process on a free port, one per session; its
stdin is a pipe from this process, so it exits when the test run ends, however it ends. ``s3_bucket`` gives
each test a unique bucket name (not created: the store creates it) and removes the bucket and its objects after.

Fixtures:
    postgres_url               module    fresh migrated schema, its SQLAlchemy URL (str)
    postgres_url_factory       session   make(migrated=True) -> URL, for session/module-scoped fixtures;
                                         every schema it made is dropped at the end of the session
    postgres_admin_engine      session   AUTOCOMMIT engine on the test database
    sqlite_url                 function  migrated SQLite file in the test's tmp_path, its URL (str)
    s3_endpoint                session   {"endpoint": "127.0.0.1:PORT", "url": "http://127.0.0.1:PORT",
                                          "access_key", "secret_key", "region", "secure": False}
    s3_bucket                  function  unique bucket name, removed (with its objects) after the test
    s3_env                     function  HRA_* environment variables that point a child process at s3_bucket
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

DEFAULT_POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
SCHEMA_PREFIX = "hra_test_"
STALE_SCHEMA_AGE_S = 24 * 3600

S3_ACCESS_KEY = "hra-test-access-key"
S3_SECRET_KEY = "hra-test-secret-key"
S3_REGION = "us-east-1"


# ----------------------------------------------------------------------------------------------------------------
# PostgreSQL


def _schema_name() -> str:
    return f"{SCHEMA_PREFIX}{int(time.time())}_{uuid.uuid4().hex[:10]}"


def _schema_url(admin_url: str, schema: str) -> str:
    # search_path confines every connection made from this URL to the schema; application_name tags those
    # connections so that teardown can end any a test left open. "=" is left unescaped on purpose: a URL
    # without "%" survives configparser-based tools (alembic.ini, celery).
    separator = "&" if "?" in admin_url else "?"
    return f"{admin_url}{separator}options=-csearch_path={schema}&application_name={schema}"


@pytest.fixture(scope="session")
def postgres_admin_engine() -> Iterator[Engine]:
    """AUTOCOMMIT engine on the test database (CREATE/DROP SCHEMA); fails the tests when Postgres is down."""
    admin_url = os.environ.get("HRA_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    engine = create_engine(
        admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool, connect_args={"connect_timeout": 5}
    )
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to connect is the same failure here
        engine.dispose()
        pytest.fail(f"PostgreSQL is not reachable at {make_url(admin_url)!r} (set HRA_TEST_POSTGRES_URL): {exc}")
    _drop_stale_schemas(engine)
    yield engine
    engine.dispose()


def drop_schema(engine: Engine, schema: str) -> None:
    with engine.connect() as connection:
        # Connections still open on the schema (a process the test left running) would block the DROP.
        connection.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :name"),
            {"name": schema},
        )
        connection.execute(text("SET lock_timeout = '15s'"))  # fail rather than hang if anything else holds on
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def _drop_stale_schemas(engine: Engine) -> None:
    cutoff = time.time() - STALE_SCHEMA_AGE_S
    with engine.connect() as connection:
        names = connection.execute(
            text("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, :prefix)"), {"prefix": SCHEMA_PREFIX}
        ).scalars()
        stale = [n for n in names if (stamp := n.split("_")[2]).isdigit() and int(stamp) < cutoff]
    for name in stale:
        drop_schema(engine, name)


@pytest.fixture(scope="session")
def postgres_url_factory(postgres_admin_engine: Engine) -> Iterator[Callable[..., str]]:
    """``make(migrated=True) -> url``: a new schema, migrated to head or empty, for fixtures wider than a test.
    Every schema it made is dropped at the end of the session."""
    from storage.migrate import upgrade

    admin_url = postgres_admin_engine.url.render_as_string(hide_password=False)
    made: list[str] = []

    def make(migrated: bool = True) -> str:
        schema = _schema_name()
        with postgres_admin_engine.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        made.append(schema)
        url = _schema_url(admin_url, schema)
        if migrated:
            upgrade(url)
        return url

    yield make
    for schema in made:
        drop_schema(postgres_admin_engine, schema)


@pytest.fixture(scope="module")
def postgres_url(postgres_url_factory: Callable[..., str], postgres_admin_engine: Engine) -> Iterator[str]:
    """A PostgreSQL schema of this test module alone, migrated to head: the URL sets ``search_path`` to it, so
    every connection made from it (this process or a child) sees only this schema. Dropped after the module.

    Module scope, so that module-scoped fixtures (a service started once per module) can use it; a test that
    needs a schema of its own calls ``postgres_url_factory()``."""
    url = postgres_url_factory()
    yield url
    drop_schema(postgres_admin_engine, make_url(url).query["application_name"])  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------------------
# SQLite


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file of this test alone (under tmp_path), migrated to head."""
    from storage.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'hra.db'}"
    upgrade(url)
    return url


# ----------------------------------------------------------------------------------------------------------------
# S3 (moto server)

_MOTO_SERVER = """
import os, sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()  # until the test run closes the pipe (or dies)
os._exit(0)  # no graceful shutdown needed: the test run is over
"""


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A real S3 HTTP endpoint (moto server) for this test session."""
    log_path = tmp_path_factory.mktemp("moto") / "server.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-c", _MOTO_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 60)
        line = process.stdout.readline().strip() if ready else ""
        if not line.isdigit():
            process.kill()
            process.wait()
            pytest.fail(f"the moto S3 server did not start: {line!r}; log: {log_path.read_text()[-2000:]}")
        port = int(line)
        yield {
            "endpoint": f"127.0.0.1:{port}",
            "url": f"http://127.0.0.1:{port}",
            "access_key": S3_ACCESS_KEY,
            "secret_key": S3_SECRET_KEY,
            "region": S3_REGION,
            "secure": False,
        }
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        log.close()


def _minio_client(s3: dict[str, Any]) -> Any:
    from minio import Minio

    return Minio(
        s3["endpoint"], access_key=s3["access_key"], secret_key=s3["secret_key"], secure=False, region=s3["region"]
    )


def remove_bucket(s3: dict[str, Any], bucket: str) -> None:
    """Delete every object of ``bucket`` and the bucket itself, if it exists."""
    from minio.deleteobjects import DeleteObject

    client = _minio_client(s3)
    if not client.bucket_exists(bucket):
        return
    names = [o.object_name for o in client.list_objects(bucket, recursive=True) if o.object_name]
    errors = list(client.remove_objects(bucket, (DeleteObject(n) for n in names)))
    assert not errors, errors
    client.remove_bucket(bucket)


@pytest.fixture
def s3_bucket(s3_endpoint: dict[str, Any]) -> Iterator[str]:
    """A bucket name of this test alone (the bucket is not created); removed with its objects afterwards."""
    bucket = f"hra-test-{uuid.uuid4().hex[:16]}"
    yield bucket
    remove_bucket(s3_endpoint, bucket)


@pytest.fixture
def s3_env(s3_endpoint: dict[str, Any], s3_bucket: str) -> dict[str, str]:
    """Environment variables that make ``app.settings`` (in this or a child process) use ``s3_bucket``."""
    return {
        "HRA_OBJECT_STORE": "s3",
        "HRA_S3_ENDPOINT": s3_endpoint["endpoint"],
        "HRA_S3_ACCESS_KEY": s3_endpoint["access_key"],
        "HRA_S3_SECRET_KEY": s3_endpoint["secret_key"],
        "HRA_S3_REGION": s3_endpoint["region"],
        "HRA_S3_SECURE": "false",
        "HRA_S3_BUCKET": s3_bucket,
    }


# ---- leaving the test process --------------------------------------------------------------------------------
# The whole suite in one process ends, after every test has passed and the report is printed, with a C++
# "terminate called without an active exception" abort during interpreter teardown (seen only in the full run,
# never in any of its parts run alone: the tests/app, tests/hra, tests/storage+workers+reliability, tests/web+docs
# and tests/e2e subsets each exit 0). It comes from native thread pools (CTranslate2's, under faster-whisper and
# the decoder) destroyed while the interpreter finalizes. Until that is isolated, the test process leaves with
# pytest's own exit status without running interpreter teardown: nothing is left to flush or clean up by then
# (fixtures, servers and temporary schemas are finalized before this hook).
_EXIT_STATUS: dict[str, int] = {}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS["status"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if "status" in _EXIT_STATUS and not hasattr(config, "workerinput"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS["status"])
