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

from hra.gate import GateConfig

DEFAULT_VAR_DIR = Path("var")
_GATE_DEFAULTS = GateConfig()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HRA_", env_file=".env", extra="ignore")

    env: Literal["local", "production"] = "local"
    var_dir: Path = DEFAULT_VAR_DIR

    database_url: str = ""  # default: sqlite file under var_dir
    broker_url: str = ""  # default: kombu SQLAlchemy transport on a sqlite file under var_dir

    object_store: Literal["local", "s3"] = "local"
    object_store_dir: Path | None = None  # default: var_dir / "objects"
    s3_endpoint: str = "localhost:9000"
    s3_access_key: str = "minioadmin"
    s3_secret_key: str = "minioadmin"
    s3_secure: bool = False
    s3_region: str | None = None
    s3_bucket: str = "hra"

    bootstrap_api_key: str | None = None

    # Upload limits.
    max_upload_bytes: int = 25 * 1024 * 1024
    max_utterance_seconds: float = 30.0
    min_utterance_seconds: float = 0.3
    # Checked in the audio header before anything is decoded. The upper bounds are the decoder's own hard caps
    # (hra.audio), which refuses beyond them whatever these say.
    max_audio_sample_rate: int = Field(default=192_000, gt=0, le=192_000)
    max_audio_channels: int = Field(default=8, ge=1, le=8)
    # Bodies that are not multipart uploads (JSON) are small; counted as they stream, like uploads.
    max_json_body_bytes: int = Field(default=64 * 1024, gt=0)

    # Transcription (long-form): uploads up to these limits are split by voice activity into chunks and transcribed
    # in batches (app/services/longform.py). The byte limit is enforced before the body is read.
    max_transcription_seconds: float = Field(default=7200.0, gt=0)
    max_transcription_upload_bytes: int = Field(default=128 * 1024 * 1024, gt=0)
    # "silero" (silero-vad's model, shipped in its wheel) or "energy" (frame energy; no model).
    vad: Literal["silero", "energy"] = "silero"
    # Audio up to this long is transcribed whole (one segment), as Whisper reads one 30-s window.
    longform_single_pass_seconds: float = Field(default=30.0, gt=0, le=30.0)
    # Speech regions are merged into chunks of at most this span (Whisper's window is 30 s). Measured on 10 min of
    # the real recordings, shuffled and joined with 0.2-1.5 s pauses (speaker changes at most pauses), beam 5: 8 s
    # keeps WER within 0.004 of transcribing each recording alone (base 0.056 vs 0.053; the linear prior head 0.076
    # vs 0.080); 10 s: 0.086 / 0.096; 20 s: 0.081 / 0.165 (Whisper tiny ends a window early when the speaker
    # changes inside it). Short chunks are also the utterance-length audio heads were trained on.
    longform_chunk_seconds: float = Field(default=8.0, gt=0, le=30.0)
    # ... across pauses no longer than this (a longer pause always starts a new segment).
    longform_max_merge_gap_seconds: float = Field(default=1.0, ge=0)
    # Chunks per ml.transcribe call (one batched pass; a streamed response sends each batch's segments at once).
    longform_batch_size: int = Field(default=8, ge=1, le=64)

    # Adaptation job requirements and budget.
    min_train_utterances: int = 10
    min_eval_utterances: int = 5
    default_train_seconds: float = 120.0
    max_train_seconds: float = 1800.0
    default_max_epochs: int = 12

    # Quotas per tenant (app.services.quotas): the defaults; ``hra tenants quota TENANT --speakers N ...`` overrides
    # them for one tenant. Exceeding one answers 429 ``quota_exceeded`` with the limit and the usage.
    quota_speakers: int = Field(default=10_000, ge=0)
    quota_utterances_per_speaker: int = Field(default=1_000, ge=0)
    # Stored audio (normalized FLAC, ~25 KB a second) and head artifacts: 10 GiB is ~100 h of enrollment.
    quota_stored_bytes: int = Field(default=10 * 1024**3, ge=0)
    # Jobs queued, training or evaluating at once (each speaker has at most one anyway).
    quota_active_jobs: int = Field(default=4, ge=0)
    # Sum of the ``max_train_seconds`` budgets of the jobs created in the last 24 h (jobs that ended before any
    # training started do not count): 4 h is 8 jobs at the 1800-s cap or 120 at the default budget.
    quota_train_seconds_per_day: float = Field(default=4 * 3600.0, ge=0)

    # Evaluation gate (defaults: the ML package's, which the benchmarks use too).
    gate_min_eval_words: int = _GATE_DEFAULTS.min_eval_words
    gate_min_relative_improvement: float = _GATE_DEFAULTS.min_relative_improvement
    gate_confidence: float = _GATE_DEFAULTS.confidence
    gate_bootstrap_samples: int = _GATE_DEFAULTS.bootstrap_samples

    # Workers. Queue names are settings so that test runs sharing a broker never see each other's tasks.
    train_queue: str = "train"
    eval_queue: str = "eval"
    torch_threads: int = 1
    task_max_attempts: int = 3
    # A running job's worker heartbeats at least every min(5 s, this / 4) in every phase (a keep-alive thread covers
    # loading, data preparation and long transcription batches: workers.progress.Reporter.keep_alive). A job silent
    # for longer is re-queued by the reaper that every worker runs every min(60 s, this / 4): a job whose worker died
    # is back on its queue within this x 1.25 (75 s by default), and a restarted or other worker picks it up.
    job_stale_after_seconds: float = Field(default=60.0, gt=0)
    # A run that meets a transient error (database or object store unreachable) retries in place, backing off from
    # 1 s to 30 s and heartbeating its job meanwhile (the reaper leaves it alone), for up to this long since the
    # first error; then the job fails with the reason (workers/tasks.py). An outage shorter than this costs no job.
    transient_retry_window_seconds: float = Field(default=600.0, ge=0)
    # Housekeeping (app/services/housekeeping.py), run by every worker's reaper thread every interval and by
    # `hra objects sweep`: objects no row refers to are deleted once older than the grace (an upload is stored
    # before its row commits; a crash in between leaves such an object), and speaker erasures interrupted for
    # longer than erasure_resume_after_seconds are finished.
    orphan_grace_seconds: float = Field(default=3600.0, ge=0)
    housekeeping_interval_seconds: float = Field(default=900.0, gt=0)
    erasure_resume_after_seconds: float = Field(default=300.0, ge=0)
    device: str = "auto"  # "auto" picks CUDA when present

    # Foundation: backbone from the pinned wheel, controller shipped in the hra package unless overridden.
    controller_path: Path | None = None
    # Beam search for every transcription (base and heads; 1 = greedy, about 1.5x faster on a CPU). Beam 5 lowered
    # held-out WER of the product's heads on most failing voices and the base's on standard ones (MODEL_CARD.md).
    beam_size: int = Field(default=5, ge=1, le=16)
    # Who runs that beam search over the PyTorch encoder's output (heads applied): "python" (hra's own) or
    # "ctranslate2" (CTranslate2's C++ search, int8; same WER on the benchmark sets, decoding ~4x faster on one thread:
    # benchmarks/results/ct2_decoding.json).
    decoder: Literal["python", "ctranslate2"] = "python"

    # Serving (app/engine.py): one engine thread batches the utterances of concurrent requests. A request waits at
    # most this long for others to join its batch (counted from when it was queued; 0: take only what is queued) ...
    engine_batch_wait_ms: float = Field(default=5.0, ge=0, le=1000)
    # ... of at most this many utterances (base-model and head utterances run as separate passes of one batch).
    engine_max_batch_size: int = Field(default=16, ge=1, le=256)
    # Parsed heads kept in memory (least recently used out first), by head id; 64 MiB holds ~650 linear heads
    # (~100 KB each) or ~280 FFN heads.
    head_cache_bytes: int = Field(default=64 * 1024 * 1024, ge=0)

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, validation_alias="PORT")
    # /readyz answers from its last probe of the dependencies for this long, so that polling it (it needs no key)
    # cannot turn into load on the database, the object store and the broker.
    readiness_cache_seconds: float = Field(default=2.0, ge=0)

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
