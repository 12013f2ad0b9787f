"""What the client raises: one base class, configuration and transport failures, and the API's own errors.

The API answers every error as ``{"error": {"code", "message"}}`` with an HTTP status. ``ApiError.from_response``
turns that into a subclass chosen by the status (``NotFound`` for 404, ``Conflict`` for 409, ...) that keeps the
server's ``code`` (``speaker_not_found``, ``job_already_active``, ...): catch the class for the kind of failure,
compare ``code`` for the exact one.
"""

from __future__ import annotations

import httpx


class HRAClientError(Exception):
    """Base of everything the client raises on purpose."""


class ConfigError(HRAClientError):
    """No usable server URL or API key, or an unreadable config file."""


class TransportError(HRAClientError):
    """The server could not be reached, or the connection broke (no HTTP answer at all)."""


class JobWaitTimeout(HRAClientError):
    """``wait_for_job`` gave up before the job reached a final state (the job itself goes on)."""

    def __init__(self, job_id: str, state: str, waited_s: float) -> None:
        self.job_id = job_id
        self.state = state
        self.waited_s = waited_s
        super().__init__(f"job {job_id} still {state} after {waited_s:.0f} s")


class ArtifactIntegrityError(HRAClientError):
    """A downloaded file does not match the checksum the server announced (nothing is kept)."""


class ApiError(HRAClientError):
    """The API answered with an error status. ``status``, ``code`` and ``message`` come from the response."""

    def __init__(self, status: int, code: str, message: str, *, method: str = "", url: str = "") -> None:
        self.status = status
        self.code = code
        self.message = message
        self.method = method
        self.url = url
        super().__init__(f"{status} {code}: {message}")

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """The typed error for an error response (a body that is not the API's shape still gives one)."""
        code, message = _code_and_message(response)
        error_class = _CLASS_BY_STATUS.get(response.status_code)
        if error_class is None:
            error_class = ServerError if response.status_code >= 500 else ApiError
        return error_class(
            response.status_code, code, message, method=response.request.method, url=str(response.request.url)
        )


class BadRequest(ApiError):
    """400."""


class Unauthorized(ApiError):
    """401: no API key, or one the server does not know (or has revoked)."""


class Forbidden(ApiError):
    """403."""


class NotFound(ApiError):
    """404: the speaker, job, head, report or artifact does not exist for this API key's tenant."""


class Conflict(ApiError):
    """409: e.g. ``job_already_active``, ``speaker_exists``, ``job_not_cancellable``, ``head_not_usable``."""


class PayloadTooLarge(ApiError):
    """413: the upload exceeds the server's limit."""


class Unprocessable(ApiError):
    """422: a request the server understood but refuses (``invalid_audio``, ``not_enough_data``, ...)."""


class QuotaExceeded(ApiError):
    """429 ``quota_exceeded``: a per-tenant limit (speakers, utterances, stored bytes, jobs, training seconds);
    the message names the limit and the usage."""


class ServerError(ApiError):
    """5xx: the server's fault; retrying later may help."""


class ServiceUnavailable(ServerError):
    """503: a backing service (database, object store, broker, model) is unavailable; retry later."""


_CLASS_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: Unprocessable,
    429: QuotaExceeded,
    503: ServiceUnavailable,
}

_GENERIC_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict"}


def _code_and_message(response: httpx.Response) -> tuple[str, str]:
    # A proxy in front of the API (or a wrong URL) may answer with HTML or plain text: keep its first words
    # as the message rather than failing to report the failure.
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return str(error.get("code") or "http_error"), str(error.get("message") or response.reason_phrase)
    code = _GENERIC_CODES.get(response.status_code, "http_error")
    text = response.text.strip()[:300]
    return code, text or response.reason_phrase or f"HTTP {response.status_code}"
