"""ASGI middleware that guards the API before a request's body is read.

FastAPI reads (and spools) a request's body before any dependency runs, so the key check and the routes' size
checks come too late on their own: anyone could stream an unbounded body (chunked, without a Content-Length)
into memory (JSON) or onto disk (multipart), without a key. ``RequestGuard`` runs before the application:

1. **Authentication first.** ``/v1/`` requests need a well-formed ``Authorization: Bearer <key>``; a request that
   carries a body must also present a key that the database knows. Refused with the same 401 the routes give,
   before a byte of the body is read (the route's dependency still resolves the tenant, as for any request).
2. **Bodies counted as they stream.** Past the limit the client gets 413 ``payload_too_large`` and the application
   sees a disconnect, so it stops reading; a declared Content-Length above the limit is refused at once. The
   limit is ``max_upload_bytes`` (the transcription routes: ``max_transcription_upload_bytes``) plus
   ``MULTIPART_OVERHEAD`` for multipart uploads, and ``max_json_body_bytes`` for any other body.

After a 413 the server discards the rest of the body as it arrives (uvicorn does, once the response is complete),
so memory stays flat and a client that sends everything before reading still gets its answer.
"""

from __future__ import annotations

from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import errors
from app.api.uploads import MULTIPART_OVERHEAD, TRANSCRIPTION_PATHS
from app.container import Services
from app.error_handlers import render_error
from app.security import INVALID_KEY_MESSAGE, authenticate

AUTHENTICATED_PREFIX = "/v1/"
_DISCONNECT: Message = {"type": "http.disconnect"}


def bearer_key(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header (as FastAPI's ``HTTPBearer`` parses it), else None."""
    scheme, key = get_authorization_scheme_param(authorization)
    if scheme.lower() != "bearer" or not key:
        return None
    return key


def has_body(headers: Headers) -> bool:
    return headers.get("content-length", "0") != "0" or "transfer-encoding" in headers


class RequestGuard:
    """Authentication before the body, and a streaming limit on the body (see the module's docstring)."""

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services  # settings are read per request: tests (and operators) may change them

    def body_limit(self, path: str, headers: Headers) -> int:
        settings = self.services.settings
        if headers.get("content-type", "").lower().startswith("multipart/"):
            transcription = TRANSCRIPTION_PATHS.fullmatch(path) is not None
            upload = settings.max_transcription_upload_bytes if transcription else settings.max_upload_bytes
            return upload + MULTIPART_OVERHEAD
        return settings.max_json_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if scope["path"].startswith(AUTHENTICATED_PREFIX):
            refusal = await self._authenticate(scope, headers)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        limit = self.body_limit(scope["path"], headers)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _too_large(scope, limit)(scope, receive, send)
            return
        await self._call_counting(scope, receive, send, limit)

    async def _authenticate(self, scope: Scope, headers: Headers) -> Response | None:
        """None when the request may proceed, else the response that refuses it."""
        key = bearer_key(headers.get("authorization"))
        if key is None:
            return _unauthorized(scope, errors.Unauthorized.message)
        if not has_body(headers):
            return None  # nothing to protect: the route's dependency checks the key as usual
        try:
            known = await run_in_threadpool(self._key_is_known, key)
        except (OperationalError, PoolTimeout):
            db_down = errors.DatabaseUnavailable
            return render_error(Request(scope), db_down.status_code, db_down.code, db_down.message)
        return None if known else _unauthorized(scope, INVALID_KEY_MESSAGE)

    def _key_is_known(self, key: str) -> bool:
        with self.services.session_factory() as db:
            return authenticate(db, self.services.settings, key) is not None

    async def _call_counting(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        refused = False  # this middleware answered 413: the application's own answer goes nowhere
        app_started = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return _DISCONNECT
            message = await receive()
            if message["type"] != "http.request":
                return message
            received += len(message.get("body", b""))
            if received <= limit:
                return message
            refused = True
            if not app_started:
                await _too_large(scope, limit)(scope, receive, send)
            return _DISCONNECT

        async def guarded_send(message: Message) -> None:
            nonlocal app_started
            if refused and not app_started:
                return
            app_started = app_started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counting_receive, guarded_send)


def _unauthorized(scope: Scope, message: str) -> Response:
    unauthorized = errors.Unauthorized
    return render_error(
        Request(scope), unauthorized.status_code, unauthorized.code, message, {"WWW-Authenticate": "Bearer"}
    )


def _too_large(scope: Scope, limit: int) -> Response:
    too_large = errors.PayloadTooLarge
    return render_error(
        Request(scope), too_large.status_code, too_large.code, f"request body larger than {limit} bytes"
    )
