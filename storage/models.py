"""Typed SQLAlchemy 2 models. Alembic migrations are the only way the schema is made outside tests.

Any change here needs a reviewed migration in ``migrations/versions``; ``tests/storage/test_migrations.py``
fails while the models and the migrations disagree (on SQLite and on Postgres).

Timestamps are timezone-aware UTC on every backend (``UTCDateTime``): SQLite keeps no offset, so values are
normalized to UTC on the way in and marked UTC on the way out.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    event,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    # All columns of a composite unique constraint appear in its name: uq_heads_speaker_id_version.
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that only accepts aware datetimes and always returns aware UTC ones.

    Postgres stores ``timestamptz``; SQLite stores text without an offset, so without this a value read back
    from SQLite is naive and comparing it with ``utcnow()`` raises ``TypeError``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware one (storage.models.utcnow())")
        value = value.astimezone(timezone.utc)
        # SQLite compares the stored text: keep one representation (UTC, no offset) so ordering is right.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime}


class TimestampedBase(Base):
    __abstract__ = True

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4, sort_order=-1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


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

    @property
    def is_active(self) -> bool:
        return self in ACTIVE_JOB_STATES


ACTIVE_JOB_STATES: frozenset[JobState] = frozenset({JobState.queued, JobState.training, JobState.evaluating})
TERMINAL_JOB_STATES: frozenset[JobState] = frozenset(JobState) - ACTIVE_JOB_STATES


class HeadType(str, enum.Enum):
    linear = "linear"
    ffn = "ffn"


class HeadStatus(str, enum.Enum):
    candidate = "candidate"  # trained, waiting for the gate
    in_service = "in_service"  # the speaker's promoted head (at most one per speaker)
    retired = "retired"  # was in service, replaced by a later version
    rejected = "rejected"  # failed the gate
    # Trained on (or warm-started from a head trained on) audio that was deleted since: never served again, and
    # never a fallback or a rollback target (app.services.jobs.erasure).
    withdrawn = "withdrawn"


class Decision(str, enum.Enum):
    promote = "promote"
    reject = "reject"


class HeadAction(str, enum.Enum):
    """An operator's manual change of a head version's status (``HeadEvent``)."""

    promote = "promote"  # put this version in service (a rollback to an earlier one); the one in service retires
    retire = "retire"  # take this version out of service; the speaker is served by the base model


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as plain strings (no native enum type) so that adding a value is a data change, not a DDL change.
    return Enum(cls, native_enum=False, length=32, validate_strings=True, name=cls.__name__.lower())


class Tenant(TimestampedBase):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(128), unique=True)
    # Overrides of the ``quota_*`` settings for this tenant ({"speakers": 50, ...}; NULL: the defaults), set by
    # ``hra tenants quota`` and read by app.services.quotas. Assign a new dict to change it.
    quotas: Mapped[dict | None] = mapped_column(JSON)

    # passive_deletes: the database's ON DELETE CASCADE removes the children; the ORM does not load them first.
    api_keys: Mapped[list[ApiKey]] = relationship(
        back_populates="tenant", cascade="all, delete-orphan", passive_deletes=True
    )
    speakers: Mapped[list[Speaker]] = relationship(
        back_populates="tenant", cascade="all, delete-orphan", passive_deletes=True
    )


class ApiKey(TimestampedBase):
    __tablename__ = "api_keys"

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    # sha256 hex of the key; the key itself is shown once, at creation, and never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # "hra_" + 8 random characters: tells keys apart in listings
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    label: Mapped[str | None] = mapped_column(String(64))  # what the key is for: "hra run", "bootstrap", a name
    # Refreshed at most once an hour per key (app.security.LAST_USED_RESOLUTION_S): a write per request would not be.
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    tenant: Mapped[Tenant] = relationship(back_populates="api_keys")


class Speaker(TimestampedBase):
    __tablename__ = "speakers"
    # external_id is optional; NULLs never collide, so many speakers of a tenant may have none.
    __table_args__ = (UniqueConstraint("tenant_id", "external_id"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str | None] = mapped_column(String(256))
    display_name: Mapped[str | None] = mapped_column(String(256))
    # The erasure tombstone: set first when the speaker is deleted (app.services.speakers.erase_speaker); from then
    # on every lookup treats the speaker as gone and no upload or job can be added, until its rows are deleted.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    tenant: Mapped[Tenant] = relationship(back_populates="speakers")
    # Deleting a speaker deletes its utterances, jobs (with their evaluations) and heads in the database.
    # The objects they point to (audio, artifacts, reports) are the caller's to delete: see storage.objects.
    utterances: Mapped[list[Utterance]] = relationship(
        back_populates="speaker", cascade="all, delete-orphan", passive_deletes=True
    )
    jobs: Mapped[list[AdaptationJob]] = relationship(
        back_populates="speaker", cascade="all, delete-orphan", passive_deletes=True
    )
    heads: Mapped[list[Head]] = relationship(
        back_populates="speaker", cascade="all, delete-orphan", passive_deletes=True
    )


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
    # The stored object's size (the tenant's stored-bytes quota counts it with the heads' ``size_bytes``).
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))

    speaker: Mapped[Speaker] = relationship(back_populates="utterances")


_ACTIVE_STATES_SQL = ", ".join(f"'{state.value}'" for state in sorted(ACTIVE_JOB_STATES, key=list(JobState).index))


class AdaptationJob(TimestampedBase):
    __tablename__ = "adaptation_jobs"
    __table_args__ = (
        # active_speaker_id is the speaker's id exactly while the job is active. The mapper events below keep
        # it so for ORM changes; a bulk UPDATE that ends a job must set active_speaker_id=None itself.
        CheckConstraint(
            f"(state IN ({_ACTIVE_STATES_SQL}) AND active_speaker_id = speaker_id)"
            f" OR (state NOT IN ({_ACTIVE_STATES_SQL}) AND active_speaker_id IS NULL)",
            name="active_speaker_id_matches_state",
        ),
    )

    speaker_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("speakers.id", ondelete="CASCADE"), index=True)
    head_type: Mapped[HeadType] = mapped_column(_enum(HeadType))
    state: Mapped[JobState] = mapped_column(_enum(JobState), default=JobState.queued, index=True)
    # The speaker's id while the job is active, NULL once it ends: a unique index on it enforces
    # "at most one active job per speaker" in the database itself, race-free (a second active job
    # fails with IntegrityError on uq_adaptation_jobs_active_speaker_id).
    active_speaker_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, unique=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    step: Mapped[int | None] = mapped_column(Integer)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    loss: Mapped[float | None] = mapped_column(Float)
    budget: Mapped[dict] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    head_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("heads.id", ondelete="SET NULL"))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    speaker: Mapped[Speaker] = relationship(back_populates="jobs")
    head: Mapped[Head | None] = relationship(foreign_keys=[head_id])
    evaluation: Mapped[Evaluation | None] = relationship(
        back_populates="job", cascade="all, delete-orphan", passive_deletes=True
    )


@event.listens_for(AdaptationJob, "before_insert")
@event.listens_for(AdaptationJob, "before_update")
def _sync_active_speaker_id(_mapper: Any, _connection: Any, job: AdaptationJob) -> None:
    state = JobState(job.state) if job.state is not None else JobState.queued
    job.active_speaker_id = job.speaker_id if state.is_active else None


class Head(TimestampedBase):
    __tablename__ = "heads"
    __table_args__ = (
        UniqueConstraint("speaker_id", "version"),
        # At most one head in service per speaker, enforced by a partial unique index.
        Index(
            "ix_heads_speaker_id_in_service",
            "speaker_id",
            unique=True,
            postgresql_where=text("status = 'in_service'"),
            sqlite_where=text("status = 'in_service'"),
        ),
    )

    speaker_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("speakers.id", ondelete="CASCADE"), index=True)
    # No foreign key: adaptation_jobs.head_id already points here, and a cycle would complicate deletes.
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    version: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per speaker
    head_type: Mapped[HeadType] = mapped_column(_enum(HeadType))
    status: Mapped[HeadStatus] = mapped_column(_enum(HeadStatus), default=HeadStatus.candidate)
    object_key: Mapped[str] = mapped_column(String(512), unique=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    parameters: Mapped[int] = mapped_column(Integer)
    backbone_fingerprint: Mapped[str] = mapped_column(String(64))
    controller_fingerprint: Mapped[str] = mapped_column(String(64))
    parent_head_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)  # warm start source (lineage, no FK)
    # JSON columns: assign a new list/dict to change them; in-place mutation is not tracked.
    train_utterance_ids: Mapped[list] = mapped_column(JSON, default=list)
    train_metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    promoted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    speaker: Mapped[Speaker] = relationship(back_populates="heads")


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


class HeadEvent(TimestampedBase):
    """Who changed a head version's status by hand, when, why, and what it replaced (the audit of rollbacks).

    Written only by ``app.services.jobs`` (``promote_version``, ``retire_version``); the gate's own promotions are
    recorded by the job and its ``Evaluation``. Deleting the head or the speaker deletes its events.
    """

    __tablename__ = "head_events"

    speaker_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("speakers.id", ondelete="CASCADE"), index=True)
    head_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("heads.id", ondelete="CASCADE"), index=True)
    action: Mapped[HeadAction] = mapped_column(_enum(HeadAction))
    from_status: Mapped[HeadStatus] = mapped_column(_enum(HeadStatus))
    to_status: Mapped[HeadStatus] = mapped_column(_enum(HeadStatus))
    # The version that was in service before a promotion and was retired by it (no FK: it may be deleted later).
    replaced_head_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # Who: the API key that asked (no FK: the record outlives the key) and a readable label (tenant, key prefix).
    actor_key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    actor: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(Text)
