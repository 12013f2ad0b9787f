"""The migrations make exactly the schema the models describe, on SQLite and on PostgreSQL, and undo it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Column, Integer, MetaData, String, inspect, text

from storage import migrate
from storage.db import make_engine
from storage.models import Base

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_TABLES = set(Base.metadata.tables)


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with no tables at all."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    factory: Callable[..., str] = request.getfixturevalue("postgres_url_factory")
    return factory(migrated=False)


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_creates_every_table_and_downgrade_removes_them(empty_database_url: str) -> None:
    url = empty_database_url
    assert migrate.current_revision(url) is None

    migrate.upgrade(url)
    assert migrate.current_revision(url) == migrate.head_revision()
    assert migrate.is_up_to_date(url)
    assert _tables(url) == MODEL_TABLES | {"alembic_version"}

    engine = make_engine(url)
    try:
        with engine.begin() as connection:  # data in the tables does not stop the downgrade
            connection.execute(
                text("INSERT INTO tenants (id, name, created_at) VALUES (:id, 'x', CURRENT_TIMESTAMP)"),
                {"id": "0" * 32 if url.startswith("sqlite") else "00000000-0000-0000-0000-000000000000"},
            )
    finally:
        engine.dispose()

    migrate.downgrade(url, "base")
    assert migrate.current_revision(url) is None
    assert _tables(url) == {"alembic_version"}

    migrate.upgrade(url)  # and the way back up still works
    assert _tables(url) == MODEL_TABLES | {"alembic_version"}
    assert migrate.schema_diff(url) == []


def test_upgrade_of_an_up_to_date_database_changes_nothing(database_url: str) -> None:
    migrate.upgrade(database_url)
    assert migrate.current_revision(database_url) == migrate.head_revision()
    assert migrate.schema_diff(database_url) == []


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    """What ``alembic check`` does: autogenerate (compare_type=True) finds nothing to change."""
    diff = migrate.schema_diff(database_url)
    assert diff == [], f"models and migrations disagree; write a migration for: {diff}"


def test_schema_comparison_notices_a_difference(database_url: str) -> None:
    """Guards the test above against comparing nothing: a model change must show up."""
    changed = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["speakers"].append_column(Column("age", Integer, nullable=True))
    changed.tables["heads"].c.parameters.type = String(32)
    diff = migrate.schema_diff(database_url, changed)
    kinds = {entry[0] if isinstance(entry, tuple) else entry[0][0] for entry in diff}
    assert "add_column" in kinds
    assert "modify_type" in kinds


def _names(url: str) -> dict[str, set[str]]:
    """Every constraint and index name in the database, per table."""
    engine = make_engine(url)
    try:
        inspector = inspect(engine)
        names: dict[str, set[str]] = {}
        for table in MODEL_TABLES:
            found = {inspector.get_pk_constraint(table)["name"]}
            found |= {fk["name"] for fk in inspector.get_foreign_keys(table)}
            found |= {uq["name"] for uq in inspector.get_unique_constraints(table)}
            found |= {ck["name"] for ck in inspector.get_check_constraints(table)}
            found |= {ix["name"] for ix in inspector.get_indexes(table) if not ix.get("duplicates_constraint")}
            names[table] = found
        return names
    finally:
        engine.dispose()


def _model_names() -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    for table in Base.metadata.sorted_tables:
        constraints = {c.name for c in table.constraints} | {ix.name for ix in table.indexes}
        names[table.name] = constraints  # type: ignore[assignment]
    return names


def test_constraint_and_index_names_follow_the_naming_convention(database_url: str) -> None:
    expected = _model_names()
    assert _names(database_url) == expected
    assert all(name.startswith(("pk_", "fk_", "uq_", "ck_", "ix_")) for names in expected.values() for name in names)
    assert "uq_adaptation_jobs_active_speaker_id" in expected["adaptation_jobs"]
    assert "uq_heads_speaker_id_version" in expected["heads"]


def test_sqlite_migration_on_a_caller_connection_restores_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'fk.db'}")
    try:
        with engine.connect() as connection:
            command.upgrade(migrate.alembic_config(connection), "head")
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            version = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
            assert version == migrate.head_revision()
    finally:
        engine.dispose()


def test_alembic_command_line_works_from_the_repository_root(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HRA_")}
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"url={url}", "upgrade", "head"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Running upgrade  -> 0001" in result.stderr
    assert migrate.current_revision(url) == migrate.head_revision()
    assert migrate.schema_diff(url) == []
