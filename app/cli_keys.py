"""``hra keys create|list|revoke`` and the key of ``hra run`` (the admin side of ``app.security``).

    hra keys create --tenant NAME [--label L]   a new key, printed once (as the last line)
    hra keys list [--tenant NAME]               every key: id, tenant, prefix, label, created, last used, revoked
    hra keys revoke PREFIX|ID                   refuse the key from now on (401); the prefix as listed, or the id
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy.orm import Session

from app.settings import Settings


@contextmanager
def admin_session(settings: Settings) -> Iterator[Session]:
    from storage.db import make_engine, make_session_factory

    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as db:
            yield db
    finally:
        engine.dispose()


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    from app.security import create_api_key

    with admin_session(settings) as db:
        tenant, key = create_api_key(db, args.tenant, args.label)
        db.commit()
        print(f"new API key for tenant {tenant.name!r} ({tenant.id}); it is shown only once:")
    print(key)
    return 0


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    from app.security import list_api_keys

    with admin_session(settings) as db:
        rows = list_api_keys(db, args.tenant)
    table = [("ID", "TENANT", "PREFIX", "LABEL", "CREATED (UTC)", "LAST USED (±1 h)", "REVOKED")]
    table += [
        (str(k.id), tenant, f"{k.prefix}…", k.label or "-", _when(k.created_at), _when(k.last_used_at), _when(k.revoked_at))
        for k, tenant in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    if not rows:
        print("(no keys)")
    return 0


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from app.security import KeyNotFound, find_api_key, revoke_api_key
    from storage.models import Tenant

    with admin_session(settings) as db:
        try:
            row = find_api_key(db, args.key)
        except KeyNotFound as exc:
            print(f"hra keys revoke: {exc}", file=sys.stderr)
            return 1
        tenant = db.get(Tenant, row.tenant_id)
        name = tenant.name if tenant is not None else "?"
        if not revoke_api_key(db, row):
            print(f"key {row.prefix}… ({row.id}, tenant {name!r}) was already revoked at {_when(row.revoked_at)}")
            return 0
        db.commit()
        print(f"revoked key {row.prefix}… ({row.id}, tenant {name!r}): requests with it now get 401")
    return 0


def add_key_commands(keys_sub: argparse._SubParsersAction) -> None:
    create = keys_sub.add_parser("create", help="create a key (printed once, as the last line)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--label", default=None, help="what the key is for (shown by `hra keys list`)")
    create.set_defaults(func=cmd_keys_create)
    listing = keys_sub.add_parser("list", help="list keys: id, tenant, prefix, label, created, last used, revoked")
    listing.add_argument("--tenant", default=None, help="only this tenant's keys")
    listing.set_defaults(func=cmd_keys_list)
    revoke = keys_sub.add_parser("revoke", help="revoke a key (its prefix as listed, e.g. hra_AbCd1234, or its id)")
    revoke.add_argument("key", metavar="PREFIX|ID")
    revoke.set_defaults(func=cmd_keys_revoke)
