"""Transcription with a speaker's promoted head (or a chosen version), or with the base model.

The routes are plain ``def``: FastAPI runs them in its thread pool, so decoding and inference never block the
event loop. The foundation is loaded on first use, once (``HRAMLService``). Recordings longer than one Whisper
window are split by voice activity and transcribed in batches (``app.services.longform``); the text is the
segments' text joined (``POST /v1/audio/transcriptions`` returns the segments too).
"""

from __future__ import annotations

import functools
import uuid
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from app import errors
from app.api.deps import ML, AppSettings, DbSession, Store
from app.api.uploads import read_upload
from app.error_handlers import error_responses
from app.ml import HeadRef, MLService
from app.schemas import TranscriptionOut
from app.security import CurrentTenant
from app.services import heads as head_service
from app.services import longform
from app.services import speakers as speaker_service
from app.services.audio import decode_checked
from app.settings import Settings
from storage.errors import ObjectNotFound

router = APIRouter(tags=["transcriptions"])

_AUDIO_ERRORS = (
    errors.MalformedBody,
    errors.PayloadTooLarge,
    errors.InvalidAudio,
    errors.EmptyAudio,
    errors.AudioTooLong,
    errors.UnsupportedSampleRate,
    errors.TooManyChannels,
    errors.FoundationUnavailable,
)


def _transcribe(ml: MLService, settings: Settings, data: bytes, head: HeadRef | None) -> str:
    decoded = decode_checked(ml, data, settings, max_seconds=settings.max_transcription_seconds)
    return longform.join_text(longform.transcribe(ml, decoded.waveform, settings, head))


@router.post(
    "/v1/speakers/{speaker_id}/transcriptions",
    responses=error_responses(
        errors.SpeakerNotFound, errors.HeadNotFound, errors.HeadNotUsable, errors.ObjectStoreUnavailable, *_AUDIO_ERRORS
    ),
)
def transcribe_for_speaker(
    speaker_id: uuid.UUID,
    audio: Annotated[UploadFile, File(description="WAV, FLAC, OGG or MP3 (long recordings are split at pauses).")],
    tenant: CurrentTenant,
    db: DbSession,
    store: Store,
    ml: ML,
    settings: AppSettings,
    head_id: Annotated[
        uuid.UUID | None, Form(description="A head version of this speaker; default: the one in service.")
    ] = None,
) -> TranscriptionOut:
    """Transcribe with the speaker's head in service (the base model when none), or with ``head_id``."""
    speaker = speaker_service.get_speaker(db, tenant.id, speaker_id)
    if head_id is not None:
        head = head_service.get_head(db, tenant.id, head_id)
        if head.speaker_id != speaker.id:
            raise errors.HeadNotFound("no such head for this speaker")
    else:
        head = head_service.in_service_head(db, speaker.id)
    used_id, object_key = (head.id, head.object_key) if head is not None else (None, None)
    db.rollback()  # end the read transaction: inference may take a while
    data = read_upload(audio, settings.max_transcription_upload_bytes)
    # The artifact is fetched from the store only when the ML service has not parsed this head id already.
    head_ref = None if object_key is None else HeadRef(str(used_id), functools.partial(store.get, object_key))
    try:
        text = _transcribe(ml, settings, data, head_ref)
    except ObjectNotFound as exc:
        raise errors.ArtifactNotFound() from exc
    return TranscriptionOut(text=text, head_id=used_id)


@router.post("/v1/transcriptions", responses=error_responses(*_AUDIO_ERRORS))
def transcribe_base(
    audio: Annotated[UploadFile, File(description="WAV, FLAC, OGG or MP3 (long recordings are split at pauses).")],
    tenant: CurrentTenant,
    ml: ML,
    settings: AppSettings,
) -> TranscriptionOut:
    """Transcribe with the base model as served (no head)."""
    data = read_upload(audio, settings.max_transcription_upload_bytes)
    return TranscriptionOut(text=_transcribe(ml, settings, data, None), head_id=None)
