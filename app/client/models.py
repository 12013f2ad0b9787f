"""The API's responses as the client sees them (pydantic, immutable).

These are the client's own models, not ``app.schemas``: fields the server adds later are ignored rather than
rejected, so an older client keeps working against a newer server, and the client never imports the server's
database layer. States and decisions are plain strings for the same reason (a new state must not break parsing).
``tests/app/test_client_cli.py`` checks that every field named here exists in the server's schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

ACTIVE_JOB_STATES = frozenset({"queued", "training", "evaluating"})
TERMINAL_JOB_STATES = frozenset({"promoted", "rejected", "failed", "cancelled"})


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class UtteranceCounts(_Response):
    train: int
    eval: int


class Speaker(_Response):
    id: str
    external_id: str | None
    display_name: str | None
    created_at: datetime
    utterances: UtteranceCounts
    enrolled_seconds: float
    in_service_head_id: str | None
    active_job_id: str | None


class Utterance(_Response):
    id: str
    speaker_id: str
    duration_s: float
    split: str
    transcript: str
    sha256: str  # of the audio as the server stores it (16 kHz mono FLAC), not of the uploaded file
    created_at: datetime


class Evaluation(_Response):
    base_wer: float
    in_service_wer: float | None
    candidate_wer: float
    eval_utterances: int
    eval_words: int
    confidence: float
    decision: str  # "promote" | "reject"
    reason: str
    reference_head_id: str | None
    candidate_head_id: str | None


class Job(_Response):
    id: str
    speaker_id: str
    head_type: str
    state: str
    progress: float
    step: int | None
    total_steps: int | None
    loss: float | None
    attempts: int
    error: str | None
    head_id: str | None
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    updated_at: datetime
    finished_at: datetime | None
    evaluation: Evaluation | None

    @property
    def is_finished(self) -> bool:
        """A final state: no further change will come (promoted, rejected, failed, cancelled)."""
        return self.state in TERMINAL_JOB_STATES


class Head(_Response):
    id: str
    speaker_id: str
    job_id: str | None
    version: int
    head_type: str
    status: str  # candidate | in_service | retired | rejected
    parameters: int
    size_bytes: int
    sha256: str
    backbone_fingerprint: str
    controller_fingerprint: str
    parent_head_id: str | None
    train_metrics: dict[str, Any]
    created_at: datetime
    promoted_at: datetime | None
    evaluation: Evaluation | None


class Transcription(_Response):
    text: str
    head_id: str | None  # None: the base model answered
