"""Request and response bodies of the HTTP API (pydantic v2)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from storage.models import Decision, HeadStatus, HeadType, JobState, Split


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- speakers and utterances -------------------------------------------------------------------------------


class SpeakerCreate(_In):
    external_id: str | None = Field(
        None, min_length=1, max_length=256, description="Your id for this speaker; unique per tenant."
    )
    display_name: str | None = Field(None, max_length=256)


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
    checks: dict[str, str] = Field(description="'ok' or the error, per dependency")
