"""Engines, session factories and the transaction boundary."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from storage import db
from storage.db import make_engine, make_session_factory, session_scope
from storage.models import Tenant


class TestSqliteEngine:
    def test_every_connection_gets_the_pragmas(self, tmp_path: Path) -> None:
        engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
        try:
            with engine.connect() as connection:
                pragma = lambda name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
                assert pragma("foreign_keys") == 1
                assert pragma("journal_mode") == "wal"
                assert pragma("busy_timeout") == db.SQLITE_BUSY_TIMEOUT_MS
                assert pragma("synchronous") == 1  # NORMAL
        finally:
            engine.dispose()

    def test_creates_the_directory_of_the_database_file(self, tmp_path: Path) -> None:
        engine = make_engine(f"sqlite:///{tmp_path / 'var' / 'deeper' / 'hra.db'}")
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        finally:
            engine.dispose()
        assert (tmp_path / "var" / "deeper" / "hra.db").is_file()

    def test_in_memory_database_is_shared_by_threads(self) -> None:
        engine = make_engine("sqlite://")
        try:
            with engine.begin() as connection:
                connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
                connection.exec_driver_sql("INSERT INTO t VALUES (7)")
            seen: list[int] = []

            def read() -> None:
                with engine.connect() as connection:
                    seen.append(connection.exec_driver_sql("SELECT x FROM t").scalar())

            thread = threading.Thread(target=read)
            thread.start()
            thread.join()
            assert seen == [7]
        finally:
            engine.dispose()


def test_postgres_engine_pings_pooled_connections(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    try:
        assert engine.pool._pre_ping  # type: ignore[attr-defined]
        with engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


class TestSessionScope:
    def test_commits_when_the_block_ends(self, engine) -> None:  # type: ignore[no-untyped-def]
        factory = make_session_factory(engine)
        with session_scope(factory) as session:
            tenant = Tenant(name="committed")
            session.add(tenant)
        assert tenant.name == "committed"  # still readable: expire_on_commit=False
        with factory() as session:
            assert session.scalar(select(func.count()).select_from(Tenant)) == 1

    def test_rolls_back_when_the_block_raises(self, engine) -> None:  # type: ignore[no-untyped-def]
        factory = make_session_factory(engine)
        with pytest.raises(RuntimeError, match="boom"):
            with session_scope(factory) as session:
                session.add(Tenant(name="rolled-back"))
                session.flush()
                raise RuntimeError("boom")
        with factory() as session:
            assert session.scalar(select(func.count()).select_from(Tenant)) == 0


def test_sqlite_writers_in_several_engines_wait_for_each_other(sqlite_url: str) -> None:
    """The embedded default: the API and two workers are separate processes writing one SQLite file."""
    engines = [make_engine(sqlite_url) for _ in range(3)]
    errors: list[BaseException] = []

    def write(engine_index: int) -> None:
        factory = make_session_factory(engines[engine_index])
        try:
            for i in range(15):
                with session_scope(factory) as session:
                    session.add(Tenant(name=f"writer-{engine_index}-{i}"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(engines))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        with session_scope(make_session_factory(engines[0])) as session:
            assert session.scalar(select(func.count()).select_from(Tenant)) == 45
    finally:
        for engine in engines:
            engine.dispose()
