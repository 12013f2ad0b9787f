"""/v1/speakers/{id}/utterances: enrollment audio + transcript."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile, status

from app import errors
from app.api.deps import ML, AppSettings, DbSession, Store
from app.api.uploads import read_upload
from app.schemas import UtteranceList, UtteranceOut
from app.security import CurrentTenant
from app.services import speakers as speaker_service
from app.services import utterances as utterance_service

router = APIRouter(prefix="/v1/speakers/{speaker_id}/utterances", tags=["utterances"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=errors.error_responses(
        errors.SpeakerNotFound,
        errors.PayloadTooLarge,
        errors.EmptyTranscript,
        errors.InvalidSplit,
        errors.InvalidAudio,
        errors.EmptyAudio,
        errors.AudioTooShort,
        errors.AudioTooLong,
        errors.ObjectStoreUnavailable,
    ),
)
def upload_utterance(
    speaker_id: uuid.UUID,
    audio: Annotated[UploadFile, File(description="WAV, FLAC, OGG or MP3; any rate and channel count.")],
    tenant: CurrentTenant,
    db: DbSession,
    store: Store,
    ml: ML,
    settings: AppSettings,
    transcript: Annotated[str | None, Form(description="What is said in the audio.")] = None,
    split: Annotated[
        str | None, Form(description="'train' or 'eval'; by default a stable hash holds out one in four.")
    ] = None,
) -> UtteranceOut:
    """Store one enrollment utterance, normalized to 16 kHz mono FLAC under a server-generated key."""
    speaker = speaker_service.get_speaker(db, tenant.id, speaker_id)
    utterance_service.clean_transcript(transcript)  # cheap checks before reading and decoding the audio
    utterance_service.parse_split(split)
    data = read_upload(audio, settings.max_upload_bytes)
    utterance = utterance_service.add_utterance(db, store, ml, settings, speaker, data, transcript, split)
    try:
        db.commit()
    except BaseException:
        store.delete(utterance.object_key)
        raise
    return UtteranceOut.model_validate(utterance)


@router.get("", responses=errors.error_responses(errors.SpeakerNotFound))
def list_utterances(speaker_id: uuid.UUID, tenant: CurrentTenant, db: DbSession) -> UtteranceList:
    speaker = speaker_service.get_speaker(db, tenant.id, speaker_id)
    items = utterance_service.list_utterances(db, speaker.id)
    return UtteranceList(items=[UtteranceOut.model_validate(u) for u in items])
