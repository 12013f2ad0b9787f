"""``hra tenants``: a tenant's quotas and usage (admin commands on this machine's database).

    hra tenants show TENANT                               limits (override or default) and usage, as JSON
    hra tenants quota TENANT --speakers 50 --stored-bytes 2GiB ...
                                                          override quotas for one tenant ("default" clears one,
                                                          --reset clears them all); prints what ``show`` prints
"""

from __future__ import annotations

import argparse
import json
import re

from app.settings import Settings

_UNITS = {
    "": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
DEFAULT = "default"

# (option, quota name, parser, help)
_OPTIONS = (
    ("--speakers", "speakers", "count", "speakers of the tenant"),
    ("--utterances-per-speaker", "utterances_per_speaker", "count", "utterances of one speaker"),
    ("--stored-bytes", "stored_bytes", "bytes", "stored audio and heads, in bytes (suffixes: KB MB GB KiB MiB GiB)"),
    ("--active-jobs", "active_jobs", "count", "jobs queued, training or evaluating at once"),
    ("--train-seconds-per-day", "train_seconds_per_day", "seconds", "sum of training budgets in 24 h, seconds"),
)


def _count(value: str) -> int | None:
    if value.strip().lower() == DEFAULT:
        return None
    number = int(value)
    if number < 0:
        raise ValueError
    return number


def _bytes(value: str) -> int | None:
    if value.strip().lower() == DEFAULT:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _seconds(value: str) -> float | None:
    if value.strip().lower() == DEFAULT:
        return None
    number = float(value)
    if not number >= 0 or number == float("inf"):
        raise ValueError
    return number


_PARSERS = {"count": _count, "bytes": _bytes, "seconds": _seconds}


def _typed(kind: str):
    def parse(value: str):
        try:
            return ("set", _PARSERS[kind](value))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a non-negative {kind} or 'default', not {value!r}") from None

    parse.__name__ = kind  # argparse names the type in its messages
    return parse


def _with_tenant(settings: Settings, name: str, action) -> int:
    from sqlalchemy import select

    from storage.db import make_engine, make_session_factory
    from storage.models import Tenant

    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as db:
            tenant = db.scalar(select(Tenant).where(Tenant.name == name))
            if tenant is None:
                print(f"no tenant named {name!r} (a tenant is made with its first key: hra keys create --tenant NAME)")
                return 2
            out = action(db, tenant)
            db.commit()
    finally:
        engine.dispose()
    print(json.dumps(out, indent=2))
    return 0


def cmd_tenants_show(args: argparse.Namespace, settings: Settings) -> int:
    from app.services import quotas

    return _with_tenant(settings, args.tenant, lambda db, tenant: quotas.describe(db, settings, tenant))


def cmd_tenants_quota(args: argparse.Namespace, settings: Settings) -> int:
    from app.services import quotas

    changes: dict[str, int | float | None] = {}
    if args.reset:
        changes.update({name: None for name in quotas.QUOTA_NAMES})
    for _option, name, _kind, _help in _OPTIONS:
        value = getattr(args, name)
        if value is not None:
            changes[name] = value[1]
    if not changes:
        print("nothing to change: give at least one quota option (or --reset); see hra tenants quota --help")
        return 2

    def apply(db, tenant):
        quotas.set_overrides(db, tenant, changes)
        return quotas.describe(db, settings, tenant)

    return _with_tenant(settings, args.tenant, apply)


def add_tenant_commands(sub: argparse._SubParsersAction) -> None:
    tenants = sub.add_parser("tenants", help="tenants' quotas and usage")
    tenants_sub = tenants.add_subparsers(dest="tenants_command", required=True)

    show = tenants_sub.add_parser("show", help="a tenant's quotas (limit, override or default) and usage, as JSON")
    show.add_argument("tenant")
    show.set_defaults(func=cmd_tenants_show)

    quota = tenants_sub.add_parser(
        "quota", help="override a tenant's quotas ('default' clears one override, --reset all of them)"
    )
    quota.add_argument("tenant")
    for option, name, kind, help_text in _OPTIONS:
        quota.add_argument(option, dest=name, type=_typed(kind), default=None, metavar="N|default", help=help_text)
    quota.add_argument("--reset", action="store_true", help="clear every override first (back to the defaults)")
    quota.set_defaults(func=cmd_tenants_quota)
