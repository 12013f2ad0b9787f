"""API keys and the tenant they resolve to.

A key is random (``hra_`` + 43 URL-safe characters), shown once at creation and stored only as its sha256, with
its first 12 characters (``hra_`` + 8 random ones) as a prefix that identifies it in listings (``hra keys list``)
and for revocation (``hra keys revoke PREFIX``); a revoked key is refused like an unknown one (401).
Every request carries ``Authorization: Bearer <key>``; ``CurrentTenant`` resolves it. The key configured as
``HRA_BOOTSTRAP_API_KEY`` is accepted for the tenant ``default``: on first use the tenant is created and the key
stored (hashed) like any other; once revoked it stays refused. A key's ``last_used_at`` is refreshed at most once
per ``LAST_USED_RESOLUTION_S`` (one write per key per hour, not one per request).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
import logging
import os
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from app.api.deps import DbSession, get_settings_dep
from app.errors import Unauthorized
from app.settings import Settings
from storage.models import ApiKey, Tenant, utcnow

logger = logging.getLogger(__name__)

KEY_PREFIX = "hra_"
SHOWN_PREFIX_CHARS = 12  # "hra_" + 8 random characters (48 bits): enough to tell a tenant's keys apart
DEFAULT_TENANT = "default"
INVALID_KEY_MESSAGE = "invalid or revoked API key"
LAST_USED_RESOLUTION_S = 3600.0
BOOTSTRAP_LABEL = "bootstrap"


def generate_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def get_or_create_tenant(db: Session, name: str) -> Tenant:
    tenant = db.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(name=name)
        db.add(tenant)
        db.flush()
    return tenant


def shown_prefix(key: str) -> str:
    return key[:SHOWN_PREFIX_CHARS]


def store_api_key(db: Session, tenant: Tenant, key: str, label: str | None = None) -> ApiKey:
    api_key = ApiKey(tenant_id=tenant.id, key_hash=hash_api_key(key), prefix=shown_prefix(key), label=label)
    db.add(api_key)
    db.flush()
    return api_key


def create_api_key(db: Session, tenant_name: str, label: str | None = None) -> tuple[Tenant, str]:
    """A new key for ``tenant_name`` (created if missing); the caller commits and shows the key once."""
    tenant = get_or_create_tenant(db, tenant_name)
    key = generate_api_key()
    store_api_key(db, tenant, key, label)
    return tenant, key


def find_key_row(db: Session, key: str, *, include_revoked: bool = False) -> ApiKey | None:
    """The stored row of a key given in full (its hash), revoked ones only when asked."""
    query = select(ApiKey).where(ApiKey.key_hash == hash_api_key(key))
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return db.scalar(query)


def _lookup(db: Session, key: str) -> Tenant | None:
    row = find_key_row(db, key)
    if row is None:
        return None
    _touch(db, row)
    return db.get(Tenant, row.tenant_id)


def _touch(db: Session, row: ApiKey) -> None:
    """Record the key's use, at most once per ``LAST_USED_RESOLUTION_S``; never fails the request."""
    now = utcnow()
    if row.last_used_at is not None and now - row.last_used_at < timedelta(seconds=LAST_USED_RESOLUTION_S):
        return
    try:
        db.execute(
            update(ApiKey)
            .where(
                ApiKey.id == row.id,
                or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - timedelta(seconds=LAST_USED_RESOLUTION_S)),
            )
            .values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )
        db.commit()
        row.last_used_at = now
    except OperationalError as exc:  # a busy or unreachable database: the key's use is simply not recorded
        db.rollback()
        logger.debug("could not record the use of key %s: %s", row.prefix, exc)


def authenticate(db: Session, settings: Settings, key: str) -> Tenant | None:
    """The tenant of ``key``, or ``None``. May commit: the first use of the bootstrap key stores it, and a key's
    first use in an hour records it (``last_used_at``)."""
    tenant = _lookup(db, key)
    if tenant is not None:
        return tenant
    bootstrap = settings.bootstrap_api_key
    if not bootstrap or not hmac.compare_digest(key.encode(), bootstrap.encode()):
        return None
    try:
        tenant = get_or_create_tenant(db, DEFAULT_TENANT)
        store_api_key(db, tenant, key, BOOTSTRAP_LABEL)
        db.commit()
    except IntegrityError:  # a concurrent first request stored it (or the tenant) first, or it was revoked
        db.rollback()
        tenant = _lookup(db, key)
    return tenant


# ---- administration (``hra keys list|revoke``) ---------------------------------------------------------------


class KeyNotFound(LookupError):
    """No stored key matches, or several do (the message says which)."""


