"""Fixtures of the storage tests: each database test runs on SQLite and on PostgreSQL.

Creating and migrating a Postgres schema costs ~15 DDL statements (0.2-0.5 s on a busy server); deleting the
rows of a handful of small tables costs ~10 ms. So the many small tests here share one migrated database per
module and backend, emptied before each test; the migration tests that need a database of their own still
take ``postgres_url``/``sqlite_url`` (or an empty one) directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from storage.db import make_engine, make_session_factory
from storage.migrate import upgrade
from storage.models import Base


@pytest.fixture(scope="module")
def _module_postgres(postgres_url_factory: Callable[..., str]) -> Iterator[tuple[str, Engine]]:
    url = postgres_url_factory()
    engine = make_engine(url)
    yield url, engine
    engine.dispose()


@pytest.fixture(scope="module")
def _module_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Engine]]:
    path: Path = tmp_path_factory.mktemp("sqlite") / "hra.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = make_engine(url)
    yield url, engine
    engine.dispose()


def _delete_all_rows(engine: Engine) -> None:
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """A database migrated to head and holding no rows, on each backend in turn."""
    url, engine = request.getfixturevalue(f"_module_{request.param}")
    _delete_all_rows(engine)
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with make_session_factory(engine)() as session:
        yield session
        session.rollback()
