"""Head versions of a speaker, tenant-scoped lookups, and their evaluations."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import errors
from storage.models import Evaluation, Head, HeadStatus, Speaker


def get_head(db: Session, tenant_id: uuid.UUID, head_id: uuid.UUID) -> Head:
    head = db.scalar(
        select(Head)
        .join(Speaker, Speaker.id == Head.speaker_id)
        .where(Head.id == head_id, Speaker.tenant_id == tenant_id, Speaker.deleted_at.is_(None))
    )
    if head is None:
        raise errors.HeadNotFound()
    return head


def list_heads(db: Session, speaker_id: uuid.UUID) -> list[Head]:
    return list(db.scalars(select(Head).where(Head.speaker_id == speaker_id).order_by(Head.version)))


def in_service_head(db: Session, speaker_id: uuid.UUID) -> Head | None:
    return db.scalar(select(Head).where(Head.speaker_id == speaker_id, Head.status == HeadStatus.in_service))


def next_version(db: Session, speaker_id: uuid.UUID) -> int:
    return int(db.scalar(select(func.coalesce(func.max(Head.version), 0)).where(Head.speaker_id == speaker_id))) + 1


def evaluations_by_head(db: Session, head_ids: list[uuid.UUID]) -> dict[uuid.UUID, Evaluation]:
    if not head_ids:
        return {}
    rows = db.scalars(select(Evaluation).where(Evaluation.candidate_head_id.in_(head_ids)))
    return {row.candidate_head_id: row for row in rows if row.candidate_head_id is not None}
