"""Domain errors with their HTTP status and a stable machine-readable code, and the handlers that render them.

Every error response has one shape, ``{"error": {"code": ..., "message": ...}}``: the domain errors below,
FastAPI's request validation errors (422, code ``validation_error``), Starlette's own 404/405 and anything else
that escapes a route (500, ``internal_error``; never for a client's mistake).

Errors of the layers below (the object store's ``ObjectStoreUnavailable``, the database's ``OperationalError``)
are translated here, by the installed handlers, and nowhere else: routes and services let them propagate.
"""

from __future__ import annotations

import logging
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

    def __init__(self, message: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        self.message = message or self.message
        self.headers = headers
        super().__init__(self.message)


# ---- 400-level: the client's mistake ----------------------------------------------------------------------


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


class ReportNotFound(NotFound):
    code = "report_not_found"
    message = "this job has no evaluation report"


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


class NotEnoughData(Unprocessable):
    code = "not_enough_data"


class InvalidBudget(Unprocessable):
    code = "invalid_budget"




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
    for err in errors:
        status, code = _status_and_code(err)
        by_status.setdefault(status, []).append(code)
    return {
        status: {"model": ErrorResponse, "description": "Error codes: " + ", ".join(f"`{c}`" for c in codes)}
        for status, codes in sorted(by_status.items())
    }


def error_json(status_code: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status_code, headers=headers)


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


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _app_error(_: Request, exc: AppError) -> JSONResponse:
    if exc.status_code >= 500:
        logger.warning("%s: %s", exc.code, exc.message)
    return error_json(exc.status_code, exc.code, exc.message, exc.headers)


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    return error_json(422, "validation_error", _validation_message(exc))


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return error_json(exc.status_code, code, message, getattr(exc, "headers", None))


async def _store_down(_: Request, exc: Exception) -> JSONResponse:
    logger.warning("object store unavailable: %s", exc)
    return error_json(STORE_DOWN.status_code, STORE_DOWN.code, f"{STORE_DOWN.message}: {exc}")


async def _database_down(_: Request, exc: Exception) -> JSONResponse:
    logger.warning("database unavailable: %s", exc)
    return error_json(503, DatabaseUnavailable.code, DatabaseUnavailable.message)


async def _unhandled(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return error_json(500, "internal_error", "internal error")


def install_error_handlers(app: FastAPI) -> None:
    from sqlalchemy.exc import OperationalError

    app.add_exception_handler(AppError, _app_error)  # type: ignore[arg-type]
    app.add_exception_handler(ObjectStoreUnavailable, _store_down)
    app.add_exception_handler(OperationalError, _database_down)
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unhandled)
