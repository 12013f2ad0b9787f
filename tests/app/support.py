"""Wiring for service-level tests: settings on a temp dir, ``Services`` with fakes, seeded speakers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from app.container import Services
from app.security import create_api_key
from app.services import jobs as job_service
from app.services.utterances import add_utterance
from app.settings import Settings
from storage.db import make_engine, make_session_factory
from storage.models import AdaptationJob, HeadType, Speaker, Tenant
from storage.objects import LocalObjectStore
from tests.app.fakes import FakeML, RecordingQueue, tone

SENTENCES = [
    "the quick brown fox jumps",
    "over the lazy sleeping dog",
    "she sells sea shells today",
    "peter piper picked a peck",
    "how much wood would chuck",
    "a stitch in time saves",
    "all that glitters is not",
    "birds of a feather flock",
    "every cloud has a lining",
    "fortune favours the bold ones",
]


def make_settings(tmp_path: Path, database_url: str, **overrides) -> Settings:
    values = dict(
        var_dir=tmp_path,
        database_url=database_url,
        broker_url="memory://",
        object_store="local",
        object_store_dir=tmp_path / "objects",
        bootstrap_api_key=None,
        min_train_utterances=3,
        min_eval_utterances=2,
        gate_min_eval_words=8,
        gate_min_relative_improvement=0.05,
        gate_confidence=0.9,
        gate_bootstrap_samples=300,
        max_upload_bytes=400_000,
        max_utterance_seconds=5.0,
        min_utterance_seconds=0.3,
        # Transcriptions: small limits, and long-form chunking that synthetic tones exercise (energy VAD; chunks
        # of at most 3 s for recordings over 4 s).
        max_transcription_seconds=20.0,
        max_transcription_upload_bytes=1_000_000,
        vad="energy",
        longform_single_pass_seconds=4.0,
        longform_chunk_seconds=3.0,
        longform_batch_size=2,
        job_stale_after_seconds=60.0,
        task_max_attempts=3,
        train_queue="train",
        eval_queue="eval",
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)


def make_services(settings: Settings, ml: FakeML | None = None, queue: RecordingQueue | None = None) -> Services:
    engine = make_engine(settings.database_url)
    return Services(
        settings=settings,
        session_factory=make_session_factory(engine),
        object_store=LocalObjectStore(settings.object_store_dir),
        ml=ml or FakeML(),
        queue=queue or RecordingQueue(),
    )


@dataclass
class Seeded:
    tenant_id: uuid.UUID
    speaker_id: uuid.UUID
    api_key: str


def seed_speaker(services: Services, tenant: str = "acme", train: int = 4, eval: int = 2, offset: int = 0) -> Seeded:
    """A tenant (with an API key) and a speaker with ``train`` + ``eval`` utterances the fake ML knows."""
    with services.session_factory() as db:
        tenant_row, key = _tenant(db, tenant)
        speaker = Speaker(tenant_id=tenant_row.id, display_name="test voice")
        db.add(speaker)
        db.flush()
        seeded = Seeded(tenant_row.id, speaker.id, key)
        db.commit()
    add_utterances(services, seeded.speaker_id, train=train, eval=eval, offset=offset)
    return seeded


def _tenant(db: Session, name: str) -> tuple[Tenant, str]:
    tenant, key = create_api_key(db, name)
    return tenant, key


def add_utterances(services: Services, speaker_id: uuid.UUID, train: int, eval: int, offset: int = 0) -> None:
    ml = services.ml
    with services.session_factory() as db:
        speaker = db.get(Speaker, speaker_id)
        for i in range(train + eval):
            n = offset + i
            audio = tone(seconds=0.5, freq=200 + 37 * n)
            text = SENTENCES[n % len(SENTENCES)]
            ml.learn(audio, text)  # type: ignore[attr-defined]
            add_utterance(db, services.object_store, ml, services.settings, speaker, audio, text, "train" if i < train else "eval")
        db.commit()


def create_job(services: Services, speaker_id: uuid.UUID, head_type: HeadType = HeadType.linear) -> uuid.UUID:
    with services.session_factory() as db:
        speaker = db.get(Speaker, speaker_id)
        job = job_service.create_job(db, services.settings, speaker, head_type)
        db.commit()
        return job.id


def load_job(services: Services, job_id: uuid.UUID) -> AdaptationJob:
    with services.session_factory() as db:
        job = db.get(AdaptationJob, job_id)
        assert job is not None
        if job.evaluation is not None:  # load it while the session is open
            job.evaluation.reason
        return job
