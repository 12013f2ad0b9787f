"""OpenAI-compatible speech to text: ``POST /v1/audio/transcriptions``, ``GET /v1/models`` and ``GET /v1/models/{id}``.

Any OpenAI client works against these routes with ``base_url=<server>/v1`` and an API key of this service:

- ``model`` names the base model (``whisper-tiny.en``, ``hra-base``, or ``whisper-1`` as an alias for drop-in
  clients) or a speaker of the key's tenant, ``speaker:<speaker id>`` or the speaker's ``external_id``: the speaker's
  head in service transcribes (the base model while the speaker has none). ``GET /v1/models`` lists them all.
- ``response_format``: ``json`` (default: ``{"text", "usage"}``), ``text``, ``verbose_json`` (segments with start and
  end times; ``timestamp_granularities[]=segment``, the default, is the only granularity), ``srt``, ``vtt``.
- ``language``: ``en``/``english`` or absent (the model is Whisper tiny.en: anything else is a 400).
  ``prompt`` and ``temperature`` (0..1) are accepted and do not change decoding, which is deterministic beam
  search with hallucination guards (``verbose_json`` reports temperature 0.0).
- Recordings of any length up to ``max_transcription_seconds`` (2 h by default): longer than one Whisper window,
  they are split at pauses and transcribed in batches (``app.services.longform``), one segment per chunk.
- ``stream=true``: Server-Sent Events, one ``data:`` event per segment as its batch is decoded, the convention of
  speaches (formerly faster-whisper-server): for ``json`` the event is speaches' ``{"text": <segment>}``, for
  ``verbose_json`` the segment object as in ``verbose_json``, and both also carry OpenAI's streaming fields
  (``"type": "transcript.text.delta"``, ``"delta"``) so that the official client parses them; they end with OpenAI's
  ``{"type": "transcript.text.done", "text": <all>, "usage"}``. For ``text``, ``srt`` and ``vtt`` each event is the
  segment rendered in that format (one ``data:`` line per line), with no closing event. There is no ``[DONE]``
  sentinel (neither OpenAI's transcription stream nor speaches send one); the stream ends when the body ends. An
  error after the stream began is sent as a last event ``{"error": {...}}`` (OpenAI's shape; the official client
  raises it).

Errors on these routes are in OpenAI's shape (``app.error_handlers.render_error``). Responses carry ``x-hra-model`` (the
model resolved) and, when a head transcribed, ``x-hra-head-id``.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import errors
from app.api.deps import ML, AppSettings, DbSession, Store
from app.api.uploads import read_upload
from app.error_handlers import openai_error_body, openai_error_responses
from app.ml import HeadRef
from app.schemas import refuse_control_characters
from app.security import CurrentTenant
from app.services import heads as head_service
from app.services import longform
from app.services import transcript_formats as fmt
from app.services.audio import decode_checked
from app.services.speakers import summarize_many
from storage.models import Speaker, Tenant

logger = logging.getLogger(__name__)

BASE_MODEL = "whisper-tiny.en"
BASE_MODEL_ALIASES = ("hra-base", "whisper-1")
BASE_MODEL_IDS = (BASE_MODEL, *BASE_MODEL_ALIASES)
BASE_MODEL_CREATED = 1663718400  # Whisper's release, 2022-09-21
SPEAKER_PREFIX = "speaker:"
ENGLISH = {"en", "english", "en-us", "en-gb"}

_ERRORS = (
    errors.Unauthorized,
    errors.InvalidRequest,
    errors.UnsupportedLanguage,
    errors.ModelNotFound,
    errors.ArtifactNotFound,
    errors.HeadNotUsable,
    errors.PayloadTooLarge,
    errors.InvalidAudio,
    errors.EmptyAudio,
    errors.AudioTooLong,
    errors.FoundationUnavailable,
    errors.ObjectStoreUnavailable,
)

router = APIRouter(tags=["openai-compatible"], responses=openai_error_responses(errors.Unauthorized))


# ---- models ---------------------------------------------------------------------------------------------------


class ModelOut(BaseModel):
    """OpenAI's model object; speakers add ``speaker_id``, ``external_id`` and the ``head_id`` in service."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: str = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelOut]


@dataclass(frozen=True)
class Resolved:
    model: str  # as listed: a base id, or speaker:<uuid>
    speaker: Speaker | None


def _created(moment: datetime | None) -> int:
    if moment is None:
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _not_found(model: str) -> errors.ModelNotFound:
    return errors.ModelNotFound(f"The model `{model}` does not exist or you do not have access to it.")


