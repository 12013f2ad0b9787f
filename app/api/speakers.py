"""/v1/speakers: create, read, list, erase."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Query, Response, status

from app.api.deps import ML, AppSettings, DbSession, Store
from app.api.views import speaker_out, speakers_out
from app.error_handlers import error_responses
from app.errors import MalformedBody, ObjectStoreUnavailable, QuotaExceeded, SpeakerExists, SpeakerNotFound
from app.schemas import SpeakerCreate, SpeakerList, SpeakerOut
from app.security import CurrentTenant
from app.services import erasure
from app.services import speakers as speaker_service

router = APIRouter(prefix="/v1/speakers", tags=["speakers"])


@router.post(
    "", status_code=status.HTTP_201_CREATED, responses=error_responses(MalformedBody, SpeakerExists, QuotaExceeded)
)
def create_speaker(body: SpeakerCreate, tenant: CurrentTenant, db: DbSession, settings: AppSettings) -> SpeakerOut:
    speaker = speaker_service.create_speaker(db, settings, tenant.id, body.external_id, body.display_name)
    db.commit()
    return speaker_out(db, speaker)


@router.get("")
def list_speakers(
    tenant: CurrentTenant,
    db: DbSession,
    limit: int = Query(100, ge=1, le=500),
    # Bounded: a larger offset overflowed the database's integer (500 on SQLite and Postgres; found by Schemathesis).
    offset: int = Query(0, ge=0, le=2**31 - 1),
) -> SpeakerList:
    """The caller's speakers, oldest first."""
    speakers = speaker_service.list_speakers(db, tenant.id, limit, offset)
    return SpeakerList(items=speakers_out(db, speakers))


@router.get("/{speaker_id}", responses=error_responses(SpeakerNotFound))
def get_speaker(speaker_id: uuid.UUID, tenant: CurrentTenant, db: DbSession) -> SpeakerOut:
    return speaker_out(db, speaker_service.get_speaker(db, tenant.id, speaker_id))


@router.delete(
    "/{speaker_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(SpeakerNotFound, ObjectStoreUnavailable),
)
def delete_speaker(speaker_id: uuid.UUID, tenant: CurrentTenant, db: DbSession, store: Store, ml: ML) -> Response:
    """Erase the speaker: its audio, head artifacts and reports, and its rows (utterances, jobs, heads).

    The speaker is gone for every route from the first step (a tombstone; its active job is cancelled and no
    upload or job can be added), then its objects and rows are deleted. If this fails midway (503), the speaker
    stays gone and a repeated DELETE finishes the erasure.
    """
    speaker = speaker_service.get_speaker(db, tenant.id, speaker_id, include_deleted=True)
    erasure.forget_heads(ml, erasure.erase_speaker(db, store, speaker))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
