"""/v1/speakers: create, read, list, erase."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Query, Response, status

from app.api.deps import DbSession, Store
from app.api.views import speaker_out, speakers_out
from app.errors import ObjectStoreUnavailable, SpeakerExists, SpeakerNotFound, error_responses
from app.schemas import SpeakerCreate, SpeakerList, SpeakerOut
from app.security import CurrentTenant
from app.services import speakers as speaker_service

router = APIRouter(prefix="/v1/speakers", tags=["speakers"])


@router.post("", status_code=status.HTTP_201_CREATED, responses=error_responses(SpeakerExists))
def create_speaker(body: SpeakerCreate, tenant: CurrentTenant, db: DbSession) -> SpeakerOut:
    speaker = speaker_service.create_speaker(db, tenant.id, body.external_id, body.display_name)
    db.commit()
    return speaker_out(db, speaker)


@router.get("")
def list_speakers(
    tenant: CurrentTenant,
    db: DbSession,
    limit: int = Query(100, ge=1, le=500),
    offset: int = Query(0, ge=0),
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
def delete_speaker(speaker_id: uuid.UUID, tenant: CurrentTenant, db: DbSession, store: Store) -> Response:
    """Erase the speaker: its audio, head artifacts and reports, then its rows (utterances, jobs, heads)."""
    speaker = speaker_service.get_speaker(db, tenant.id, speaker_id)
    speaker_service.delete_speaker(db, store, speaker)
    db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