def resolve_model(db: Session, tenant: Tenant, model: str) -> Resolved:
    """A base-model id, ``speaker:<id>`` or a speaker's ``external_id`` of the tenant; else ``ModelNotFound``."""
    name = model.strip()
    if name in BASE_MODEL_IDS:
        return Resolved(name, None)
    if name.startswith(SPEAKER_PREFIX):
        try:
            speaker_id = uuid.UUID(name[len(SPEAKER_PREFIX) :])
        except ValueError:
            raise _not_found(model) from None
        speaker = db.scalar(_live_speakers(tenant).where(Speaker.id == speaker_id))
    else:
        try:  # no external_id holds one (refused when a speaker is made); NUL would be a 500 on Postgres
            refuse_control_characters(name)
        except ValueError:
            raise _not_found(model) from None
        speaker = db.scalar(_live_speakers(tenant).where(Speaker.external_id == name))
    if speaker is None:
        raise _not_found(model)
    return Resolved(f"{SPEAKER_PREFIX}{speaker.id}", speaker)


def _live_speakers(tenant: Tenant):
    """The tenant's speakers, less those being erased (their tombstone hides them everywhere)."""
    return select(Speaker).where(Speaker.tenant_id == tenant.id, Speaker.deleted_at.is_(None))


def _speaker_model(speaker: Speaker, tenant: Tenant, head_id: uuid.UUID | None) -> ModelOut:
    return ModelOut(
        id=f"{SPEAKER_PREFIX}{speaker.id}",
        created=_created(speaker.created_at),
        owned_by=tenant.name,
        speaker_id=str(speaker.id),
        external_id=speaker.external_id,
        head_id=None if head_id is None else str(head_id),
    )


def _base_models() -> list[ModelOut]:
    return [ModelOut(id=name, created=BASE_MODEL_CREATED, owned_by="hra") for name in BASE_MODEL_IDS]


@router.get("/v1/models")
def list_models(tenant: CurrentTenant, db: DbSession) -> ModelList:
    """What this key may transcribe with: the base model (and its aliases) and every speaker of the tenant."""
    speakers = list(db.scalars(_live_speakers(tenant).order_by(Speaker.created_at, Speaker.id)))
    summaries = summarize_many(db, [s.id for s in speakers])
    data = _base_models() + [_speaker_model(s, tenant, summaries[s.id].in_service_head_id) for s in speakers]
    return ModelList(data=data)


@router.get("/v1/models/{model}", responses=openai_error_responses(errors.ModelNotFound))
def retrieve_model(model: str, tenant: CurrentTenant, db: DbSession) -> ModelOut:
    """One model of ``GET /v1/models``, by its id (a speaker also by its ``external_id``)."""
    resolved = resolve_model(db, tenant, model)
    if resolved.speaker is None:
        return next(m for m in _base_models() if m.id == resolved.model)
    head = head_service.in_service_head(db, resolved.speaker.id)
    return _speaker_model(resolved.speaker, tenant, None if head is None else head.id)


# ---- transcriptions -------------------------------------------------------------------------------------------


class TranscriptionJson(BaseModel):
    """``response_format=json``. ``text``, ``srt`` and ``vtt`` are plain text; ``verbose_json`` adds ``task``,
    ``language``, ``duration`` and ``segments``."""

    model_config = ConfigDict(extra="allow")

    text: str
    usage: dict[str, Any] = Field(description='{"type": "duration", "seconds": <whole seconds>}')


def _check_options(
    response_format: str, language: str | None, temperature: float, granularities: list[str] | None
) -> None:
    if response_format not in fmt.RESPONSE_FORMATS:
        raise errors.UnsupportedValue(
            f"response_format must be one of {', '.join(fmt.RESPONSE_FORMATS)}", param="response_format"
        )
    if language is not None and language.strip() and language.strip().lower() not in ENGLISH:
        raise errors.UnsupportedLanguage(
            f"language {language!r} is not supported: the model is Whisper tiny.en (English only)"
        )
    if not 0.0 <= temperature <= 1.0:
        raise errors.UnsupportedValue("temperature must be between 0 and 1", param="temperature")
    for granularity in granularities or ():
        if granularity != "segment":
            raise errors.UnsupportedValue(
                f"timestamp granularity {granularity!r} is not supported (only 'segment')",
                param="timestamp_granularities",
            )


def _head_ref(db: Session, store: Any, speaker: Speaker | None) -> tuple[uuid.UUID | None, HeadRef | None]:
    """The speaker's head in service (looked up per request: a promotion or rollback applies at once), as a
    ``HeadRef`` whose artifact the ML service fetches from the store only when its cache misses."""
    if speaker is None:
        return None, None
    head = head_service.in_service_head(db, speaker.id)
    if head is None:
        return None, None
    return head.id, HeadRef(str(head.id), functools.partial(store.get, head.object_key))


