"""The FastAPI application factory (``uvicorn --factory app.main:create_app``)."""

from __future__ import annotations

from fastapi import FastAPI

from app import errors
from app.api import adaptations, foundation, health, heads, jobs, speakers, transcriptions, utterances
from app.api import openai_audio
from app.api import head_versions, job_events, web
from app.api.uploads import MULTIPART_OVERHEAD, TRANSCRIPTION_PATHS, BodySizeLimit
from app.container import Services, build_services
from app.error_handlers import ErrorResponse, error_responses, install_error_handlers
from app.metrics import install_metrics
from app.middleware import RequestGuard
from app.settings import Settings, get_settings

_V1_ERRORS = error_responses(errors.Unauthorized)
_V1_ERRORS[422] = {"model": ErrorResponse, "description": "Error codes: `validation_error` and others"}


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
    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimit,
        max_body_bytes=services.settings.max_upload_bytes + MULTIPART_OVERHEAD,
        path_limits=[(TRANSCRIPTION_PATHS, services.settings.max_transcription_upload_bytes + MULTIPART_OVERHEAD)],
    )
    # Outside BodySizeLimit: no body is read, nor its size considered, before the key is checked; the guard also
    # counts bodies as they stream (chunked ones declare no length).
    app.add_middleware(RequestGuard, services=services)
    # After BodySizeLimit, so that the latency middleware is outside it and also times the 413s it answers.
    # GET /metrics is unauthenticated (for Prometheus): firewall the API port's /metrics from the internet.
    install_metrics(app, services)
    app.include_router(health.router)
    for module in (speakers, utterances, adaptations, jobs, heads, transcriptions, foundation):
        app.include_router(module.router, responses=_V1_ERRORS)
    app.include_router(openai_audio.router)  # OpenAI's API shape and error shape
    for module in (head_versions, job_events):  # rollback of head versions; a job's live events
        app.include_router(module.router, responses=_V1_ERRORS)
    app.include_router(web.router)  # the enrollment web app at / (app/web/)
    return app
