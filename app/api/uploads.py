"""Reading multipart audio uploads with a size limit, and the request-size guard middleware."""

from __future__ import annotations

from fastapi import UploadFile
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import EmptyAudio, PayloadTooLarge, error_json

CHUNK = 1024 * 1024
MULTIPART_OVERHEAD = 256 * 1024  # room for the other form fields and part headers


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
    """Reject a request whose declared Content-Length exceeds the limit before its body is read or spooled."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope.get("headers", ()):
                if name == b"content-length":
                    try:
                        declared = int(value)
                    except ValueError:
                        declared = 0
                    if declared > self.max_body_bytes:
                        response = error_json(
                            413, PayloadTooLarge.code, f"request body larger than {self.max_body_bytes} bytes"
                        )
                        await response(scope, receive, send)
                        return
                    break
        await self.app(scope, receive, send)
