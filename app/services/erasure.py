"""Erasure: deleting an utterance, a head version or a whole speaker, in an order that survives crashes and races.

Rows and objects cannot change in one transaction, so each erasure orders them by what a crash in between leaves:

* an **utterance** or a **head**: the row first (with the lineage it changes, in one transaction), then its object.
  A crash in between leaves an object no row points to (the orphan sweeper's), never a row whose audio or artifact
  is gone. An eval utterance's transcript is also taken out of the evaluation reports that quote it, before the
  commit (a failure there fails the request and changes nothing).
* a **speaker** (``erase_speaker``): 1. the tombstone, and its active job cancelled (committed): from here every
  route treats the speaker as gone, and no upload or job can be added (``speakers.lock_live_speaker``);
  2. every object under its prefix; 3. every row (jobs, evaluations, heads, events, utterances, the speaker),
  committed; 4. the prefix once more, for an object a straggler (a worker finishing, an upload that lost the race)
  wrote after step 2. A crash anywhere before step 3's commit leaves the tombstoned row, and a retried DELETE
  finds it and finishes; objects left by a crash after it are the sweeper's.

``erase_speaker`` commits (each step must be durable before the next); the other two flush like any service.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.ml import MLService
from app.services import jobs
from app.services.speakers import delete_speaker_rows, tombstone_speaker
from storage.errors import ObjectNotFound
from storage.models import AdaptationJob, Evaluation, Head, Speaker, Split, Utterance
from storage.objects import ObjectStore, speaker_prefix

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UtteranceErasure:
    utterance_id: uuid.UUID
    lineage: jobs.Lineage
    reports_scrubbed: int
    object_key: str


def erase_utterance(db: Session, store: ObjectStore, speaker: Speaker, utterance: Utterance) -> UtteranceErasure:
    """Delete the utterance's row, withdraw the heads that carry it (``jobs.withdraw_heads_trained_on``) and take it
    out of the reports that quote it. Flushes; the caller commits, then calls ``delete_object``."""
    lineage = jobs.withdraw_heads_trained_on(db, speaker.id, utterance.id)
    scrubbed = _scrub_reports(db, store, speaker.id, utterance) if utterance.split is Split.eval else 0
    db.execute(delete(Utterance).where(Utterance.id == utterance.id).execution_options(synchronize_session=False))
    db.flush()
    db.expunge(utterance)
    return UtteranceErasure(utterance.id, lineage, scrubbed, utterance.object_key)


def _scrub_reports(db: Session, store: ObjectStore, speaker_id: uuid.UUID, utterance: Utterance) -> int:
    """Rewrite the speaker's evaluation reports without the utterance's row (reference text and hypotheses). Only
    evaluations made after the upload can quote it. The aggregate numbers stay: they identify no one."""
    keys = db.scalars(
        select(Evaluation.report_key)
        .join(AdaptationJob, AdaptationJob.id == Evaluation.job_id)
        .where(
            AdaptationJob.speaker_id == speaker_id,
            Evaluation.report_key.is_not(None),
            Evaluation.created_at >= utterance.created_at,
        )
    ).all()
    scrubbed = 0
    for key in keys:
        try:
            report = json.loads(store.get(key))
        except ObjectNotFound:
            continue
        rows = report.get("utterances") or []
        kept = [row for row in rows if row.get("utterance_id") != str(utterance.id)]
        if len(kept) == len(rows):
            continue
        report["utterances"] = kept
        report["erased_utterances"] = int(report.get("erased_utterances", 0)) + len(rows) - len(kept)
        store.put(key, json.dumps(report, indent=1).encode(), "application/json")
        scrubbed += 1
    return scrubbed


def forget_heads(ml: MLService, head_ids: list[uuid.UUID]) -> None:
    """Drop erased or withdrawn heads from this process's serving cache (parsed weights in memory)."""
    for head_id in head_ids:
        ml.evict(head_id)


def delete_object(store: ObjectStore, key: str) -> None:
    """After the row's commit: best effort (what a failure leaves is an orphan for the sweeper, and the row, which
    the client asked to delete, is gone either way)."""
    try:
        store.delete(key)
    except Exception as exc:  # noqa: BLE001 - any failure leaves the same orphan
        logger.warning("object %s outlived its row (the orphan sweeper removes it): %s", key, exc)


def erase_head(db: Session, head_id: uuid.UUID, speaker_id: uuid.UUID) -> tuple[str, jobs.Lineage]:
    """Delete the head's row (``jobs.delete_head``: 409 for a running job's candidate, fallback if it was in
    service); its artifact's key, for ``delete_object`` after the caller's commit. Flushes."""
    head, lineage = jobs.delete_head(db, head_id, speaker_id)
    return head.object_key, lineage


def erase_speaker(db: Session, store: ObjectStore, speaker: Speaker) -> list[uuid.UUID]:
    """Erase everything of the speaker (the module docstring's four steps); the ids of the heads it had (for the
    serving cache to forget). Commits; resumable: call it again with the tombstoned speaker
    (``get_speaker(..., include_deleted=True)``) after any failure."""
    speaker_id, prefix = speaker.id, speaker_prefix(speaker.tenant_id, speaker.id)
    db.expunge(speaker)
    # 1. Cancel the active job, tombstone (waits for an upload or a job creation holding the speaker's lock), and
    # cancel a job created meanwhile: job rows before the speaker's, the order the gate's decision locks them in.
    jobs.cancel_active_jobs(db, speaker_id, "the speaker was deleted")
    tombstone_speaker(db, speaker_id)
    jobs.cancel_active_jobs(db, speaker_id, "the speaker was deleted")
    db.commit()
    # 2. Objects: audio, head artifacts, reports.
    store.delete_prefix(prefix)
    # 3. Rows, children first (the database's ON DELETE CASCADE would do it too; explicit is clearer).
    head_ids = list(db.scalars(select(Head.id).where(Head.speaker_id == speaker_id)))
    jobs.delete_jobs_and_heads(db, speaker_id)
    delete_speaker_rows(db, speaker_id)
    db.commit()
    # 4. Stragglers written after step 2; a failure here leaves orphans for the sweeper, not rows.
    try:
        store.delete_prefix(prefix)
    except Exception as exc:  # noqa: BLE001
        logger.warning("speaker %s: objects written during its erasure remain for the sweeper: %s", speaker_id, exc)
    return head_ids
