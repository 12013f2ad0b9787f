"""An operator's manual rollback: promote an earlier head version or retire the one in service, with who and why.

The status writes are ``app.services.jobs``' (``promote_version``, ``retire_version``); each is recorded as a head
event (listed at ``GET /v1/speakers/{id}/head-events``) with the API key that asked and the ``reason`` it gave.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from sqlalchemy import select

from app import errors
from app.api.deps import DbSession
from app.api.views import heads_out
from app.error_handlers import error_responses
from app.middleware import bearer_key
from app.schemas import HeadChangeIn, HeadChangeOut, HeadEventList, HeadEventOut
from app.security import CurrentTenant, hash_api_key
from app.services import heads as head_service
from app.services import jobs as job_service
from app.services import speakers as speaker_service
from storage.models import ApiKey, Tenant

router = APIRouter(tags=["heads"])

_CHANGE_ERRORS = error_responses(errors.HeadNotFound, errors.HeadStatusConflict, errors.InvalidRequest)


def actor_of(request: Request, db: DbSession, tenant: Tenant) -> job_service.Actor:
    """The key of this request (already authenticated) as the actor recorded with a change."""
    key = bearer_key(request.headers.get("authorization")) or ""
    row = db.scalar(select(ApiKey).where(ApiKey.key_hash == hash_api_key(key), ApiKey.tenant_id == tenant.id))
    prefix = row.prefix if row is not None else key[:8]
    label = f"tenant {tenant.name}, key {prefix}…"
    if row is not None and getattr(row, "label", None):
        label += f" ({row.label})"
    return job_service.Actor(tenant.id, row.id if row is not None else None, label)


@router.post("/v1/heads/{head_id}/promote", responses=_CHANGE_ERRORS)
def promote_head(
    head_id: uuid.UUID, body: HeadChangeIn, request: Request, tenant: CurrentTenant, db: DbSession
) -> HeadChangeOut:
    """Put this version in service: roll back to an earlier (``retired``) version, or override the gate for a
    ``rejected`` one. The version in service is retired. Recorded with who asked and ``reason``. A candidate
    (its job is still deciding) or the version already in service answers 409 ``head_status_conflict``."""
    head = head_service.get_head(db, tenant.id, head_id)
    event = job_service.promote_version(db, head, actor_of(request, db, tenant), body.reason)
    db.commit()
    return HeadChangeOut(head=heads_out(db, [head])[0], event=HeadEventOut.model_validate(event))


@router.post("/v1/heads/{head_id}/retire", responses=_CHANGE_ERRORS)
def retire_head(
    head_id: uuid.UUID, body: HeadChangeIn, request: Request, tenant: CurrentTenant, db: DbSession
) -> HeadChangeOut:
    """Take the version in service out of service (the speaker is served by the base model until another
    version is promoted). Recorded with who asked and ``reason``; a version not in service answers 409."""
    head = head_service.get_head(db, tenant.id, head_id)
    event = job_service.retire_version(db, head, actor_of(request, db, tenant), body.reason)
    db.commit()
    return HeadChangeOut(head=heads_out(db, [head])[0], event=HeadEventOut.model_validate(event))


@router.get("/v1/speakers/{speaker_id}/head-events", responses=error_responses(errors.SpeakerNotFound))
def list_head_events(speaker_id: uuid.UUID, tenant: CurrentTenant, db: DbSession) -> HeadEventList:
    """Manual promotions and retirements of the speaker's head versions, newest first: who, when, why."""
    speaker = speaker_service.get_speaker(db, tenant.id, speaker_id)
    events = job_service.list_head_events(db, speaker.id)
    return HeadEventList(items=[HeadEventOut.model_validate(e) for e in events])
