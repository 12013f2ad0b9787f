"""Domain errors with their HTTP status and a stable machine-readable code, and the handlers that render them.

Every error response has one shape, ``{"error": {"code": ..., "message": ...}}`` (an error's ``details`` add fields
next to them: a 429 ``quota_exceeded`` carries ``quota``, ``limit`` and ``usage``): the domain errors below,
FastAPI's request validation errors (422, code ``validation_error``), Starlette's own 404/405 and anything else
that escapes a route (500, ``internal_error``; never for a client's mistake).

The OpenAI-compatible routes (``/v1/audio/...``, ``/v1/models``) answer in OpenAI's error shape instead,
``{"error": {"message", "type", "param", "code"}}`` (a superset of ours: same ``code`` and ``message``), with
OpenAI's statuses: a request it cannot process is 400 (our 422s), an unknown or bad key 401 with code
``invalid_api_key``, an unknown model 404 ``model_not_found``; ``type`` is ``invalid_request_error`` below 500 and
``server_error`` from 500 on. See ``render_error``.

Errors of the layers below (the object store's ``ObjectStoreUnavailable``, the database's ``OperationalError``)
are translated here, by the installed handlers, and nowhere else: routes and services let them propagate.
"""

from __future__ import annotations

import logging
import math
from typing import Any, NamedTuple

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from storage.errors import ObjectStoreUnavailable

logger = logging.getLogger(__name__)


class AppError(Exception):
    """Base class: subclasses set ``status_code``, ``code`` and a default ``message``."""

    status_code: int = 500
    code: str = "internal_error"
    message: str = "internal error"
    param: str | None = None  # the request parameter at fault (OpenAI's error shape reports it)
    # Machine-readable fields added to the error object next to ``code`` and ``message`` (our shape only).
    details: dict[str, Any] | None = None

    def __init__(
        self, message: str | None = None, *, headers: dict[str, str] | None = None, param: str | None = None
    ) -> None:
        self.message = message or self.message
        self.headers = headers
        self.param = param or self.param
        super().__init__(self.message)


# ---- 400-level: the client's mistake ----------------------------------------------------------------------


class InvalidRequest(AppError):
    status_code = 400
    code = "invalid_request"
    message = "invalid request"


class MalformedBody(InvalidRequest):
    """A body that cannot be parsed at all (JSON that is not UTF-8, a broken multipart form): the framework's own
    400, rendered by ``_http_error``. Listed in ``responses=`` of the routes that read a body."""

    code = "bad_request"
    message = "there was an error parsing the body"


class UnsupportedLanguage(InvalidRequest):
    code = "unsupported_language"
    message = "only English is supported: the model is Whisper tiny.en"
    param = "language"


class UnsupportedValue(InvalidRequest):
    code = "unsupported_value"


class Unauthorized(AppError):
    status_code = 401
    code = "unauthorized"
    message = "missing or invalid API key (send 'Authorization: Bearer <key>')"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class NotFound(AppError):
    status_code = 404
    code = "not_found"
    message = "not found"


class SpeakerNotFound(NotFound):
    code = "speaker_not_found"
    message = "speaker not found"


class JobNotFound(NotFound):
    code = "job_not_found"
    message = "adaptation job not found"


class HeadNotFound(NotFound):
    code = "head_not_found"
    message = "head not found"


class UtteranceNotFound(NotFound):
    code = "utterance_not_found"
    message = "utterance not found"


class ReportNotFound(NotFound):
    code = "report_not_found"
    message = "this job has no evaluation report"


class ModelNotFound(NotFound):
    code = "model_not_found"
    message = "model not found"
    param = "model"


class ArtifactNotFound(NotFound):
    code = "artifact_not_found"
    message = "the artifact is missing from the object store"


class Conflict(AppError):
    status_code = 409
    code = "conflict"
    message = "conflict"


class SpeakerExists(Conflict):
    code = "speaker_exists"
    message = "a speaker with this external_id already exists"


class JobAlreadyActive(Conflict):
    code = "job_already_active"
    message = "another adaptation job of this speaker is active"


class JobNotCancellable(Conflict):
    code = "job_not_cancellable"
    message = "the job has already finished"


class HeadNotUsable(Conflict):
    code = "head_not_usable"
    message = "this head does not fit the loaded foundation (trained for another backbone or controller)"


class HeadInUse(Conflict):
    code = "head_in_use"
    message = "this head is the candidate of a running job; cancel the job first"


