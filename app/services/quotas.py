"""Quotas per tenant: limits (settings' defaults, per-tenant overrides), usage, and the checks the services make
where rows are created.

    speakers                 speakers of the tenant (tombstoned ones no longer count)
    utterances_per_speaker   utterances of one speaker
    stored_bytes             stored audio (``utterances.size_bytes``) plus head artifacts (``heads.size_bytes``)
    active_jobs              the tenant's jobs that are queued, training or evaluating
    train_seconds_per_day    sum of the ``max_train_seconds`` budgets of the jobs created in the last 24 h
                             (a job that ended before its training started, cancelled while queued or never
                             queued, does not count); a budget counts in full when the job is created

A check raises ``app.errors.QuotaExceeded`` (429 ``quota_exceeded``, with the quota's name, limit and usage).

Concurrency: every check that admits a new row first takes the tenant's lock (``lock_tenant``: the tenant row
``FOR NO KEY UPDATE`` on Postgres; on SQLite a no-op write that takes the database's write lock), counts, and the
caller inserts and commits while holding it. Two requests of one tenant cannot both see the last free unit, so the
counted quotas are exact on both backends. The lock is held only from the check to the commit (an upload takes it
after its audio is decoded and stored). What remains approximate: head artifacts are written by the workers
without a check, so stored bytes can exceed the limit by the heads of the jobs already admitted (at most
``active_jobs`` heads, ~0.1-1 MB each); a new job is refused once the limit is reached.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, not_, select, update
from sqlalchemy.orm import Session

from app.errors import QuotaExceeded
from app.settings import Settings
from storage.models import (
    TERMINAL_JOB_STATES,
    AdaptationJob,
    Head,
    Speaker,
    Tenant,
    Utterance,
    utcnow,
)

WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class Limits:
    speakers: int
    utterances_per_speaker: int
    stored_bytes: int
    active_jobs: int
    train_seconds_per_day: float


QUOTA_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Limits))


def default_limits(settings: Settings) -> Limits:
    return Limits(**{name: getattr(settings, f"quota_{name}") for name in QUOTA_NAMES})


def clean_overrides(values: dict[str, Any] | None) -> dict[str, int | float]:
    """Known quota names with non-negative numbers; anything else is dropped (a hand-edited row cannot break
    the checks)."""
    out: dict[str, int | float] = {}
    for name, value in (values or {}).items():
        if name not in QUOTA_NAMES or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value) or value < 0:
            continue
        out[name] = float(value) if name == "train_seconds_per_day" else int(value)
    return out


def limits_for(db: Session, settings: Settings, tenant_id: uuid.UUID) -> Limits:
    """The tenant's limits: its overrides (``tenants.quotas``) over the settings' defaults."""
    overrides = clean_overrides(db.scalar(select(Tenant.quotas).where(Tenant.id == tenant_id)))
    return Limits(**{**asdict(default_limits(settings)), **overrides})


def lock_tenant(db: Session, tenant_id: uuid.UUID) -> None:
    """Serialize the tenant's quota-checked creations until the caller's transaction ends."""
    if db.get_bind().dialect.name == "postgresql":
        db.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True))
    else:  # SQLite: the driver opens the transaction at the first write, which takes the database's write lock
        db.execute(
            update(Tenant).where(Tenant.id == tenant_id).values(name=Tenant.name),
            execution_options={"synchronize_session": False},
        )


# ---- usage -----------------------------------------------------------------------------------------------------


def speaker_count(db: Session, tenant_id: uuid.UUID) -> int:
    live = (Speaker.tenant_id == tenant_id, Speaker.deleted_at.is_(None))
    return int(db.scalar(select(func.count()).select_from(Speaker).where(*live)) or 0)


def utterance_count(db: Session, speaker_id: uuid.UUID) -> int:
    return int(db.scalar(select(func.count()).select_from(Utterance).where(Utterance.speaker_id == speaker_id)) or 0)


def max_utterances_per_speaker(db: Session, tenant_id: uuid.UUID) -> int:
    per_speaker = (
        select(func.count().label("n"))
        .select_from(Utterance)
        .join(Speaker, Speaker.id == Utterance.speaker_id)
        .where(Speaker.tenant_id == tenant_id)
        .group_by(Utterance.speaker_id)
        .subquery()
    )
    return int(db.scalar(select(func.coalesce(func.max(per_speaker.c.n), 0))) or 0)


def stored_bytes(db: Session, tenant_id: uuid.UUID) -> int:
    speakers = select(Speaker.id).where(Speaker.tenant_id == tenant_id)
    audio = db.scalar(
        select(func.coalesce(func.sum(Utterance.size_bytes), 0)).where(Utterance.speaker_id.in_(speakers))
    )
    heads = db.scalar(select(func.coalesce(func.sum(Head.size_bytes), 0)).where(Head.speaker_id.in_(speakers)))
    return int(audio or 0) + int(heads or 0)


def active_jobs(db: Session, tenant_id: uuid.UUID) -> int:
    query = (
        select(func.count())
        .select_from(AdaptationJob)
        .join(Speaker, Speaker.id == AdaptationJob.speaker_id)
        .where(Speaker.tenant_id == tenant_id, AdaptationJob.active_speaker_id.is_not(None))
    )
    return int(db.scalar(query) or 0)


def _budgets_in_window(db: Session, tenant_id: uuid.UUID, now: datetime) -> list[tuple[datetime, float]]:
    """(created_at, max_train_seconds) of the tenant's jobs that count against the daily budget, oldest first."""
    never_trained = and_(AdaptationJob.state.in_(TERMINAL_JOB_STATES), AdaptationJob.started_at.is_(None))
    rows = db.execute(
        select(AdaptationJob.created_at, AdaptationJob.budget["max_train_seconds"].as_float())
        .join(Speaker, Speaker.id == AdaptationJob.speaker_id)
        .where(Speaker.tenant_id == tenant_id, AdaptationJob.created_at > now - WINDOW, not_(never_trained))
        .order_by(AdaptationJob.created_at)
    ).all()
    return [(created, float(seconds or 0.0)) for created, seconds in rows]


