"""Reading multipart audio uploads with a size limit, and the request-size guard middleware."""

from __future__ import annotations

import re
from collections.abc import Sequence

from fastapi import UploadFile
from starlette.types import ASGIApp, Receive, Scope, Send

from app.error_handlers import error_json, is_openai_path, openai_error_json
from app.errors import EmptyAudio, PayloadTooLarge

CHUNK = 1024 * 1024
MULTIPART_OVERHEAD = 256 * 1024  # room for the other form fields and part headers
# The routes that transcribe (long recordings): their uploads are limited by ``max_transcription_upload_bytes``.
TRANSCRIPTION_PATHS = re.compile(r"/v1/(audio/transcriptions|transcriptions|speakers/[^/]+/transcriptions)")


def read_upload(upload: UploadFile, limit: int) -> bytes:
    """The uploaded file's bytes (blocking; call from a worker thread); 413 above ``limit``, 422 when empty."""
    chunks: list[bytes] = []
    size = 0
    upload.file.seek(0)
    while chunk := upload.file.read(CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"audio upload larger than {limit} bytes")
        chunks.append(chunk)
    if size == 0:
        raise EmptyAudio()
    return b"".join(chunks)


class BodySizeLimit:
    """Reject a request whose declared Content-Length exceeds the limit before its body is read or spooled.

    ``path_limits``: (path pattern, limit) pairs for routes with their own limit (the transcription routes accept
    long recordings); the first pattern that matches the whole path wins, else ``max_body_bytes``."""

    def __init__(
        self, app: ASGIApp, max_body_bytes: int, path_limits: Sequence[tuple[re.Pattern[str], int]] = ()
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.path_limits = tuple(path_limits)

    def limit_for(self, path: str) -> int:
        return next((limit for pattern, limit in self.path_limits if pattern.fullmatch(path)), self.max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            limit = self.limit_for(scope.get("path", ""))
            for name, value in scope.get("headers", ()):
                if name == b"content-length":
                    try:
                        declared = int(value)
                    except ValueError:
                        declared = 0
                    if declared > limit:
                        render = openai_error_json if is_openai_path(scope.get("path", "")) else error_json
                        response = render(413, PayloadTooLarge.code, f"request body larger than {limit} bytes")
                        await response(scope, receive, send)
                        return
                    break
        await self.app(scope, receive, send)
