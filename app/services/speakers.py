"""Speakers: creation, tenant-scoped lookup and listing, batched summaries, the erasure tombstone and row lock.

A speaker being deleted carries a tombstone (``deleted_at``) from the first step of its erasure until its rows are
gone (``app.services.erasure.erase_speaker``): every lookup here treats it as missing, and ``lock_live_speaker``,
which every write that adds to a speaker (an upload, a job) takes before it inserts, refuses it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import delete, func, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.errors import SpeakerExists, SpeakerNotFound
from app.services import quotas
from app.settings import Settings
from storage.models import (
    AdaptationJob,
    Head,
    HeadStatus,
    Speaker,
    Split,
    Utterance,
    UTCDateTime,
    utcnow,
)


def create_speaker(
    db: Session, settings: Settings, tenant_id: uuid.UUID, external_id: str | None, display_name: str | None
) -> Speaker:
    """Flushes, does not commit. A duplicate ``external_id`` in the tenant raises ``SpeakerExists``; when a
    concurrent request caused it (the flush failed), the caller's transaction is unusable and the caller rolls
    it back (the request's session dependency does). Over the tenant's speaker quota: ``QuotaExceeded`` (429;
    counted after the insert under the tenant's lock, held until the caller commits: ``app.services.quotas``), and
    the caller rolls back."""
    if external_id is not None and db.scalar(
        select(Speaker.id).where(Speaker.tenant_id == tenant_id, Speaker.external_id == external_id)
    ):
        raise SpeakerExists(f"a speaker with external_id {external_id!r} already exists")
    speaker = Speaker(tenant_id=tenant_id, external_id=external_id, display_name=display_name)
    db.add(speaker)
    try:
        db.flush()
    except IntegrityError as exc:  # a concurrent request created the same external_id
        raise SpeakerExists(f"a speaker with external_id {external_id!r} already exists") from exc
    quotas.check_speaker_added(db, settings, tenant_id)
    return speaker


def get_speaker(
    db: Session,
    tenant_id: uuid.UUID,
    speaker_id: uuid.UUID,
    *,
    for_update: bool = False,
    include_deleted: bool = False,
) -> Speaker:
    """The tenant's speaker; another tenant's speaker, or one being deleted, is indistinguishable from a missing
    one. ``include_deleted``: also a tombstoned one (only a retried deletion needs it)."""
    query = select(Speaker).where(Speaker.id == speaker_id, Speaker.tenant_id == tenant_id)
    if not include_deleted:
        query = query.where(Speaker.deleted_at.is_(None))
    if for_update:
        query = query.with_for_update()
    speaker = db.scalar(query)
    if speaker is None:
        raise SpeakerNotFound()
    return speaker


def lock_live_speaker(db: Session, speaker_id: uuid.UUID) -> None:
    """Lock the speaker's row until the caller's transaction ends; ``SpeakerNotFound`` if it is tombstoned or gone.

    A conditional ``UPDATE ... WHERE deleted_at IS NULL`` that changes nothing: on Postgres it takes the row lock
    that the tombstone's own UPDATE waits for (a plain insert's foreign-key lock would not make it wait), on SQLite
    it opens the write transaction. So an insert made after this either commits before the tombstone (and the
    erasure deletes it) or sees the tombstone and is refused: nothing added to a speaker survives its deletion.
    Flushes."""
    result = db.execute(
        update(Speaker)
        .where(Speaker.id == speaker_id, Speaker.deleted_at.is_(None))
        .values(deleted_at=None)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise SpeakerNotFound()


def tombstone_speaker(db: Session, speaker_id: uuid.UUID) -> None:
    """The first step of an erasure: mark the speaker deleted (kept if already marked) and drop its identifying
    fields now (``external_id`` is free for a new speaker at once). Waits for a ``lock_live_speaker`` holder."""
    db.execute(
        update(Speaker)
        .where(Speaker.id == speaker_id)
        .values(
            deleted_at=func.coalesce(Speaker.deleted_at, literal(utcnow(), UTCDateTime())),
            external_id=None,
            display_name=None,
        )
        .execution_options(synchronize_session=False)
    )
    db.flush()


def delete_speaker_rows(db: Session, speaker_id: uuid.UUID) -> None:
    """The last step of an erasure: the utterance rows and the speaker's own row (jobs and heads first: see
    ``app.services.jobs.erasure.delete_jobs_and_heads``). Flushes."""
    for statement in (
        delete(Utterance).where(Utterance.speaker_id == speaker_id),
        delete(Speaker).where(Speaker.id == speaker_id),
    ):
        db.execute(statement.execution_options(synchronize_session=False))
    db.flush()


@dataclass(frozen=True)
class SpeakerSummary:
    train_utterances: int
    eval_utterances: int
    enrolled_seconds: float
    in_service_head_id: uuid.UUID | None
    active_job_id: uuid.UUID | None


def list_speakers(db: Session, tenant_id: uuid.UUID, limit: int, offset: int) -> list[Speaker]:
    """The tenant's speakers, oldest first."""
    return list(
        db.scalars(
            select(Speaker)
            .where(Speaker.tenant_id == tenant_id, Speaker.deleted_at.is_(None))
            .order_by(Speaker.created_at, Speaker.id)
            .limit(limit)
            .offset(offset)
        )
    )


def summarize_many(db: Session, speaker_ids: list[uuid.UUID]) -> dict[uuid.UUID, SpeakerSummary]:
    """The summary of each speaker in three queries, however many speakers (one per kind of row)."""
    if not speaker_ids:
        return {}
    utterances = db.execute(
        select(Utterance.speaker_id, Utterance.split, func.count(), func.coalesce(func.sum(Utterance.duration_s), 0.0))
        .where(Utterance.speaker_id.in_(speaker_ids))
        .group_by(Utterance.speaker_id, Utterance.split)
    ).all()
    in_service = select(Head.speaker_id, Head.id).where(
        Head.speaker_id.in_(speaker_ids), Head.status == HeadStatus.in_service
    )
    heads = dict(db.execute(in_service).all())
    active = select(AdaptationJob.active_speaker_id, AdaptationJob.id).where(
        AdaptationJob.active_speaker_id.in_(speaker_ids)
    )
    jobs = dict(db.execute(active).all())
    counts: dict[tuple[uuid.UUID, Split], int] = {}
    seconds: dict[uuid.UUID, float] = {}
    for speaker_id, split, count, total in utterances:
        counts[(speaker_id, Split(split))] = int(count)
        seconds[speaker_id] = seconds.get(speaker_id, 0.0) + float(total or 0.0)
    return {
        speaker_id: SpeakerSummary(
            train_utterances=counts.get((speaker_id, Split.train), 0),
            eval_utterances=counts.get((speaker_id, Split.eval), 0),
            enrolled_seconds=seconds.get(speaker_id, 0.0),
            in_service_head_id=heads.get(speaker_id),
            active_job_id=jobs.get(speaker_id),
        )
        for speaker_id in speaker_ids
    }
