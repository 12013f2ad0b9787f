"""How errors become responses: the domain errors of ``app.errors``, request validation, the framework's own, and the
errors of the layers below.

Every error response has one shape, ``{"error": {"code": ..., "message": ...}}`` (an error's ``details`` add fields
next to them: a 429 ``quota_exceeded`` carries ``quota``, ``limit`` and ``usage``): the domain errors,
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
from typing import Any, NamedTuple

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import AppError, DatabaseUnavailable, QuotaExceeded
from storage.errors import ObjectStoreUnavailable

logger = logging.getLogger(__name__)


# ---- response shapes ---------------------------------------------------------------------------


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
