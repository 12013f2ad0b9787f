"""A typed Python client of the HRA HTTP API, used by the ``hra`` CLI's remote verbs and by tests.

    from app.client import HRAClient, resolve_config

    with HRAClient.from_config(resolve_config()) as hra:   # HRA_URL / HRA_API_KEY / ~/.config/hra/config.toml
        print(hra.list_speakers())

Only httpx and pydantic are needed: importing it loads nothing of the server (database, models, torch).
"""

from app.client.api import HRAClient
from app.client.config import ClientConfig, resolve_config
from app.client.errors import (
    ApiError,
    ArtifactIntegrityError,
    BadRequest,
    ConfigError,
    Conflict,
    Forbidden,
    HRAClientError,
    JobWaitTimeout,
    NotFound,
    PayloadTooLarge,
    ServerError,
    ServiceUnavailable,
    TransportError,
    Unauthorized,
    Unprocessable,
)
from app.client.models import (
    ACTIVE_JOB_STATES,
    TERMINAL_JOB_STATES,
    Evaluation,
    Head,
    Job,
    Speaker,
    Transcription,
    Utterance,
)

__all__ = [
    "ACTIVE_JOB_STATES",
    "TERMINAL_JOB_STATES",
    "ApiError",
    "ArtifactIntegrityError",
    "BadRequest",
    "ClientConfig",
    "ConfigError",
    "Conflict",
    "Evaluation",
    "Forbidden",
    "HRAClient",
    "HRAClientError",
    "Head",
    "Job",
    "JobWaitTimeout",
    "NotFound",
    "PayloadTooLarge",
    "ServerError",
    "ServiceUnavailable",
    "Speaker",
    "Transcription",
    "TransportError",
    "Unauthorized",
    "Unprocessable",
    "Utterance",
    "resolve_config",
]
