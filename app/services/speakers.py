"""Speakers: creation, tenant-scoped lookup and listing, batched summaries, and erasure (objects first, then rows)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.errors import SpeakerExists, SpeakerNotFound
from storage.models import (
    AdaptationJob,
    Evaluation,
    Head,
    HeadStatus,
    Speaker,
    Split,
    Utterance,
)
from storage.objects import ObjectStore, speaker_prefix


def create_speaker(db: Session, tenant_id: uuid.UUID, external_id: str | None, display_name: str | None) -> Speaker:
    """Flushes, does not commit. A duplicate ``external_id`` in the tenant raises ``SpeakerExists``; when a
    concurrent request caused it (the flush failed), the caller's transaction is unusable and the caller rolls
    it back (the request's session dependency does)."""
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
    return speaker


def get_speaker(db: Session, tenant_id: uuid.UUID, speaker_id: uuid.UUID, *, for_update: bool = False) -> Speaker:
    """The tenant's speaker; another tenant's speaker is indistinguishable from a missing one."""
    query = select(Speaker).where(Speaker.id == speaker_id, Speaker.tenant_id == tenant_id)
    if for_update:
        query = query.with_for_update()
    speaker = db.scalar(query)
    if speaker is None:
        raise SpeakerNotFound()
    return speaker


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
            .where(Speaker.tenant_id == tenant_id)
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


def delete_speaker(db: Session, store: ObjectStore, speaker: Speaker) -> None:
    """Erase the speaker's objects (audio, heads, reports), then its rows. Flushes; the caller commits.

    Objects go first: if erasing them fails the rows remain and the request can be retried. A worker still
    running a job of this speaker finds its job gone and stops (its own upload, if any, is deleted then).
    """
    store.delete_prefix(speaker_prefix(speaker.tenant_id, speaker.id))
    job_ids = select(AdaptationJob.id).where(AdaptationJob.speaker_id == speaker.id)
    for statement in (
        delete(Evaluation).where(Evaluation.job_id.in_(job_ids)),
        delete(AdaptationJob).where(AdaptationJob.speaker_id == speaker.id),
        delete(Head).where(Head.speaker_id == speaker.id),
        delete(Utterance).where(Utterance.speaker_id == speaker.id),
        delete(Speaker).where(Speaker.id == speaker.id),
    ):
        db.execute(statement.execution_options(synchronize_session=False))
    db.expunge(speaker)
