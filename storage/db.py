"""Engines and sessions.

``make_engine``/``make_session_factory`` build them from a URL; the service's composition root
(``app.container``) passes the URL from its settings. This package never reads the service's settings.

Transactions are committed or rolled back at the boundary (end of a request, end of a task) with
``session_scope()``; helpers below that boundary only ``flush()``.

SQLite (the embedded default, shared by the API and two worker processes) gets, on every new connection:
foreign keys ON (SQLite ignores ``ON DELETE CASCADE`` otherwise), WAL journal (readers do not block the writer),
``synchronous=NORMAL`` (safe with WAL) and a busy timeout (a writer waits for the lock instead of failing at once).
The driver's default transaction handling is kept: it opens the transaction at the first write, so a write never
has to upgrade an older read snapshot (which SQLite refuses without waiting). State changes that depend on a
previous read must therefore be conditional UPDATEs (``UPDATE ... WHERE state = :expected``), which is also what
makes them race-free on Postgres.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

SQLITE_BUSY_TIMEOUT_MS = 30_000


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_in_memory(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def _sqlite_on_connect(dbapi_connection: Any, _connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")  # persistent in the file; an in-memory database says "memory"
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for ``url`` with the settings this service relies on; ``kwargs`` go to ``create_engine``.

    SQLite: the pragmas above on every connection; the parent directory of a database file is created; an
    in-memory database is one connection shared by all threads (otherwise each thread sees its own, empty one).
    Postgres and others: ``pool_pre_ping`` so that a connection dropped by a database restart is replaced
    instead of failing the next request.
    """
    url = make_url(url)
    if url.get_backend_name() == "sqlite":
        connect_args: dict[str, Any] = dict(kwargs.pop("connect_args", {}))
        if _sqlite_in_memory(url):
            kwargs.setdefault("poolclass", StaticPool)
            connect_args.setdefault("check_same_thread", False)
        elif not url.query.get("uri"):
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)  # type: ignore[arg-type]
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine``. Objects stay readable after commit (``expire_on_commit=False``), so a
    response can be built from them once the transaction has ended."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose transaction is committed when the block ends normally and rolled back when it raises."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
