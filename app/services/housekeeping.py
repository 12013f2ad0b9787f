"""Housekeeping: what crashes and races leave behind, removed once it is old enough to be surely abandoned.

* **Orphan objects** (``sweep_orphan_objects``): an object under ``tenants/`` that no row refers to
  (``utterances.object_key``, ``heads.object_key``, ``evaluations.report_key``). Objects are written before the
  row that refers to them commits (an upload, a trained head, an evaluation report) and deleted after the row's
  deletion commits (``app.services.erasure``), so a process killed in between, a failed best-effort delete, or a
  run whose job was taken over leaves one. Only objects last written more than ``orphan_grace_seconds`` ago are
  deleted: a younger one may belong to a row that is about to commit. The local store's temporary files of writes
  that never finished (a process killed inside ``put``) go by the same rule.
* **Interrupted speaker erasures** (``finish_interrupted_erasures``): a speaker tombstoned (``deleted_at``) more
  than ``erasure_resume_after_seconds`` ago whose rows remain (the DELETE's process died, or the store was down):
  ``app.services.erasure.erase_speaker`` is resumable, and is run again here.

``housekeep`` does both (erasures first: their objects are then gone with their rows). Each worker's reaper thread
calls it every ``housekeeping_interval_seconds`` (``workers.reaper``); ``hra objects sweep`` runs it by hand.
Concurrent passes (several workers) are harmless: every step is idempotent.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select

from app.container import Services
from app.services.erasure import erase_speaker
from storage.models import AdaptationJob, Evaluation, Head, Speaker, Utterance, utcnow
from storage.objects import ObjectInfo

logger = logging.getLogger(__name__)

TENANTS_PREFIX = "tenants/"
# The key layout of storage.objects.keys: tenants/<tenant>/speakers/<speaker>/<kind>/<file>.
_SPEAKER_KEY = re.compile(
    r"^tenants/(?P<tenant>[0-9a-f-]{36})/speakers/(?P<speaker>[0-9a-f-]{36})/(?:utterances|heads|reports)/[^/]+$"
)
BATCH_KEYS = 1000  # old objects resolved against the database at a time
ERASURES_PER_PASS = 100


@dataclass
class SweepReport:
    listed: int = 0  # objects under tenants/
    recent: int = 0  # written within the grace period: not considered (may belong to a row about to commit)
    referenced: int = 0  # older, and a row refers to it
    unrecognized: int = 0  # not of the service's key layout: left alone
    orphans: list[str] = field(default_factory=list)  # older, and no row refers to it: deleted (unless a dry run)
    temporaries: int = 0  # stale temporary files of interrupted writes (local store), removed
    dry_run: bool = False

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (
            f"objects listed: {self.listed}, recent (kept): {self.recent}, referenced: {self.referenced}, "
            f"unrecognized (kept): {self.unrecognized}, orphans {verb}: {len(self.orphans)}, "
            f"stale temporary files {verb}: {self.temporaries}"
        )


@dataclass
class HousekeepingReport:
    erasures_finished: list[uuid.UUID]
    sweep: SweepReport

    def summary(self) -> str:
        return f"interrupted speaker erasures finished: {len(self.erasures_finished)}; {self.sweep.summary()}"


def _referenced_keys(services: Services, speaker_ids: Iterable[uuid.UUID]) -> set[str]:
    """Every object key a row of these speakers refers to."""
    ids = list(set(speaker_ids))
    if not ids:
        return set()
    with services.session_factory() as db:
        keys = set(db.scalars(select(Utterance.object_key).where(Utterance.speaker_id.in_(ids))))
        keys.update(db.scalars(select(Head.object_key).where(Head.speaker_id.in_(ids))))
        keys.update(
            key
            for key in db.scalars(
                select(Evaluation.report_key)
                .join(AdaptationJob, AdaptationJob.id == Evaluation.job_id)
                .where(AdaptationJob.speaker_id.in_(ids), Evaluation.report_key.is_not(None))
            )
            if key
        )
    return keys


def sweep_orphan_objects(
    services: Services, grace_s: float | None = None, *, now: datetime | None = None, dry_run: bool = False
) -> SweepReport:
    """Delete the objects under ``tenants/`` that no row refers to and that were last written more than
    ``grace_s`` (default ``settings.orphan_grace_seconds``) before ``now``. See the module docstring."""
    store = services.object_store
    grace = services.settings.orphan_grace_seconds if grace_s is None else grace_s
    cutoff = (now or utcnow()) - timedelta(seconds=max(0.0, grace))
    report = SweepReport(dry_run=dry_run)
    batch: list[tuple[ObjectInfo, uuid.UUID]] = []

    def resolve() -> None:
        referenced = _referenced_keys(services, (speaker for _, speaker in batch))
        for info, _ in batch:
            if info.key in referenced:
                report.referenced += 1
                continue
            report.orphans.append(info.key)
            if not dry_run:
                store.delete(info.key)
        batch.clear()

    for info in store.list_objects(TENANTS_PREFIX):
        report.listed += 1
        match = _SPEAKER_KEY.match(info.key)
        if match is None:
            report.unrecognized += 1
            continue
        if info.modified >= cutoff:
            report.recent += 1
            continue
        batch.append((info, uuid.UUID(match["speaker"])))
        if len(batch) >= BATCH_KEYS:
            resolve()
    resolve()
    remove_temporaries = getattr(store, "remove_stale_temporaries", None)
    if remove_temporaries is not None and not dry_run:
        report.temporaries = remove_temporaries(TENANTS_PREFIX, cutoff)
    if report.orphans or report.temporaries:
        logger.info("housekeeping: %s", report.summary())
    return report


def finish_interrupted_erasures(
    services: Services, older_than_s: float | None = None, *, now: datetime | None = None
) -> list[uuid.UUID]:
    """Run ``erase_speaker`` again for the speakers tombstoned more than ``older_than_s`` (default
    ``settings.erasure_resume_after_seconds``) ago; the ids of those finished (a failure is logged, and the next pass
    tries again)."""
    wait = services.settings.erasure_resume_after_seconds if older_than_s is None else older_than_s
    cutoff = (now or utcnow()) - timedelta(seconds=max(0.0, wait))
    with services.session_factory() as db:
        ids = list(
            db.scalars(
                select(Speaker.id)
                .where(Speaker.deleted_at.is_not(None), Speaker.deleted_at <= cutoff)
                .order_by(Speaker.deleted_at)
                .limit(ERASURES_PER_PASS)
            )
        )
    finished: list[uuid.UUID] = []
    for speaker_id in ids:
        with services.session_factory() as db:
            speaker = db.get(Speaker, speaker_id)
            if speaker is None or speaker.deleted_at is None:
                continue
            try:
                erase_speaker(db, services.object_store, speaker)
            except Exception:
                db.rollback()
                logger.exception("housekeeping: could not finish the erasure of speaker %s", speaker_id)
                continue
        finished.append(speaker_id)
        logger.info("housekeeping: finished the interrupted erasure of speaker %s", speaker_id)
    return finished


def housekeep(services: Services, *, now: datetime | None = None) -> HousekeepingReport:
    """One pass: interrupted erasures, then orphan objects (settings' delays)."""
    finished = finish_interrupted_erasures(services, now=now)
    return HousekeepingReport(finished, sweep_orphan_objects(services, now=now))
