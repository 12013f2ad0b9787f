"""/v1/foundation: the shared backbone and controller a downloaded head needs to be used outside the service."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response

from app import errors
from app.api.deps import ML
from app.error_handlers import error_responses
from app.ml import ModelUnavailable
from app.schemas import FoundationOut
from app.security import CurrentTenant

router = APIRouter(prefix="/v1/foundation", tags=["foundation"])


@router.get("", responses=error_responses(errors.FoundationUnavailable))
def describe_foundation(tenant: CurrentTenant, ml: ML) -> FoundationOut:
    """Backbone and controller: names, fingerprints, configs, sizes; and the head types they accept."""
    try:
        return FoundationOut.model_validate(ml.describe_foundation())
    except ModelUnavailable as exc:
        raise errors.FoundationUnavailable(str(exc)) from exc


@router.get(
    "/{part}/artifact",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "safetensors weights"},
        **error_responses(errors.FoundationUnavailable),
    },
)
def download_foundation_part(part: Literal["backbone", "controller"], tenant: CurrentTenant, ml: ML) -> Response:
    try:
        data = ml.foundation_artifact(part)
    except ModelUnavailable as exc:
        raise errors.FoundationUnavailable(str(exc)) from exc
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{part}.safetensors"'},
    )