def list_api_keys(db: Session, tenant_name: str | None = None) -> list[tuple[ApiKey, str]]:
    """Every stored key (revoked too) with its tenant's name, by tenant then creation time."""
    query = select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id)
    if tenant_name is not None:
        query = query.where(Tenant.name == tenant_name)
    return [(row, name) for row, name in db.execute(query.order_by(Tenant.name, ApiKey.created_at, ApiKey.id)).all()]


def find_api_key(db: Session, ref: str) -> ApiKey:
    """The key that ``ref`` names: its id, its prefix as listed (``hra_AbCd1234``, with or without ``hra_`` or a
    trailing ``…``; at least 4 characters of it), or the whole key. ``KeyNotFound`` when none or several match."""
    ref = ref.strip().rstrip("…").rstrip(".")
    try:
        row = db.get(ApiKey, uuid.UUID(ref))
    except ValueError:
        row = None
    if row is not None:
        return row
    if len(ref) > SHOWN_PREFIX_CHARS and ref.startswith(KEY_PREFIX):  # a whole key
        row = find_key_row(db, ref, include_revoked=True)
        if row is None:
            raise KeyNotFound("no stored key is this key")
        return row
    prefix = ref if ref.startswith(KEY_PREFIX) else KEY_PREFIX + ref
    if len(prefix) < len(KEY_PREFIX) + 4:
        raise KeyNotFound("give at least 4 characters of the key after 'hra_' (or its id)")
    rows = list(db.scalars(select(ApiKey).where(ApiKey.prefix.startswith(prefix, autoescape=True))))
    if not rows:
        raise KeyNotFound(f"no key starts with {prefix!r}")
    if len(rows) > 1:
        raise KeyNotFound(f"{len(rows)} keys start with {prefix!r}: give more characters, or the id: "
                          + ", ".join(str(r.id) for r in rows))
    return rows[0]


# ---- the key of ``hra run`` ------------------------------------------------------------------------------------

RUN_KEY_LABEL = "hra run"
RUN_KEY_FILE = "api-key"  # under settings.var_dir


@dataclass(frozen=True)
class RunKey:
    key: str
    minted: bool  # new this start (print it); else the one kept in the file is still valid
    revoked_prefix: str | None = None  # the previous key, revoked by --rotate-key


def write_secret_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600 from creation: never briefly wider), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)  # whatever the umask did
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_secret_file(path: Path) -> str | None:
    """The file's text, or ``None`` if it does not exist; tightens a file others can read to 0600 (with a warning)."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        return None
    if mode & 0o077:
        logger.warning("%s was readable by others (mode %o); it is now 0600", path, mode)
        os.chmod(path, 0o600)
    return path.read_text().strip() or None


def ensure_run_key(db: Session, path: Path, rotate: bool = False) -> RunKey:
    """The API key of ``hra run``, the same across restarts.

    The database keeps only its hash, like every key; its plaintext is kept in ``path`` (mode 0600, beside the
    embedded database, which is no better protected), so that it is printed once, when minted, and not into the
    log of every start. A key whose file is gone, or which was revoked (``hra keys revoke``), is replaced by a new
    one; ``rotate`` replaces it and revokes the old one. Commits.
    """
    existing = read_secret_file(path)
    row = find_key_row(db, existing) if existing else None
    if row is not None and not rotate:
        return RunKey(existing, minted=False)  # type: ignore[arg-type]
    tenant = get_or_create_tenant(db, DEFAULT_TENANT)
    key = generate_api_key()
    store_api_key(db, tenant, key, RUN_KEY_LABEL)
    revoked = None
    if row is not None and revoke_api_key(db, row):
        revoked = row.prefix
    write_secret_file(path, key + "\n")  # before the commit: a key in the database that nobody has is worse
    db.commit()
    return RunKey(key, minted=True, revoked_prefix=revoked)


def revoke_api_key(db: Session, row: ApiKey) -> bool:
    """Revoke the key (at once: the next request with it is a 401); ``False`` if it already was. Flushes."""
    result = db.execute(
        update(ApiKey)
        .where(ApiKey.id == row.id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    db.flush()
    db.refresh(row)
    return result.rowcount == 1


_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`.")


def get_current_tenant(
    db: DbSession,
    settings: Annotated[Settings, Depends(get_settings_dep)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Tenant:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized()
    tenant = authenticate(db, settings, credentials.credentials)
    if tenant is None:
        raise Unauthorized(INVALID_KEY_MESSAGE)
    return tenant


CurrentTenant = Annotated[Tenant, Depends(get_current_tenant)]
