"""POST /v1/speakers/{id}/adaptations: start an adaptation job (202)."""

from __future__ import annotations

import logging
import uuid

from fastapi import APIRouter, status

from app import errors
from app.api.deps import AppSettings, DbSession, Queue
from app.api.views import job_out
from app.error_handlers import error_responses
from app.schemas import AdaptationCreate, JobOut
from app.security import CurrentTenant
from app.services import jobs as job_service
from app.services import speakers as speaker_service
from app.services.queue import QueueUnavailable
from storage.models import ACTIVE_JOB_STATES, JobState

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/speakers/{speaker_id}/adaptations", tags=["adaptations"])


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(
        errors.MalformedBody,
        errors.SpeakerNotFound,
        errors.JobAlreadyActive,
        errors.NotEnoughData,
        errors.InvalidBudget,
        errors.QuotaExceeded,
        errors.BrokerUnavailable,
    ),
)
def start_adaptation(
    speaker_id: uuid.UUID,
    body: AdaptationCreate,
    tenant: CurrentTenant,
    db: DbSession,
    queue: Queue,
    settings: AppSettings,
) -> JobOut:
    """Queue the training of a new head version; follow it at ``GET /v1/jobs/{id}``.

    The job row is committed before the task is sent, so a worker always finds it. If the broker cannot be
    reached the job is marked failed (freeing the speaker) and the request answers 503.
    """
    speaker = speaker_service.get_speaker(db, tenant.id, speaker_id)
    job = job_service.create_job(db, settings, speaker, body.head_type, body.max_train_seconds, body.max_epochs)
    db.commit()
    try:
        queue.enqueue_training(job.id)
    except QueueUnavailable as exc:
        logger.error("job %s: could not enqueue: %s", job.id, exc)
        job_service.transition(db, job.id, ACTIVE_JOB_STATES, JobState.failed, error=f"could not be queued: {exc}")
        db.commit()
        raise errors.BrokerUnavailable() from exc
    return job_out(job)