class HeadStatusConflict(Conflict):
    code = "head_status_conflict"
    message = "the head version's status does not allow this change"


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"
    message = "request body too large"


class Unprocessable(AppError):
    status_code = 422
    code = "unprocessable"
    message = "unprocessable request"


class EmptyTranscript(Unprocessable):
    code = "empty_transcript"
    message = "transcript must contain at least one non-blank character"


class InvalidSplit(Unprocessable):
    code = "invalid_split"
    message = "split must be 'train' or 'eval'"


class InvalidAudio(Unprocessable):
    code = "invalid_audio"
    message = "the upload is not decodable audio (WAV, FLAC, OGG or MP3)"


class EmptyAudio(Unprocessable):
    code = "empty_audio"
    message = "the audio upload is empty"


class AudioTooShort(Unprocessable):
    code = "audio_too_short"


class AudioTooLong(Unprocessable):
    code = "audio_too_long"


class UnsupportedSampleRate(Unprocessable):
    code = "unsupported_sample_rate"
    message = "the audio's sample rate is outside the accepted range"


class TooManyChannels(Unprocessable):
    code = "too_many_channels"
    message = "the audio has more channels than accepted"


class NotEnoughData(Unprocessable):
    code = "not_enough_data"


class InvalidBudget(Unprocessable):
    code = "invalid_budget"


# ---- 429: a tenant's quota (app.services.quotas) ------------------------------------------------------------


class QuotaExceeded(AppError):
    """The error object also carries ``quota`` (its name), ``limit`` and ``usage`` (``QuotaErrorBody``)."""

    status_code = 429
    code = "quota_exceeded"
    message = "a quota of this tenant is exhausted"

    def __init__(
        self, quota: str, limit: float, usage: float, message: str | None = None, *, retry_after_s: float | None = None
    ) -> None:
        headers = None if retry_after_s is None else {"Retry-After": str(max(1, math.ceil(retry_after_s)))}
        super().__init__(message or f"quota {quota!r} exceeded: limit {limit:g}, usage {usage:g}", headers=headers)
        self.quota, self.limit, self.usage = quota, limit, usage
        self.details = {"quota": quota, "limit": limit, "usage": usage}




# ---- 500-level: ours ---------------------------------------------------------------------------------------


class ServiceUnavailable(AppError):
    status_code = 503
    code = "service_unavailable"
    message = "a backing service is unavailable; retry later"


class FoundationUnavailable(ServiceUnavailable):
    code = "foundation_unavailable"
    message = "the model foundation (backbone and controller) could not be loaded"


class BrokerUnavailable(ServiceUnavailable):
    code = "broker_unavailable"
    message = "the job could not be queued: the task broker is unreachable"


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"
    message = "the database is unreachable or busy; retry later"


# ---- response shape and handlers ---------------------------------------------------------------------------


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class QuotaErrorBody(ErrorBody):
    quota: str
    limit: float
    usage: float


class QuotaErrorResponse(BaseModel):
    """A 429 ``quota_exceeded``: which quota, its limit and the tenant's usage, as numbers."""

    error: QuotaErrorBody


# Errors whose responses carry more than ``ErrorBody`` (documented with their own model).
_RESPONSE_MODELS: dict[type[Exception], type[BaseModel]] = {QuotaExceeded: QuotaErrorResponse}


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorResponse(BaseModel):
    """OpenAI's error shape (the ``/v1/audio/...`` and ``/v1/models`` routes)."""

    error: OpenAIErrorBody


class Translation(NamedTuple):
    """How a handler renders an error of a layer below (which is no ``AppError``)."""

    status_code: int
    code: str
    message: str


STORE_DOWN = Translation(503, "object_store_unavailable", "the object store is unreachable")


def _status_and_code(err: type[Exception]) -> tuple[int, str]:
    if issubclass(err, AppError):
        return err.status_code, err.code
    if issubclass(err, ObjectStoreUnavailable):
        return STORE_DOWN.status_code, STORE_DOWN.code
    raise TypeError(f"no handler translates {err.__name__}")


