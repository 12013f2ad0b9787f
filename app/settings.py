"""One settings object for the API, the workers and the CLI.

The embedded default (SQLite, a local-directory object store, a SQLite-backed Celery broker) and the
distributed deployment (Postgres, MinIO, Redis/RabbitMQ) differ only by these settings, all read from
environment variables prefixed ``HRA_`` (or a ``.env`` file).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.settings_model import ModelSettings
from hra.gate import GateConfig

DEFAULT_VAR_DIR = Path("var")
_GATE_DEFAULTS = GateConfig()


class Settings(ModelSettings, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HRA_", env_file=".env", extra="ignore")

    env: Literal["local", "production"] = Field(
        default="local",
        description=(
            "`production` refuses SQLite, known default passwords (database, broker, S3) and an "
            "`HRA_BOOTSTRAP_API_KEY` under 32 characters, not random, or containing a known default; `local` "
            "allows them (never on a reachable machine)"
        ),
    )
    var_dir: Path = Field(
        default=DEFAULT_VAR_DIR,
        description=(
            "where the embedded defaults live: the SQLite database, the broker's SQLite file, the local object "
            "store and `hra run`'s key (`api-key`)"
        ),
    )

    database_url: str = Field(
        default="", json_schema_extra={"doc_default": "`sqlite:///<HRA_VAR_DIR>/hra.db`"},
        description="SQLAlchemy URL of the database; Postgres: `postgresql+psycopg2://...`",
    )
    broker_url: str = Field(
        default="", json_schema_extra={"doc_default": "`sqla+sqlite:///<HRA_VAR_DIR>/broker.db`"},
        description=(
            "Celery broker: Redis `redis://...` or RabbitMQ `amqp://...`; the default is kombu's SQLAlchemy "
            "transport on a SQLite file (no server; Flower cannot see its workers)"
        ),
    )

    object_store: Literal["local", "s3"] = Field(
        default="local",
        description=(
            "where audio and head artifacts are kept: `local` (a directory) or `s3` (MinIO or any S3 API through "
            "the minio SDK, `HRA_S3_*`)"
        ),
    )
    object_store_dir: Path | None = Field(
        default=None, json_schema_extra={"doc_default": "`<HRA_VAR_DIR>/objects`"},
        description="the `local` object store's directory",
    )
    s3_endpoint: str = Field(default="localhost:9000", description="S3 endpoint, `host:port`")
    s3_access_key: str = Field(default="minioadmin", description="S3 access key")
    s3_secret_key: str = Field(
        default="minioadmin",
        description="S3 secret key (`production` refuses this default and other known ones)",
    )
    s3_secure: bool = Field(default=False, description="HTTPS to the S3 endpoint")
    s3_region: str | None = Field(default=None, description="S3 region (unset: the endpoint's default)")
    s3_bucket: str = Field(default="hra", description="S3 bucket of the audio and head artifacts")

    bootstrap_api_key: str | None = Field(
        default=None,
        description=(
            "an API key accepted for tenant `default` (stored hashed at first use); without it `hra run` keeps "
            "its own key in `<HRA_VAR_DIR>/api-key`"
        ),
    )

    # Upload limits.
    max_upload_bytes: int = Field(
        default=25 * 1024 * 1024,
        description=(
            "upload limit of an utterance, plus 256 KiB of form overhead; counted as the body streams, chunked or"
            " not (413 `payload_too_large`); `/v1/` bodies are read only after the key is checked"
        ),
    )
    max_utterance_seconds: float = Field(
        default=30.0,
        description="longest enrollment utterance (longer: 422 `audio_too_long`)",
    )
    min_utterance_seconds: float = Field(
        default=0.3,
        description="shortest enrollment utterance (shorter: 422 `audio_too_short`)",
    )
    # Checked in the audio header before anything is decoded. The upper bounds are the decoder's own hard caps
    # (hra.audio), which refuses beyond them whatever these say.
    max_audio_sample_rate: int = Field(
        default=192_000, gt=0, le=192_000,
        description=(
            "checked in the audio's header before anything is decoded (422 `unsupported_sample_rate`); the "
            "decoder's own cap (192 kHz) bounds it"
        ),
    )
    max_audio_channels: int = Field(
        default=8, ge=1, le=8,
        description=(
            "checked in the audio's header before anything is decoded (422 `too_many_channels`); the decoder's "
            "own cap (8) bounds it"
        ),
    )
    # Bodies that are not multipart uploads (JSON) are small; counted as they stream, like uploads.
    max_json_body_bytes: int = Field(
        default=64 * 1024, gt=0,
        description="any request body that is not a multipart upload, counted as it streams (413 `payload_too_large`)",
    )

    # Adaptation job requirements and budget.
    min_train_utterances: int = Field(
        default=10,
        description="an adaptation needs at least this many train utterances (fewer: 422 `not_enough_data`)",
    )
    min_eval_utterances: int = Field(default=5, description="... and this many held-out ones")
    default_train_seconds: float = Field(
        default=120.0,
        description="a job's training budget when it names none (`max_train_seconds`)",
    )
    max_train_seconds: float = Field(
        default=1800.0,
        description="the largest training budget a job may ask for (more: 422 `invalid_budget`)",
    )
    default_max_epochs: int = Field(
        default=12,
        description=(
            "a job's epoch limit when it names none (`max_epochs`); training stops at the budget, the epochs or "
            "early stopping, whichever comes first"
        ),
    )

    # Quotas per tenant (app.services.quotas): the defaults; ``hra tenants quota TENANT --speakers N ...`` overrides
    # them for one tenant. Exceeding one answers 429 ``quota_exceeded`` with the limit and the usage.
    quota_speakers: int = Field(
        default=10_000, ge=0,
        description=(
            "speakers per tenant (a speaker being deleted no longer counts); exceeding a quota answers 429 "
            "`quota_exceeded`"
        ),
    )
    quota_utterances_per_speaker: int = Field(default=1_000, ge=0, description="utterances per speaker")
    # Stored audio (normalized FLAC, ~25 KB a second) and head artifacts: 10 GiB is ~100 h of enrollment.
    quota_stored_bytes: int = Field(
        default=10 * 1024**3, ge=0,
        description="stored audio (normalized FLAC, ~25 KB/s: 10 GiB is ~100 h) and head artifacts per tenant",
    )
    # Jobs queued, training or evaluating at once (each speaker has at most one anyway).
    quota_active_jobs: int = Field(
        default=4, ge=0,
        description="a tenant's jobs queued, training or evaluating at once",
    )
    # Sum of the ``max_train_seconds`` budgets of the jobs created in the last 24 h (jobs that ended before any
    # training started do not count): 4 h is 8 jobs at the 1800-s cap or 120 at the default budget.
    quota_train_seconds_per_day: float = Field(
        default=4 * 3600.0, ge=0,
        description=(
            "sum of the `max_train_seconds` budgets of a tenant's jobs created in the last 24 h (a job that ends "
            "before its training starts does not count)"
        ),
    )

    # Evaluation gate (defaults: the ML package's, which the benchmarks use too).
    gate_min_eval_words: int = Field(
        default=_GATE_DEFAULTS.min_eval_words,
        description="the gate promotes a candidate only if the held-out set has at least this many words, ...",
    )
    gate_min_relative_improvement: float = Field(
        default=_GATE_DEFAULTS.min_relative_improvement,
        description=(
            "... its WER beats the reference (the head in service, else the base model) by at least this much, "
            "relative, ..."
        ),
    )
    gate_confidence: float = Field(
        default=_GATE_DEFAULTS.confidence,
        description="... and a paired bootstrap over utterances finds it better in at least this fraction of resamples",
    )
    gate_bootstrap_samples: int = Field(
        default=_GATE_DEFAULTS.bootstrap_samples,
        description="resamples of that bootstrap (seeded)",
    )

    # Workers. Queue names are settings so that test runs sharing a broker never see each other's tasks.
    train_queue: str = Field(
        default="train",
        description=(
            "Celery queue of training tasks (a setting so that runs sharing a broker never see each other's "
            "tasks)"
        ),
    )
    eval_queue: str = Field(default="eval", description="Celery queue of evaluation tasks")
    task_max_attempts: int = Field(
        default=3,
        description=(
            "claims of a job before it is failed with the reason (a job whose worker stopped reporting is "
            "re-queued)"
        ),
    )
    # A running job's worker heartbeats at least every min(5 s, this / 4) in every phase (a keep-alive thread covers
    # loading, data preparation and long transcription batches: workers.progress.Reporter.keep_alive). A job silent
    # for longer is re-queued by the reaper that every worker runs every min(60 s, this / 4): a job whose worker died
    # is back on its queue within this x 1.25 (75 s by default), and a restarted or other worker picks it up.
    job_stale_after_seconds: float = Field(
        default=60.0, gt=0,
        description=(
            "a running job silent this long is re-queued by the reaper every worker runs (every min(60 s, this / "
            "4)); running jobs heartbeat at least every min(5 s, this / 4), so a dead worker's job is back on its"
            " queue within 1.25x this"
        ),
    )
    # A run that meets a transient error (database or object store unreachable) retries in place, backing off from
    # 1 s to 30 s and heartbeating its job meanwhile (the reaper leaves it alone), for up to this long since the
    # first error; then the job fails with the reason (workers/tasks.py). An outage shorter than this costs no job.
    transient_retry_window_seconds: float = Field(
        default=600.0, ge=0,
        description=(
            "a run that meets a transient error (database or object store unreachable) retries in place, backing "
            "off from 1 s to 30 s and heartbeating, for up to this long; then the job fails with the reason"
        ),
    )
    # Housekeeping (app/services/housekeeping.py), run by every worker's reaper thread every interval and by
    # `hra objects sweep`: objects no row refers to are deleted once older than the grace (an upload is stored
    # before its row commits; a crash in between leaves such an object), and speaker erasures interrupted for
    # longer than erasure_resume_after_seconds are finished.
    orphan_grace_seconds: float = Field(
        default=3600.0, ge=0,
        description=(
            "housekeeping deletes objects no row refers to once older than this (an upload is stored before its "
            "row commits)"
        ),
    )
    housekeeping_interval_seconds: float = Field(
        default=900.0, gt=0,
        description=(
            "how often every worker's reaper thread runs housekeeping (orphan objects, interrupted erasures; `hra"
            " objects sweep` runs it by hand)"
        ),
    )
    erasure_resume_after_seconds: float = Field(
        default=300.0, ge=0,
        description="housekeeping finishes a speaker erasure interrupted for longer than this",
    )
    api_host: str = Field(default="127.0.0.1", description="address the API listens on (`--host` overrides)")
    api_port: int = Field(default=8000, validation_alias="PORT", description="the API's port (`--port` overrides)")
    # uvicorn's default (5 s) equals httpx's and many clients' idle expiry: a client reusing a pooled connection just
    # as the server closes it gets a transport error (2 in 2,118 requests of `make reliability`'s load). The server
    # must hold idle connections longer than any client or proxy in front of it (load balancers idle out at 60 s).
    api_keep_alive_seconds: float = Field(
        default=75.0, gt=0, le=3600,
        description=(
            "how long the API keeps an idle HTTP connection open: longer than clients' and proxies' idle timeouts "
            "(httpx 5 s, load balancers 60 s), so that a reused connection is never closed under a request"
        ),
    )
    # /readyz answers from its last probe of the dependencies for this long, so that polling it (it needs no key)
    # cannot turn into load on the database, the object store and the broker.
    readiness_cache_seconds: float = Field(
        default=2.0, ge=0,
        description=(
            "`/readyz` (no key needed) answers from its last probe of the database, object store and broker for "
            "this long, so that polling it cannot load them"
        ),
    )

    @model_validator(mode="after")
    def _fill_defaults(self) -> "Settings":
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.var_dir / 'hra.db').resolve()}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{(self.var_dir / 'broker.db').resolve()}"
        if self.object_store_dir is None:
            self.object_store_dir = self.var_dir / "objects"
        if self.env == "production":
            if self.object_store == "s3" and is_known_default_secret(self.s3_secret_key):
                raise ValueError("refusing a default or example S3 secret key in production (HRA_S3_SECRET_KEY)")
            if self.database_url.startswith("sqlite"):
                raise ValueError("production mode needs a server database (HRA_DATABASE_URL)")
            for name, url in (("HRA_DATABASE_URL", self.database_url), ("HRA_BROKER_URL", self.broker_url)):
                password = url_password(url)
                if password is not None and is_known_default_secret(password):
                    raise ValueError(f"refusing a default or example password in {name} in production")
            if self.bootstrap_api_key:
                problem = weak_bootstrap_key(self.bootstrap_api_key)
                if problem:
                    raise ValueError(f"refusing HRA_BOOTSTRAP_API_KEY in production: {problem}")
        return self


# Secrets that ship in examples, old versions of docker-compose.yml and vendor defaults: never in production.
KNOWN_DEFAULT_SECRETS = frozenset(
    {
        "minioadmin", "hra-local-secret", "hra-local-password", "postgres", "password", "secret", "changeme",
        "change-me", "admin", "hra", "test", "example", "default",
    }
)
MIN_BOOTSTRAP_KEY_CHARS = 32
MIN_BOOTSTRAP_KEY_DISTINCT_CHARS = 10  # a random 32-character hex key has ~14; "aaaa..." or "abab..." has 1-2


def is_known_default_secret(value: str) -> bool:
    return value.strip().lower() in KNOWN_DEFAULT_SECRETS


def url_password(url: str) -> str | None:
    """The password in a database or broker URL, if it has one."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).password  # type: ignore[return-value]
    except Exception:  # noqa: BLE001 - a broker URL SQLAlchemy does not parse: look at it by hand
        rest = url.split("://", 1)[-1].split("@", 1)
        return rest[0].split(":", 1)[1] if len(rest) == 2 and ":" in rest[0] else None


def weak_bootstrap_key(key: str) -> str | None:
    """Why ``key`` is not fit to be a production bootstrap key (``None``: it is). Long and not a known default
    (``python -c 'import secrets; print(secrets.token_urlsafe(32))'`` makes a good one)."""
    if len(key) < MIN_BOOTSTRAP_KEY_CHARS:
        return f"it has {len(key)} characters; use at least {MIN_BOOTSTRAP_KEY_CHARS} random ones"
    lowered = key.lower()
    if any(secret in lowered for secret in KNOWN_DEFAULT_SECRETS if len(secret) >= 6):
        return "it contains a known default or example secret"
    if len(set(key)) < MIN_BOOTSTRAP_KEY_DISTINCT_CHARS:
        return "it is not random (too few distinct characters)"
    return None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
