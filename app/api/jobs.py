"""/v1/jobs/{id}: follow, cancel, and read the evaluation report of an adaptation job."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter

from app import errors
from app.api.deps import DbSession, Store
from app.api.views import job_out
from app.error_handlers import error_responses
from app.schemas import JobOut
from app.security import CurrentTenant
from app.services import jobs as job_service
from storage.errors import ObjectNotFound

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get("/{job_id}", responses=error_responses(errors.JobNotFound))
def get_job(job_id: uuid.UUID, tenant: CurrentTenant, db: DbSession) -> JobOut:
    """State, progress (0..1), step and loss while training, timestamps, error, the head and its evaluation."""
    return job_out(job_service.get_job(db, tenant.id, job_id))


@router.post("/{job_id}/cancel", responses=error_responses(errors.JobNotFound, errors.JobNotCancellable))
def cancel_job(job_id: uuid.UUID, tenant: CurrentTenant, db: DbSession) -> JobOut:
    """queued, training or evaluating -> cancelled; a finished job answers 409."""
    job = job_service.get_job(db, tenant.id, job_id)
    job_service.cancel(db, job)
    db.commit()
    return job_out(job)


@router.get("/{job_id}/report", responses=error_responses(errors.JobNotFound, errors.ReportNotFound))
def get_report(job_id: uuid.UUID, tenant: CurrentTenant, db: DbSession, store: Store) -> dict[str, Any]:
    """The evaluation's per-utterance hypotheses and errors for the base model, the head in service and the
    candidate, with the gate's settings and decision."""
    job = job_service.get_job(db, tenant.id, job_id)
    if job.evaluation is None or not job.evaluation.report_key:
        raise errors.ReportNotFound()
    try:
        return json.loads(store.get(job.evaluation.report_key))
    except ObjectNotFound as exc:
        raise errors.ReportNotFound() from exc
