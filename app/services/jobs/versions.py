"""An operator's manual changes of head versions: promote one (a rollback) or retire the one in service.

Each change is recorded as a ``HeadEvent``: who asked (the API key and its tenant), why (their ``reason``), what it
changed. Like the gate's decision (``runs.decide``), a change locks the speaker's row first, then retires the head in
service and sets the chosen one with guarded ``UPDATE``s, in the caller's transaction; the partial unique index
``ix_heads_speaker_id_in_service`` keeps at most one version in service whatever the race.

Which versions may be promoted: ``retired`` (an earlier version: a rollback) and ``rejected`` (the operator
overrides the gate, and says why). A ``candidate`` belongs to the job evaluating it and is refused, as is the
version already in service. Only the version in service may be retired; the speaker is then served by the base
model until another version is promoted.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import errors
from app.services.heads import in_service_head
from storage.models import Head, HeadAction, HeadEvent, HeadStatus, Speaker, utcnow

PROMOTABLE: frozenset[HeadStatus] = frozenset({HeadStatus.retired, HeadStatus.rejected})
MAX_REASON_CHARS = 1000


@dataclass(frozen=True)
class Actor:
    """Who asks: the tenant, the API key (its id, when the key is a stored one) and a readable label."""

    tenant_id: uuid.UUID
    key_id: uuid.UUID | None
    label: str


def _reason(reason: str) -> str:
    cleaned = " ".join(reason.split())
    if not cleaned:
        raise errors.InvalidRequest("reason must say why (at least one non-blank character)", param="reason")
    return cleaned[:MAX_REASON_CHARS]


def _lock_speaker(db: Session, speaker_id: uuid.UUID) -> None:
    # The row lock serializes status changes of one speaker's heads on Postgres (SQLite: the write lock).
    db.execute(select(Speaker.id).where(Speaker.id == speaker_id).with_for_update())


def _record(
    db: Session, head: Head, action: HeadAction, source: HeadStatus, target: HeadStatus, actor: Actor, reason: str,
    replaced: uuid.UUID | None = None,
) -> HeadEvent:
    event = HeadEvent(
        speaker_id=head.speaker_id,
        head_id=head.id,
        action=action,
        from_status=source,
        to_status=target,
        replaced_head_id=replaced,
        actor_key_id=actor.key_id,
        actor=actor.label[:256],
        reason=reason,
    )
    db.add(event)
    try:
        db.flush()
    except IntegrityError as exc:  # another version went into service concurrently (partial unique index)
        raise errors.HeadStatusConflict("another version of this speaker changed status concurrently") from exc
    db.refresh(head)
    return event


def promote_version(db: Session, head: Head, actor: Actor, reason: str) -> HeadEvent:
    """Put ``head`` in service (retiring the version in service, if any) and record who and why. Flushes.

    Raises ``HeadStatusConflict`` (409) when the version is already in service or is a candidate, and
    ``InvalidRequest`` (400) for a blank reason.
    """
    reason = _reason(reason)
    _lock_speaker(db, head.speaker_id)
    db.refresh(head)
    source = head.status
    if source not in PROMOTABLE:
        why = (
            "is already in service"
            if source is HeadStatus.in_service
            else "is a candidate still under evaluation by its job"
        )
        raise errors.HeadStatusConflict(f"version {head.version} {why}")
    previous = in_service_head(db, head.speaker_id)
    if previous is not None:
        db.execute(
            update(Head)
            .where(Head.id == previous.id, Head.status == HeadStatus.in_service)
            .values(status=HeadStatus.retired)
            .execution_options(synchronize_session=False)
        )
    changed = db.execute(
        update(Head)
        .where(Head.id == head.id, Head.status == source)
        .values(status=HeadStatus.in_service, promoted_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if changed.rowcount != 1:
        raise errors.HeadStatusConflict(f"version {head.version} changed status concurrently")
    return _record(
        db, head, HeadAction.promote, source, HeadStatus.in_service, actor, reason,
        replaced=previous.id if previous is not None else None,
    )


def rollback_to(db: Session, head: Head, actor: Actor, reason: str) -> HeadEvent:
    """``promote_version`` under the name an operator looks for: serve an earlier version again."""
    return promote_version(db, head, actor, reason)


def retire_version(db: Session, head: Head, actor: Actor, reason: str) -> HeadEvent:
    """Take ``head`` (the version in service) out of service and record who and why. Flushes.

    Raises ``HeadStatusConflict`` (409) for a version not in service, ``InvalidRequest`` (400) for a blank reason.
    """
    reason = _reason(reason)
    _lock_speaker(db, head.speaker_id)
    db.refresh(head)
    if head.status is not HeadStatus.in_service:
        raise errors.HeadStatusConflict(f"version {head.version} is {head.status.value}, not in service")
    changed = db.execute(
        update(Head)
        .where(Head.id == head.id, Head.status == HeadStatus.in_service)
        .values(status=HeadStatus.retired)
        .execution_options(synchronize_session=False)
    )
    if changed.rowcount != 1:
        raise errors.HeadStatusConflict(f"version {head.version} changed status concurrently")
    return _record(db, head, HeadAction.retire, HeadStatus.in_service, HeadStatus.retired, actor, reason)


def list_head_events(db: Session, speaker_id: uuid.UUID) -> list[HeadEvent]:
    """The speaker's manual head changes, newest first."""
    return list(
        db.scalars(
            select(HeadEvent)
            .where(HeadEvent.speaker_id == speaker_id)
            .order_by(HeadEvent.created_at.desc(), HeadEvent.id)
        )
    )
