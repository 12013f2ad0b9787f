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

    # Adaptation job requirements and budget.
    min_train_utterances: int = 10
    min_eval_utterances: int = 5
    default_train_seconds: float = 120.0
    max_train_seconds: float = 1800.0
    default_max_epochs: int = 12

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
    job_stale_after_seconds: float = 600.0
    device: str = "auto"  # "auto" picks CUDA when present

    # Foundation: backbone from the pinned wheel, controller shipped in the hra package unless overridden.
    controller_path: Path | None = None
    # Beam search for every transcription (base and heads; 1 = greedy, about 1.5x faster on a CPU). Beam 5 lowered
    # held-out WER of the product's heads on most failing voices and the base's on standard ones (MODEL_CARD.md).
    beam_size: int = Field(default=5, ge=1, le=16)

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, validation_alias="PORT")

    @model_validator(mode="after")
    def _fill_defaults(self) -> "Settings":
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.var_dir / 'hra.db').resolve()}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{(self.var_dir / 'broker.db').resolve()}"
        if self.object_store_dir is None:
            self.object_store_dir = self.var_dir / "objects"
        if self.env == "production":
            if self.object_store == "s3" and self.s3_secret_key == "minioadmin":
                raise ValueError("refusing the default S3 secret key outside local mode")
            if self.database_url.startswith("sqlite"):
                raise ValueError("production mode needs a server database (HRA_DATABASE_URL)")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