def train_seconds_used(db: Session, tenant_id: uuid.UUID, now: datetime | None = None) -> float:
    return sum(seconds for _, seconds in _budgets_in_window(db, tenant_id, now or utcnow()))


def usage(db: Session, tenant_id: uuid.UUID) -> dict[str, int | float]:
    """The tenant's usage of each quota (``utterances_per_speaker``: its speaker with the most)."""
    return {
        "speakers": speaker_count(db, tenant_id),
        "utterances_per_speaker": max_utterances_per_speaker(db, tenant_id),
        "stored_bytes": stored_bytes(db, tenant_id),
        "active_jobs": active_jobs(db, tenant_id),
        "train_seconds_per_day": train_seconds_used(db, tenant_id),
    }


# ---- checks (each takes the tenant's lock; the caller inserts and commits while holding it) ---------------------


def check_speaker_added(db: Session, settings: Settings, tenant_id: uuid.UUID) -> None:
    """Call after the new speaker's row is flushed (it is counted); on ``QuotaExceeded`` the caller rolls back.
    Counting after the insert keeps the tenant's lock out of the duplicate ``external_id`` race."""
    lock_tenant(db, tenant_id)
    limit = limits_for(db, settings, tenant_id).speakers
    used = speaker_count(db, tenant_id) - 1  # without the one being added
    if used + 1 > limit:
        raise QuotaExceeded("speakers", limit, used, f"speaker quota reached: {used} of {limit} speakers")


def check_new_utterance(
    db: Session, settings: Settings, speaker: Speaker, size_bytes: int = 0, *, lock: bool = True
) -> None:
    """``size_bytes``: what the new utterance will store (0 for the early check, before the audio is decoded:
    then only a tenant already at its limit is refused). ``lock=False`` for that early check."""
    if lock:
        lock_tenant(db, speaker.tenant_id)
    limits = limits_for(db, settings, speaker.tenant_id)
    count = utterance_count(db, speaker.id)
    if count + 1 > limits.utterances_per_speaker:
        raise QuotaExceeded(
            "utterances_per_speaker",
            limits.utterances_per_speaker,
            count,
            f"utterance quota reached: this speaker has {count} of {limits.utterances_per_speaker} utterances",
        )
    _check_bytes(db, limits, speaker.tenant_id, size_bytes)


