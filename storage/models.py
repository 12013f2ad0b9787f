"""Typed SQLAlchemy 2 models. Alembic migrations are the only way the schema is made outside tests."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class TimestampedBase(Base):
    __abstract__ = True

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Split(str, enum.Enum):
    train = "train"
    eval = "eval"


class JobState(str, enum.Enum):
    queued = "queued"
    training = "training"
    evaluating = "evaluating"
    promoted = "promoted"
    rejected = "rejected"
    failed = "failed"
    cancelled = "cancelled"


class HeadType(str, enum.Enum):
    linear = "linear"
    ffn = "ffn"


class HeadStatus(str, enum.Enum):
    candidate = "candidate"  # trained, waiting for the gate
    in_service = "in_service"  # the speaker's promoted head (at most one per speaker)
    retired = "retired"  # was in service, replaced by a later version
    rejected = "rejected"  # failed the gate


class Decision(str, enum.Enum):
    promote = "promote"
    reject = "reject"


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as plain strings (no native enum type) so that adding a value is a data change, not a DDL change.
    return Enum(cls, native_enum=False, length=32, validate_strings=True, name=cls.__name__.lower())


class Tenant(TimestampedBase):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(128), unique=True)

    api_keys: Mapped[list[ApiKey]] = relationship(back_populates="tenant", cascade="all, delete-orphan")


class ApiKey(TimestampedBase):
    __tablename__ = "api_keys"

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    # sha256 hex of the key; the key itself is shown once, at creation, and never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    tenant: Mapped[Tenant] = relationship(back_populates="api_keys")


class Speaker(TimestampedBase):
    __tablename__ = "speakers"
    __table_args__ = (UniqueConstraint("tenant_id", "external_id"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str | None] = mapped_column(String(256))
    display_name: Mapped[str | None] = mapped_column(String(256))

    utterances: Mapped[list[Utterance]] = relationship(back_populates="speaker", cascade="all, delete-orphan")


class Utterance(TimestampedBase):
    __tablename__ = "utterances"

    speaker_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("speakers.id", ondelete="CASCADE"), index=True)
    object_key: Mapped[str] = mapped_column(String(512), unique=True)
    sha256: Mapped[str] = mapped_column(String(64))
    duration_s: Mapped[float] = mapped_column(Float)
    sample_rate: Mapped[int] = mapped_column(Integer)  # as stored (16 kHz mono FLAC)
    original_sample_rate: Mapped[int] = mapped_column(Integer)
    original_channels: Mapped[int] = mapped_column(Integer)
    transcript: Mapped[str] = mapped_column(Text)
    split: Mapped[Split] = mapped_column(_enum(Split))

    speaker: Mapped[Speaker] = relationship(back_populates="utterances")


class AdaptationJob(TimestampedBase):
    __tablename__ = "adaptation_jobs"

    speaker_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("speakers.id", ondelete="CASCADE"), index=True)
    head_type: Mapped[HeadType] = mapped_column(_enum(HeadType))
    state: Mapped[JobState] = mapped_column(_enum(JobState), default=JobState.queued, index=True)
    # The speaker's id while the job is active, NULL once it ends: a unique index on it enforces
    # "at most one active job per speaker" in the database itself, race-free.
    active_speaker_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, unique=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    step: Mapped[int | None] = mapped_column(Integer)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    loss: Mapped[float | None] = mapped_column(Float)
    budget: Mapped[dict] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    head_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("heads.id", ondelete="SET NULL"))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    head: Mapped[Head | None] = relationship(foreign_keys=[head_id])
    evaluation: Mapped[Evaluation | None] = relationship(back_populates="job", uselist=False)


class Head(TimestampedBase):
    __tablename__ = "heads"
    __table_args__ = (UniqueConstraint("speaker_id", "version"),)

    speaker_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("speakers.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    version: Mapped[int] = mapped_column(Integer)
    head_type: Mapped[HeadType] = mapped_column(_enum(HeadType))
    status: Mapped[HeadStatus] = mapped_column(_enum(HeadStatus), default=HeadStatus.candidate)
    object_key: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    parameters: Mapped[int] = mapped_column(Integer)
    backbone_fingerprint: Mapped[str] = mapped_column(String(64))
    controller_fingerprint: Mapped[str] = mapped_column(String(64))
    parent_head_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)  # warm start source
    train_utterance_ids: Mapped[list] = mapped_column(JSON, default=list)
    train_metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Evaluation(TimestampedBase):
    __tablename__ = "evaluations"

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("adaptation_jobs.id", ondelete="CASCADE"), unique=True)
    candidate_head_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("heads.id", ondelete="SET NULL"))
    reference_head_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)  # head in service at evaluation time
    base_wer: Mapped[float] = mapped_column(Float)
    in_service_wer: Mapped[float | None] = mapped_column(Float)
    candidate_wer: Mapped[float] = mapped_column(Float)
    eval_utterances: Mapped[int] = mapped_column(Integer)
    eval_words: Mapped[int] = mapped_column(Integer)
    confidence: Mapped[float] = mapped_column(Float)  # bootstrap P(candidate better than reference)
    decision: Mapped[Decision] = mapped_column(_enum(Decision))
    reason: Mapped[str] = mapped_column(Text)
    report_key: Mapped[str | None] = mapped_column(String(512))  # per-utterance hypotheses (JSON object)

    job: Mapped[AdaptationJob] = relationship(back_populates="evaluation")
