"""Domain errors: each with its HTTP status, a stable machine-readable code and a default human message.

Routes and services raise these; ``app.error_handlers`` renders them (our shape, or OpenAI's on the OpenAI-compatible
routes) and translates the errors of the layers below. This module knows nothing of the web framework.
"""

from __future__ import annotations

import math
from typing import Any

# Re-exported: routes document it among their errors, and name every error from this module.
from storage.errors import ObjectStoreUnavailable  # noqa: F401



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
