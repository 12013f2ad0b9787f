"""Head versions: list per speaker, metadata, and the artifact (safetensors, streamed from the object store)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status
from fastapi.responses import StreamingResponse

from app import errors
from app.api.deps import ML, DbSession, Store
from app.api.views import heads_out
from app.error_handlers import error_responses
from app.schemas import HeadList, HeadOut
from app.security import CurrentTenant
from app.services import erasure
from app.services import heads as head_service
from app.services import speakers as speaker_service
from storage.errors import ObjectNotFound

router = APIRouter(tags=["heads"])


@router.get("/v1/speakers/{speaker_id}/heads", responses=error_responses(errors.SpeakerNotFound))
def list_heads(speaker_id: uuid.UUID, tenant: CurrentTenant, db: DbSession) -> HeadList:
    """Every head version of the speaker (oldest first) with its status and evaluation."""
    speaker = speaker_service.get_speaker(db, tenant.id, speaker_id)
    return HeadList(items=heads_out(db, head_service.list_heads(db, speaker.id)))


@router.get("/v1/heads/{head_id}", responses=error_responses(errors.HeadNotFound))
def get_head(head_id: uuid.UUID, tenant: CurrentTenant, db: DbSession) -> HeadOut:
    head = head_service.get_head(db, tenant.id, head_id)
    return heads_out(db, [head])[0]


@router.delete(
    "/v1/heads/{head_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(errors.HeadNotFound, errors.HeadInUse),
)
def delete_head(head_id: uuid.UUID, tenant: CurrentTenant, db: DbSession, store: Store, ml: ML) -> Response:
    """Delete one head version: its row, then its artifact. Deleting the version in service puts back the newest
    earlier version that was in service (and carries no erased data), else the speaker gets the base model (see
    ``GET /v1/speakers/{id}``). The candidate of a running job is refused (409 ``head_in_use``): cancel the job."""
    head = head_service.get_head(db, tenant.id, head_id)
    key, _ = erasure.erase_head(db, head.id, head.speaker_id)
    db.commit()
    erasure.forget_heads(ml, [head.id])
    erasure.delete_object(store, key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/v1/heads/{head_id}/artifact",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The head's safetensors file."},
        **error_responses(errors.HeadNotFound, errors.ArtifactNotFound, errors.ObjectStoreUnavailable),
    },
)
def download_head(head_id: uuid.UUID, tenant: CurrentTenant, db: DbSession, store: Store) -> StreamingResponse:
    """The safetensors bytes; load them with ``hra.adapter.artifacts.head_from_bytes`` and the same foundation."""
    head = head_service.get_head(db, tenant.id, head_id)
    try:
        size = store.stat(head.object_key)
        chunks = store.stream(head.object_key)
    except ObjectNotFound as exc:
        raise errors.ArtifactNotFound() from exc
    filename = f"head-{head.speaker_id}-v{head.version}.safetensors"
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{filename}"',
            "ETag": f'"{head.sha256}"',
            "X-Content-SHA256": head.sha256,
        },
    )