def _render(response_format: str, segments: list[longform.Segment], duration: float, headers: dict) -> Response:
    if response_format == "json":
        return JSONResponse(fmt.json_body(segments, duration), headers=headers)
    if response_format == "verbose_json":
        return JSONResponse(fmt.verbose_json_body(segments, duration), headers=headers)
    body = {"text": fmt.text, "srt": fmt.srt, "vtt": fmt.vtt}[response_format](segments)
    return Response(body, media_type=fmt.MEDIA_TYPES[response_format], headers=headers)


def _event(payload: dict | str) -> str:
    return fmt.sse(payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False))


def _stream(batches: Iterator[list[longform.Segment]], response_format: str, duration: float) -> Iterator[str]:
    """Server-Sent Events (see the module docstring). Starlette runs this generator in its thread pool."""
    sent: list[longform.Segment] = []
    try:
        for batch in batches:
            for segment in batch:
                sent.append(segment)
                yield _event(fmt.stream_segment_event(segment, response_format))
    except errors.AppError as exc:
        logger.warning("transcription stream failed: %s: %s", exc.code, exc.message)
        yield _event(openai_error_body(exc.status_code, exc.code, exc.message, exc.param)[1])
        return
    if response_format in ("json", "verbose_json"):
        yield _event(fmt.stream_done_event(sent, duration))


_FORMATS_DOC = {
    "application/json": {"schema": {"$ref": "#/components/schemas/TranscriptionJson"}},
    "text/plain": {"schema": {"type": "string"}},
    "application/x-subrip": {"schema": {"type": "string"}},
    "text/vtt": {"schema": {"type": "string"}},
    "text/event-stream": {"schema": {"type": "string"}, "description": "with stream=true"},
}


@router.post(
    "/v1/audio/transcriptions",
    response_model=TranscriptionJson,
    responses={200: {"content": _FORMATS_DOC}, **openai_error_responses(*_ERRORS)},
)
def create_transcription(
    tenant: CurrentTenant,
    db: DbSession,
    store: Store,
    ml: ML,
    settings: AppSettings,
    file: Annotated[UploadFile, File(description="WAV, FLAC, OGG or MP3, up to max_transcription_seconds.")],
    model: Annotated[str, Form(description="whisper-tiny.en | hra-base | whisper-1 | speaker:<id> | <external_id>")],
    language: Annotated[str | None, Form(description="en (or absent): the model is English-only")] = None,
    prompt: Annotated[str | None, Form(description="accepted; does not change decoding")] = None,
    response_format: Annotated[str, Form(description="json | text | verbose_json | srt | vtt")] = "json",
    temperature: Annotated[float, Form(description="0..1; accepted; decoding is deterministic")] = 0.0,
    timestamp_granularities: Annotated[
        list[str] | None, Form(alias="timestamp_granularities[]", description="segment (the only one)")
    ] = None,
    stream: Annotated[bool, Form(description="Server-Sent Events of segments as they are decoded")] = False,
) -> Response:
    """Transcribe a recording with the base model or a speaker's head, in OpenAI's API shape."""
    _check_options(response_format, language, temperature, timestamp_granularities)
    resolved = resolve_model(db, tenant, model)
    head_id, head = _head_ref(db, store, resolved.speaker)
    db.rollback()  # no transaction held while decoding and transcribing
    data = read_upload(file, settings.max_transcription_upload_bytes)
    decoded = decode_checked(ml, data, settings, max_seconds=settings.max_transcription_seconds)
    del data
    chunks = longform.plan_chunks(decoded.waveform, settings)
    batches = longform.transcribe_batches(ml, decoded.waveform, chunks, head, settings.longform_batch_size)
    headers = {"x-hra-model": resolved.model}
    if head_id is not None:
        headers["x-hra-head-id"] = str(head_id)
    if stream:
        # The first batch (one chunk) is decoded before the response starts, so that a head that cannot load or a
        # model that is down still gets its status code; later failures become the stream's last event.
        first = next(batches, [])
        return StreamingResponse(
            _stream(itertools.chain([first], batches), response_format, decoded.duration_s),
            media_type="text/event-stream",
            headers={**headers, "cache-control": "no-cache", "x-accel-buffering": "no"},
        )
    segments = [segment for batch in batches for segment in batch]
    return _render(response_format, segments, decoded.duration_s, headers)
