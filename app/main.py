"""The FastAPI application factory (``uvicorn --factory app.main:create_app``)."""

from __future__ import annotations

from fastapi import FastAPI

from app import errors
from app.api import adaptations, foundation, health, heads, jobs, speakers, transcriptions, utterances
from app.api.uploads import MULTIPART_OVERHEAD, BodySizeLimit
from app.container import Services, build_services
from app.settings import Settings, get_settings

_V1_ERRORS = errors.error_responses(errors.Unauthorized)
_V1_ERRORS[422] = {"model": errors.ErrorResponse, "description": "Error codes: `validation_error` and others"}


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """The API; ``services`` defaults to the real ones for ``settings`` (default: ``get_settings()``)."""
    if services is None:
        services = build_services(settings or get_settings())
    app = FastAPI(
        title="HRA speaker personalization",
        version="0.1.0",
        description=(
            "Enroll speakers, adapt a per-speaker head (Hierarchical Recurrent Adapters) on a frozen Whisper, "
            "gate it on held-out WER, and download or use it. Authenticate with `Authorization: Bearer <key>`. "
            'Errors: `{"error": {"code", "message"}}`.'
        ),
    )
    app.state.services = services
    errors.install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_body_bytes=services.settings.max_upload_bytes + MULTIPART_OVERHEAD)
    app.include_router(health.router)
    for module in (speakers, utterances, adaptations, jobs, heads, transcriptions, foundation):
        app.include_router(module.router, responses=_V1_ERRORS)
    return app
