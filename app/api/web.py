"""The enrollment web app (``app/web/``): the page at ``/`` and its static files under ``/web/``.

Plain HTML, CSS and JavaScript modules, no build step and nothing from another origin. The page holds no secret:
the person signs in with an API key that stays in the tab's ``sessionStorage`` and goes to the API only in the
``Authorization`` header. The Content-Security-Policy allows scripts, styles and connections to this origin only.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app import errors

WEB_DIR = Path(__file__).resolve().parents[1] / "web"

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".md": "text/markdown; charset=utf-8",
}

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
    "connect-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate every time (ETag): a new release is picked up at once, and the files are small.
    "Cache-Control": "no-cache",
    # The page asks for the microphone; nothing else may.
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
}

router = APIRouter(include_in_schema=False)


def _file(path: Path) -> FileResponse:
    media_type = MEDIA_TYPES.get(path.suffix)
    if media_type is None:
        raise errors.NotFound()
    return FileResponse(path, media_type=media_type, headers=HEADERS)


@router.get("/")
def index() -> FileResponse:
    """The enrollment app."""
    return _file(WEB_DIR / "index.html")


@router.get("/web/{name:path}")
def static_file(name: str) -> FileResponse:
    """A file of the app; nothing outside ``app/web/`` (no ``..``, no absolute path, no hidden file)."""
    parts = Path(name).parts
    if not parts or any(p in ("", ".", "..") or p.startswith(".") for p in parts) or Path(name).is_absolute():
        raise errors.NotFound()
    path = (WEB_DIR / name).resolve()
    if not path.is_file() or WEB_DIR not in path.parents:
        raise errors.NotFound()
    return _file(path)
