"""Request and response bodies of the HTTP API (pydantic v2)."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from storage.models import Decision, HeadAction, HeadStatus, HeadType, JobState, Split


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- text fields -------------------------------------------------------------------------------------------

# C0 and C1 control characters (NUL among them: PostgreSQL cannot store it) and lone surrogates (JSON may escape
# one, e.g. "\ud800"; no database encoding can store it). Format characters (zero-width joiners, bidi marks) are
# legitimate in names and stay.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Text whose whitespace is normalized before storage (transcripts) may carry tabs and line breaks.
_CONTROL_CHARACTERS_BUT_WHITESPACE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def refuse_control_characters(value: str | None, *, allow_whitespace: bool = False) -> str | None:
    """``value`` unchanged; ``ValueError`` naming the first control character or lone surrogate in it."""
    if value is None:
        return None
    pattern = _CONTROL_CHARACTERS_BUT_WHITESPACE if allow_whitespace else _CONTROL_CHARACTERS
    found = pattern.search(value)
    if found is not None:
        raise ValueError(f"must not contain control characters (found U+{ord(found.group()):04X})")
    return value


def _refuse_control_characters_but_whitespace(value: str | None) -> str | None:
    return refuse_control_characters(value, allow_whitespace=True)


# A single-line text field: a request carrying a control character in it is refused with 422.
PlainText = Annotated[str, AfterValidator(refuse_control_characters)]
# Text whose whitespace is normalized before it is stored (a transcript): tabs and line breaks may come in it.
NormalizedText = Annotated[str, AfterValidator(_refuse_control_characters_but_whitespace)]


# ---- speakers and utterances -------------------------------------------------------------------------------


class SpeakerCreate(_In):
    external_id: PlainText | None = Field(
        None, min_length=1, max_length=256, description="Your id for this speaker; unique per tenant."
    )
    display_name: PlainText | None = Field(None, max_length=256)


class UtteranceCounts(BaseModel):
    train: int
    eval: int


class SpeakerOut(_Out):
    id: uuid.UUID
    external_id: str | None
    display_name: str | None
    created_at: datetime
    utterances: UtteranceCounts
    enrolled_seconds: float
    in_service_head_id: uuid.UUID | None
    active_job_id: uuid.UUID | None


class SpeakerList(BaseModel):
    items: list[SpeakerOut]


class UtteranceOut(_Out):
    id: uuid.UUID
    speaker_id: uuid.UUID
    duration_s: float
    split: Split
    transcript: str
    sha256: str = Field(description="sha256 of the stored audio (16 kHz mono FLAC)")
    sample_rate: int
    original_sample_rate: int
    original_channels: int
    created_at: datetime


class UtteranceList(BaseModel):
    items: list[UtteranceOut]


# ---- adaptation jobs ---------------------------------------------------------------------------------------


class AdaptationCreate(_In):
    head_type: HeadType = HeadType.linear
    max_train_seconds: float | None = Field(
        None, gt=0, description="Training time budget (default and upper bound are server settings)."
    )
    max_epochs: int | None = Field(None, ge=1, le=1000)


class EvaluationOut(_Out):
    base_wer: float
    in_service_wer: float | None
    candidate_wer: float
    eval_utterances: int
    eval_words: int
    confidence: float = Field(description="Paired-bootstrap probability that the candidate beats the reference.")
    decision: Decision
    reason: str
    reference_head_id: uuid.UUID | None
    candidate_head_id: uuid.UUID | None
    created_at: datetime


class JobOut(_Out):
    id: uuid.UUID
    speaker_id: uuid.UUID
    head_type: HeadType
    state: JobState
    progress: float = Field(ge=0.0, le=1.0)
    step: int | None
    total_steps: int | None
    loss: float | None
    attempts: int
    error: str | None
    head_id: uuid.UUID | None
    budget: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    updated_at: datetime
    finished_at: datetime | None
    evaluation: EvaluationOut | None


# ---- heads -------------------------------------------------------------------------------------------------


class HeadOut(_Out):
    id: uuid.UUID
    speaker_id: uuid.UUID
    job_id: uuid.UUID | None
    version: int
    head_type: HeadType
    status: HeadStatus
    parameters: int
    size_bytes: int
    sha256: str
    backbone_fingerprint: str
    controller_fingerprint: str
    parent_head_id: uuid.UUID | None
    train_utterance_ids: list[uuid.UUID]
    train_metrics: dict[str, Any]
    created_at: datetime
    promoted_at: datetime | None
    evaluation: EvaluationOut | None = Field(description="The gate's numbers for this head, once evaluated.")


class HeadList(BaseModel):
    items: list[HeadOut]


class HeadChangeIn(_In):
    reason: PlainText = Field(
        min_length=1, max_length=1000, description="Why (kept with the change, with who asked and when)."
    )


class HeadEventOut(_Out):
    """An operator's manual change of a head version's status."""

    id: uuid.UUID
    speaker_id: uuid.UUID
    head_id: uuid.UUID
    action: HeadAction
    from_status: HeadStatus
    to_status: HeadStatus
    replaced_head_id: uuid.UUID | None = Field(description="The version in service before, retired by a promotion.")
    actor: str = Field(description="Who asked: the tenant and the API key's prefix.")
    reason: str
    created_at: datetime


class HeadEventList(BaseModel):
    items: list[HeadEventOut]


class HeadChangeOut(BaseModel):
    head: HeadOut
    event: HeadEventOut


# ---- transcription, foundation, health ---------------------------------------------------------------------


class TranscriptionOut(BaseModel):
    text: str
    head_id: uuid.UUID | None = Field(description="The head used; null for the base model.")


class FoundationOut(BaseModel):
    """What ``hra.foundation.Foundation.describe()`` reports (further keys pass through)."""

    model_config = ConfigDict(extra="allow")

    fingerprint: str = Field(description="sha256 binding backbone and controller; every head records it")
    backbone: dict[str, Any] = Field(description="name, fingerprint, d_model, n_encoder_layers, parameters, ...")
    controller: dict[str, Any] = Field(description="fingerprint, config, parameters, source")


class HealthOut(BaseModel):
    status: str


class ReadyOut(BaseModel):
    status: str = Field(description="'ready' or 'not_ready'")
    checks: dict[str, str] = Field(
        description="Per dependency (database, object_store, broker): 'ok' or '<dependency>_unavailable'."
    )
