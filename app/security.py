"""API keys and the tenant they resolve to.

A key is random (``hra_`` + 43 URL-safe characters), shown once at creation and stored only as its sha256.
Every request carries ``Authorization: Bearer <key>``; ``CurrentTenant`` resolves it. The key configured as
``HRA_BOOTSTRAP_API_KEY`` is accepted for the tenant ``default``: on first use the tenant is created and the key
stored (hashed) like any other.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.api.deps import DbSession, get_settings_dep
from app.errors import Unauthorized
from app.settings import Settings
from storage.models import ApiKey, Tenant

KEY_PREFIX = "hra_"
DEFAULT_TENANT = "default"


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


def store_api_key(db: Session, tenant: Tenant, key: str) -> ApiKey:
    api_key = ApiKey(tenant_id=tenant.id, key_hash=hash_api_key(key), prefix=key[:12])
    db.add(api_key)
    db.flush()
    return api_key


def create_api_key(db: Session, tenant_name: str) -> tuple[Tenant, str]:
    """A new key for ``tenant_name`` (created if missing); the caller commits and shows the key once."""
    tenant = get_or_create_tenant(db, tenant_name)
    key = generate_api_key()
    store_api_key(db, tenant, key)
    return tenant, key


def _lookup(db: Session, key: str) -> Tenant | None:
    return db.scalar(
        select(Tenant)
        .join(ApiKey, ApiKey.tenant_id == Tenant.id)
        .where(ApiKey.key_hash == hash_api_key(key), ApiKey.revoked_at.is_(None))
    )


def authenticate(db: Session, settings: Settings, key: str) -> Tenant | None:
    """The tenant of ``key``, or ``None``. May commit: the first use of the bootstrap key stores it."""
    tenant = _lookup(db, key)
    if tenant is not None:
        return tenant
    bootstrap = settings.bootstrap_api_key
    if not bootstrap or not hmac.compare_digest(key.encode(), bootstrap.encode()):
        return None
    try:
        tenant = get_or_create_tenant(db, DEFAULT_TENANT)
        store_api_key(db, tenant, key)
        db.commit()
    except IntegrityError:  # a concurrent first request stored it (or the tenant) first
        db.rollback()
        tenant = _lookup(db, key)
    return tenant


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
        raise Unauthorized("invalid or revoked API key")
    return tenant


CurrentTenant = Annotated[Tenant, Depends(get_current_tenant)]
