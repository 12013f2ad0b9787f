"""Schema migrations from Python: what ``hra db upgrade``, the start commands and the tests call.

Builds the Alembic configuration in code (the ``migrations`` package is found next to ``storage``, so no
``alembic.ini`` and no particular working directory is needed) and hands ``migrations/env.py`` an open
connection from ``storage.db.make_engine``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from storage.db import make_engine
from storage.models import Base


def migrations_dir() -> Path:
    return Path(importlib.import_module("migrations").__file__).resolve().parent  # type: ignore[arg-type]


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` for our migrations; with ``connection``, env.py runs on it."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["configure_logger"] = False
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@contextmanager
def _connect(url: str | URL) -> Iterator[Connection]:
    engine = make_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            yield connection
            connection.commit()
    finally:
        engine.dispose()


def upgrade(url: str | URL, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision``."""
    with _connect(url) as connection:
        command.upgrade(alembic_config(connection), revision)


def downgrade(url: str | URL, revision: str = "base") -> None:
    """Migrate down to ``revision`` (``"base"``: drop every table the migrations made)."""
    with _connect(url) as connection:
        command.downgrade(alembic_config(connection), revision)


def current_revision(url: str | URL) -> str | None:
    """The revision the database is at, ``None`` if it was never migrated."""
    with _connect(url) as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    """The newest revision in ``migrations/versions``."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


def schema_diff(url: str | URL, metadata: MetaData | None = None) -> list[Any]:
    """What autogenerate would change to make the database match ``metadata`` (default: ``storage.models``);
    ``[]`` when they agree.

    The same comparison as ``alembic check``, with the options env.py uses (``compare_type=True``).
    """
    with _connect(url) as connection:
        context = MigrationContext.configure(
            connection,
            opts={"compare_type": True, "render_as_batch": connection.dialect.name == "sqlite"},
        )
        return list(compare_metadata(context, metadata if metadata is not None else Base.metadata))


def is_up_to_date(url: str | URL) -> bool:
    """True when the database is at the head revision (for readiness checks and the start commands)."""
    return current_revision(url) == head_revision()