def _check_bytes(db: Session, limits: Limits, tenant_id: uuid.UUID, adding: int) -> None:
    used = stored_bytes(db, tenant_id)
    if used + adding > limits.stored_bytes or used >= limits.stored_bytes:
        raise QuotaExceeded(
            "stored_bytes",
            limits.stored_bytes,
            used,
            f"storage quota reached: {used} of {limits.stored_bytes} bytes stored"
            + (f", this upload needs {adding} more" if adding else ""),
        )


def check_new_job(db: Session, settings: Settings, tenant_id: uuid.UUID, train_seconds: float) -> None:
    """A job that may train for ``train_seconds`` (its budget): active jobs, the daily training budget, and
    stored bytes (the job will store a head; refused once the limit is reached)."""
    lock_tenant(db, tenant_id)
    limits = limits_for(db, settings, tenant_id)
    active = active_jobs(db, tenant_id)
    if active + 1 > limits.active_jobs:
        raise QuotaExceeded(
            "active_jobs",
            limits.active_jobs,
            active,
            f"active job quota reached: {active} of {limits.active_jobs} jobs are queued, training or evaluating",
        )
    now = utcnow()
    window = _budgets_in_window(db, tenant_id, now)
    used = sum(seconds for _, seconds in window)
    limit = limits.train_seconds_per_day
    if used + train_seconds > limit:
        raise QuotaExceeded(
            "train_seconds_per_day",
            limit,
            used,
            f"daily training budget exceeded: {used:g} of {limit:g} s used in the last 24 h, this job asks for "
            f"{train_seconds:g} s",
            retry_after_s=_seconds_until_fits(window, train_seconds, limit, now),
        )
    _check_bytes(db, limits, tenant_id, 0)


def _seconds_until_fits(
    window: list[tuple[datetime, float]], wanted: float, limit: float, now: datetime
) -> float | None:
    """When enough of the window's budgets will have aged out for ``wanted`` to fit; None when it never will."""
    if wanted > limit:
        return None
    remaining = sum(seconds for _, seconds in window)
    for created, seconds in window:
        remaining -= seconds
        if remaining + wanted <= limit:
            return max(1.0, (created + WINDOW - now).total_seconds())
    return None


# ---- overrides (the CLI) ---------------------------------------------------------------------------------------


def set_overrides(db: Session, tenant: Tenant, changes: dict[str, int | float | None]) -> dict[str, int | float]:
    """Apply ``changes`` to the tenant's overrides (``None``: back to the default); flushes; returns them."""
    unknown = set(changes) - set(QUOTA_NAMES)
    if unknown:
        raise ValueError(f"unknown quota(s): {', '.join(sorted(unknown))}")
    current = clean_overrides(tenant.quotas)
    for name, value in changes.items():
        if value is None:
            current.pop(name, None)
        elif isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a non-negative number, not {value!r}")
        else:
            current[name] = float(value) if name == "train_seconds_per_day" else int(value)
    tenant.quotas = dict(current) or None  # a new object: in-place changes of a JSON column are not tracked
    db.flush()
    return current


def describe(db: Session, settings: Settings, tenant: Tenant) -> dict[str, Any]:
    """Each quota's limit, where it comes from (override or default) and the tenant's usage."""
    overrides = clean_overrides(tenant.quotas)
    limits = asdict(limits_for(db, settings, tenant.id))
    used = usage(db, tenant.id)
    return {
        "tenant": tenant.name,
        "id": str(tenant.id),
        "quotas": {
            name: {
                "limit": limits[name],
                "source": "override" if name in overrides else "default",
                "usage": used[name],
            }
            for name in QUOTA_NAMES
        },
    }
