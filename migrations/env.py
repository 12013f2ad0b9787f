"""Alembic environment.

Where the database comes from, first match wins:
1. ``config.attributes["connection"]``: an open SQLAlchemy ``Connection`` (``storage.migrate`` passes one);
2. ``alembic -x url=...`` on the command line;
3. ``sqlalchemy.url`` in the ini file (left empty in ours);
4. the settings: ``app.settings.get_settings().database_url`` (``HRA_DATABASE_URL``).

Engines are made by ``storage.db.make_engine`` (SQLite pragmas, pool_pre_ping). On SQLite, migrations use batch
mode (``render_as_batch``), and foreign keys are switched off while they run: a batch migration copies a table,
drops the old one and renames the copy, and with foreign keys on, dropping the old table would fire its
``ON DELETE`` actions on the referencing rows. ``PRAGMA foreign_key_check`` must pass before they are switched
back on.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from storage.db import make_engine
from storage.models import Base, UTCDateTime

config = context.config

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _database_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from app.settings import get_settings

    return get_settings().database_url


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Autogenerate writes plain SQLAlchemy types into migrations, never the project's Python types: a
    migration must keep working when the models change later."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _context_options(dialect_name: str) -> dict[str, Any]:
    return {
        "target_metadata": target_metadata,
        "compare_type": True,
        "render_as_batch": dialect_name == "sqlite",
        "render_item": _render_item,
    }


def run_migrations_offline() -> None:
    """``alembic upgrade head --sql``: print the SQL instead of running it."""
    url = _database_url()
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **_context_options(make_url(url).get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: Connection) -> None:
    # Only a connection with no transaction open can change the pragma (SQLite ignores it inside one); a caller
    # who passes a connection inside its own transaction keeps its settings and commits itself.
    switch_foreign_keys = connection.dialect.name == "sqlite" and not connection.in_transaction()
    if switch_foreign_keys:
        connection.exec_driver_sql("PRAGMA foreign_keys = OFF")
        connection.commit()
    try:
        context.configure(connection=connection, **_context_options(connection.dialect.name))
        with context.begin_transaction():
            context.run_migrations()
        if switch_foreign_keys:
            violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            connection.commit()
            if violations:
                raise RuntimeError(f"the migration left rows that break foreign keys: {violations[:10]}")
    finally:
        if switch_foreign_keys:
            connection.rollback()
            connection.exec_driver_sql("PRAGMA foreign_keys = ON")
            connection.commit()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    engine = make_engine(_database_url(), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            _run_on(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
