"""/v1/speakers/{id}/utterances: enrollment audio + transcript."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile, status
from pydantic import BaseModel, Field

from app import errors
from app.api.deps import ML, AppSettings, DbSession, Store
from app.api.uploads import read_upload
from app.error_handlers import error_responses
from app.schemas import NormalizedText, UtteranceList, UtteranceOut
from app.security import CurrentTenant
from app.services import erasure
from app.services import speakers as speaker_service
from app.services import utterances as utterance_service

router = APIRouter(prefix="/v1/speakers/{speaker_id}/utterances", tags=["utterances"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(
        errors.MalformedBody,
        errors.SpeakerNotFound,
        errors.PayloadTooLarge,
        errors.EmptyTranscript,
        errors.InvalidSplit,
        errors.InvalidAudio,
        errors.EmptyAudio,
        errors.AudioTooShort,
        errors.AudioTooLong,
        errors.UnsupportedSampleRate,
        errors.TooManyChannels,
        errors.QuotaExceeded,
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
    transcript: Annotated[NormalizedText | None, Form(description="What is said in the audio.")] = None,
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


@router.get("", responses=error_responses(errors.SpeakerNotFound))
def list_utterances(speaker_id: uuid.UUID, tenant: CurrentTenant, db: DbSession) -> UtteranceList:
    speaker = speaker_service.get_speaker(db, tenant.id, speaker_id)
    items = utterance_service.list_utterances(db, speaker.id)
    return UtteranceList(items=[UtteranceOut.model_validate(u) for u in items])


class UtteranceErasureOut(BaseModel):
    """What deleting an utterance changed (heads that carried it, the job using it, what serves the speaker now)."""

    utterance_id: uuid.UUID
    withdrawn_head_ids: list[uuid.UUID] = Field(
        description="Head versions trained on the utterance, or warm-started from one that was, now `withdrawn`: "
        "never served again, never a rollback target."
    )
    cancelled_job_ids: list[uuid.UUID] = Field(
        description="The speaker's active adaptation job, cancelled: it may have read the utterance already."
    )
    in_service_head_id: uuid.UUID | None = Field(description="What serves the speaker now; null: the base model.")
    fallback_head_id: uuid.UUID | None = Field(
        description="The earlier version put back in service because the one in service was withdrawn, if any."
    )
    reports_scrubbed: int = Field(description="Evaluation reports rewritten without this (held-out) utterance.")


@router.delete(
    "/{utterance_id}",
    responses=error_responses(errors.SpeakerNotFound, errors.UtteranceNotFound, errors.ObjectStoreUnavailable),
)
def delete_utterance(
    speaker_id: uuid.UUID, utterance_id: uuid.UUID, tenant: CurrentTenant, db: DbSession, store: Store, ml: ML
) -> UtteranceErasureOut:
    """Delete one utterance: its row (and its text from the evaluation reports that quote it), then its audio.

    Every head version trained on it is withdrawn (and so are versions warm-started from those); if the version in
    service was one, the speaker falls back to the newest earlier version that was in service and carries none of
    the erased audio, else to the base model. The speaker's active job, if any, is cancelled. The body says which.
    """
    speaker = speaker_service.get_speaker(db, tenant.id, speaker_id)
    utterance = utterance_service.get_utterance(db, speaker.id, utterance_id)
    done = erasure.erase_utterance(db, store, speaker, utterance)
    db.commit()
    erasure.forget_heads(ml, done.lineage.withdrawn_head_ids)
    erasure.delete_object(store, done.object_key)
    return UtteranceErasureOut(
        utterance_id=done.utterance_id,
        withdrawn_head_ids=done.lineage.withdrawn_head_ids,
        cancelled_job_ids=done.lineage.cancelled_job_ids,
        in_service_head_id=done.lineage.in_service_head_id,
        fallback_head_id=done.lineage.fallback_head_id,
        reports_scrubbed=done.reports_scrubbed,
    )