def error_responses(*errors: type[Exception]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for a route: each status with the error codes it may carry. ``errors`` are
    ``AppError`` subclasses or errors of the layers below that the handlers translate (``ObjectStoreUnavailable``)."""
    by_status: dict[int, list[str]] = {}
    models: dict[int, type[BaseModel]] = {}
    for err in errors:
        status, code = _status_and_code(err)
        by_status.setdefault(status, []).append(code)
        if err in _RESPONSE_MODELS:
            models[status] = _RESPONSE_MODELS[err]
    return {
        status: {
            "model": models.get(status, ErrorResponse),
            "description": "Error codes: " + ", ".join(f"`{c}`" for c in codes),
        }
        for status, codes in sorted(by_status.items())
    }


def error_json(
    status_code: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    details: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    body.update({k: v for k, v in (details or {}).items() if k not in body})
    return JSONResponse({"error": body}, status_code=status_code, headers=headers)


# ---- OpenAI's error shape, on the OpenAI-compatible routes only --------------------------------------------

OPENAI_PATH_PREFIXES = ("/v1/audio/", "/v1/models")


def is_openai_path(path: str) -> bool:
    return any(path == p.rstrip("/") or path.startswith(p.rstrip("/") + "/") for p in OPENAI_PATH_PREFIXES)


def openai_status_and_code(status_code: int, code: str) -> tuple[int, str]:
    """Our status and code as OpenAI's API would give them: 422 -> 400, a 401's code ``invalid_api_key``."""
    if status_code == 422:
        return 400, code
    if status_code == 401:
        return 401, "invalid_api_key"
    return status_code, code


def openai_error_body(status_code: int, code: str, message: str, param: str | None = None) -> tuple[int, dict]:
    """(OpenAI's status, OpenAI's error body) for one of our errors."""
    status_code, code = openai_status_and_code(status_code, code)
    kind = "server_error" if status_code >= 500 else "invalid_request_error"
    return status_code, {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_error_json(
    status_code: int, code: str, message: str, param: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    status_code, body = openai_error_body(status_code, code, message, param)
    return JSONResponse(body, status_code=status_code, headers=headers)


def openai_error_responses(*errors: type[Exception]) -> dict[int | str, dict[str, Any]]:
    """``error_responses`` for an OpenAI-compatible route: OpenAI's statuses and error shape."""
    by_status: dict[int, list[str]] = {}
    for err in errors:
        status, code = openai_status_and_code(*_status_and_code(err))
        by_status.setdefault(status, []).append(code)
    by_status.setdefault(400, []).append("validation_error")
    responses: dict[int | str, dict[str, Any]] = {
        status: {"model": OpenAIErrorResponse, "description": "Error codes: " + ", ".join(f"`{c}`" for c in codes)}
        for status, codes in sorted(by_status.items())
    }
    # Any other error is in the same shape (and keeps FastAPI from documenting a 422 these routes never send).
    responses["default"] = {"model": OpenAIErrorResponse, "description": "Any other error, in OpenAI's shape"}
    return responses


def render_error(
    request: Request,
    status_code: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    param: str | None = None,
    details: dict[str, Any] | None = None,
) -> JSONResponse:
    """An error response in the shape of the route the request was for (``details``: our shape only)."""
    if is_openai_path(request.scope.get("path", "")):
        return openai_error_json(status_code, code, message, param, headers)
    return error_json(status_code, code, message, headers, details)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
}


def _validation_param(exc: RequestValidationError) -> str | None:
    for err in exc.errors()[:1]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        return loc[0] if loc else None
    return None


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _app_error(request: Request, exc: AppError) -> JSONResponse:
    if exc.status_code >= 500:
        logger.warning("%s: %s", exc.code, exc.message)
    return render_error(request, exc.status_code, exc.code, exc.message, exc.headers, exc.param, exc.details)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return render_error(request, 422, "validation_error", _validation_message(exc), param=_validation_param(exc))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return render_error(request, exc.status_code, code, message, getattr(exc, "headers", None))


async def _store_down(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("object store unavailable: %s", exc)
    return render_error(request, STORE_DOWN.status_code, STORE_DOWN.code, f"{STORE_DOWN.message}: {exc}")


async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("database unavailable: %s", exc)
    return render_error(request, 503, DatabaseUnavailable.code, DatabaseUnavailable.message)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return render_error(request, 500, "internal_error", "internal error")


def install_error_handlers(app: FastAPI) -> None:
    from sqlalchemy.exc import OperationalError

    app.add_exception_handler(AppError, _app_error)  # type: ignore[arg-type]
    app.add_exception_handler(ObjectStoreUnavailable, _store_down)
    app.add_exception_handler(OperationalError, _database_down)
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unhandled)
