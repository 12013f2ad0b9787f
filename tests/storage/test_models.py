"""The schema's rules, enforced by the database itself, on SQLite and on PostgreSQL (migrated, not create_all)."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from storage.db import make_session_factory, session_scope
from storage.models import (
    AdaptationJob,
    ApiKey,
    Decision,
    Evaluation,
    Head,
    HeadStatus,
    HeadType,
    JobState,
    Speaker,
    Split,
    Tenant,
    Utterance,
)


def make_tenant(session: Session) -> Tenant:
    tenant = Tenant(name=f"tenant-{uuid.uuid4().hex[:8]}")
    session.add(tenant)
    session.flush()
    return tenant


def make_speaker(session: Session, tenant: Tenant, external_id: str | None = None) -> Speaker:
    speaker = Speaker(tenant_id=tenant.id, external_id=external_id)
    session.add(speaker)
    session.flush()
    return speaker


def make_utterance(session: Session, speaker: Speaker) -> Utterance:
    utterance = Utterance(
        speaker_id=speaker.id,
        object_key=f"k/{uuid.uuid4()}.flac",
        sha256="0" * 64,
        duration_s=1.5,
        sample_rate=16000,
        original_sample_rate=44100,
        original_channels=2,
        transcript="hello world",
        split=Split.train,
    )
    session.add(utterance)
    session.flush()
    return utterance


def make_job(session: Session, speaker: Speaker, state: JobState | None = None) -> AdaptationJob:
    job = AdaptationJob(speaker_id=speaker.id, head_type=HeadType.linear)
    if state is not None:
        job.state = state
    session.add(job)
    session.flush()
    return job


def make_head(session: Session, speaker: Speaker, version: int, status: HeadStatus = HeadStatus.candidate) -> Head:
    head = Head(
        speaker_id=speaker.id,
        version=version,
        head_type=HeadType.linear,
        status=status,
        object_key=f"h/{uuid.uuid4()}.safetensors",
        sha256="1" * 64,
        size_bytes=1234,
        parameters=99,
        backbone_fingerprint="b" * 64,
        controller_fingerprint="c" * 64,
        train_utterance_ids=[str(uuid.uuid4())],
    )
    session.add(head)
    session.flush()
    return head


def make_evaluation(session: Session, job: AdaptationJob, head: Head) -> Evaluation:
    evaluation = Evaluation(
        job_id=job.id,
        candidate_head_id=head.id,
        base_wer=0.4,
        candidate_wer=0.2,
        eval_utterances=5,
        eval_words=50,
        confidence=0.99,
        decision=Decision.promote,
        reason="better",
    )
    session.add(evaluation)
    session.flush()
    return evaluation


class TestActiveJobPerSpeaker:
    def test_new_job_marks_its_speaker_active(self, session: Session) -> None:
        speaker = make_speaker(session, make_tenant(session))
        job = make_job(session, speaker)
        assert job.state is JobState.queued
        assert job.active_speaker_id == speaker.id

    def test_second_active_job_for_same_speaker_is_rejected(self, session: Session) -> None:
        speaker = make_speaker(session, make_tenant(session))
        make_job(session, speaker)
        session.commit()
        with pytest.raises(IntegrityError, match="active_speaker_id"):
            make_job(session, speaker, state=JobState.training)

    def test_active_jobs_of_different_speakers_coexist(self, session: Session) -> None:
        tenant = make_tenant(session)
        make_job(session, make_speaker(session, tenant))
        make_job(session, make_speaker(session, tenant))
        session.commit()

    @pytest.mark.parametrize("final", [JobState.promoted, JobState.rejected, JobState.failed, JobState.cancelled])
    def test_ending_a_job_frees_the_speaker_for_a_new_one(self, session: Session, final: JobState) -> None:
        speaker = make_speaker(session, make_tenant(session))
        first = make_job(session, speaker)
        first.state = JobState.training
        session.flush()
        assert first.active_speaker_id == speaker.id
        first.state = final
        session.flush()
        assert first.active_speaker_id is None
        second = make_job(session, speaker)
        session.commit()
        assert second.active_speaker_id == speaker.id
        assert session.scalar(select(func.count()).where(AdaptationJob.speaker_id == speaker.id)) == 2

    def test_bulk_update_that_ends_a_job_must_clear_active_speaker_id(self, session: Session) -> None:
        speaker = make_speaker(session, make_tenant(session))
        job = make_job(session, speaker)
        session.commit()
        with pytest.raises(IntegrityError, match="ck_adaptation_jobs_active_speaker_id_matches_state"):
            session.execute(update(AdaptationJob).where(AdaptationJob.id == job.id).values(state=JobState.failed))
        session.rollback()
        session.execute(
            update(AdaptationJob)
            .where(AdaptationJob.id == job.id, AdaptationJob.state == JobState.queued)
            .values(state=JobState.failed, active_speaker_id=None)
        )
        session.commit()
        make_job(session, speaker)
        session.commit()


class TestHeads:
    def test_version_is_unique_per_speaker(self, session: Session) -> None:
        tenant = make_tenant(session)
        speaker, other = make_speaker(session, tenant), make_speaker(session, tenant)
        make_head(session, speaker, 1)
        make_head(session, speaker, 2)
        make_head(session, other, 1)
        session.commit()
        with pytest.raises(IntegrityError, match=r"uq_heads_speaker_id_version|heads\.speaker_id, heads\.version"):
            make_head(session, speaker, 2)

    def test_at_most_one_head_in_service_per_speaker(self, session: Session) -> None:
        tenant = make_tenant(session)
        speaker, other = make_speaker(session, tenant), make_speaker(session, tenant)
        make_head(session, speaker, 1, HeadStatus.retired)
        current = make_head(session, speaker, 2, HeadStatus.in_service)
        make_head(session, other, 1, HeadStatus.in_service)
        session.commit()
        in_service_violation = r"ix_heads_speaker_id_in_service|(?m:UNIQUE constraint failed: heads\.speaker_id$)"
        with pytest.raises(IntegrityError, match=in_service_violation):
            make_head(session, speaker, 3, HeadStatus.in_service)
        session.rollback()
        # Promotion in one transaction: retire the current head, then put the new one in service.
        candidate = make_head(session, speaker, 3, HeadStatus.candidate)
        current.status = HeadStatus.retired
        session.flush()
        candidate.status = HeadStatus.in_service
        session.commit()
        in_service = session.scalars(
            select(Head.version).where(Head.speaker_id == speaker.id, Head.status == HeadStatus.in_service)
        ).all()
        assert in_service == [3]

    def test_json_columns_round_trip(self, session: Session) -> None:
        head = make_head(session, make_speaker(session, make_tenant(session)), 1)
        head.train_metrics = {"loss": [1.5, 0.25], "steps": 10}
        session.commit()
        session.expire_all()
        assert session.get(Head, head.id).train_metrics == {"loss": [1.5, 0.25], "steps": 10}


class TestCascades:
    def _populate(self, session: Session) -> tuple[Tenant, Speaker, Speaker]:
        tenant = make_tenant(session)
        speaker, survivor = make_speaker(session, tenant), make_speaker(session, tenant)
        for who in (speaker, survivor):
            make_utterance(session, who)
            make_utterance(session, who)
            head = make_head(session, who, 1)
            job = make_job(session, who)
            job.head_id = head.id
            session.flush()
            make_evaluation(session, job, head)
        session.add(ApiKey(tenant_id=tenant.id, key_hash=uuid.uuid4().hex * 2, prefix="hra_abc"))
        session.commit()
        return tenant, speaker, survivor

    @staticmethod
    def _counts(session: Session, speaker_id: uuid.UUID) -> dict[str, int]:
        return {
            "utterances": session.scalar(select(func.count()).where(Utterance.speaker_id == speaker_id)),
            "jobs": session.scalar(select(func.count()).where(AdaptationJob.speaker_id == speaker_id)),
            "heads": session.scalar(select(func.count()).where(Head.speaker_id == speaker_id)),
            "evaluations": session.scalar(
                select(func.count())
                .select_from(Evaluation)
                .join(AdaptationJob)
                .where(AdaptationJob.speaker_id == speaker_id)
            ),
        }

    def test_database_deletes_a_speakers_rows_with_it(self, session: Session) -> None:
        _, speaker, survivor = self._populate(session)
        evaluations_before = session.scalar(select(func.count()).select_from(Evaluation))
        session.execute(delete(Speaker).where(Speaker.id == speaker.id))  # plain SQL: the database cascades
        session.commit()
        assert self._counts(session, speaker.id) == {"utterances": 0, "jobs": 0, "heads": 0, "evaluations": 0}
        assert self._counts(session, survivor.id) == {"utterances": 2, "jobs": 1, "heads": 1, "evaluations": 1}
        assert session.scalar(select(func.count()).select_from(Evaluation)) == evaluations_before - 1

    def test_orm_delete_of_a_speaker_with_loaded_children(self, session: Session) -> None:
        _, speaker, survivor = self._populate(session)
        session.expire_all()
        speaker = session.get(Speaker, speaker.id)
        assert len(speaker.utterances) == 2 and len(speaker.heads) == 1  # loaded: the ORM deletes these itself
        session.delete(speaker)
        session.commit()
        assert self._counts(session, speaker.id) == {"utterances": 0, "jobs": 0, "heads": 0, "evaluations": 0}
        assert self._counts(session, survivor.id)["utterances"] == 2

    def test_deleting_a_head_keeps_the_job_and_evaluation(self, session: Session) -> None:
        _, speaker, _ = self._populate(session)
        head_id = session.scalar(select(Head.id).where(Head.speaker_id == speaker.id))
        session.execute(delete(Head).where(Head.id == head_id))
        session.commit()
        session.expire_all()
        job = session.scalars(select(AdaptationJob).where(AdaptationJob.speaker_id == speaker.id)).one()
        assert job.head_id is None
        assert job.evaluation is not None and job.evaluation.candidate_head_id is None

    def test_deleting_a_tenant_deletes_everything_it_owns(self, session: Session) -> None:
        tenant, speaker, survivor = self._populate(session)
        session.execute(delete(Tenant).where(Tenant.id == tenant.id))
        session.commit()
        for model in (Speaker, Utterance, AdaptationJob, Head, Evaluation, ApiKey):
            assert session.scalar(select(func.count()).select_from(model)) == 0, model.__name__


class TestColumns:
    def test_external_id_is_unique_per_tenant_and_optional(self, session: Session) -> None:
        tenant, other = make_tenant(session), make_tenant(session)
        make_speaker(session, tenant, "alice")
        make_speaker(session, other, "alice")
        make_speaker(session, tenant, None)
        make_speaker(session, tenant, None)
        session.commit()
        with pytest.raises(
            IntegrityError, match=r"uq_speakers_tenant_id_external_id|speakers\.tenant_id, speakers\.external_id"
        ):
            make_speaker(session, tenant, "alice")

    def test_timestamps_come_back_aware_in_utc(self, session: Session) -> None:
        speaker = make_speaker(session, make_tenant(session))
        job = make_job(session, speaker)
        plus_two = timezone(timedelta(hours=2))
        job.started_at = datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=plus_two)
        session.commit()
        session.expire_all()
        job = session.get(AdaptationJob, job.id)
        assert job.started_at == datetime(2030, 1, 2, 1, 4, 5, 123456, tzinfo=timezone.utc)
        assert job.started_at.utcoffset() == timedelta(0)
        assert job.created_at.tzinfo is not None
        assert abs(datetime.now(timezone.utc) - job.created_at) < timedelta(minutes=5)
        assert job.updated_at >= job.created_at

    def test_timestamps_compare_in_sql_across_offsets(self, session: Session) -> None:
        speaker = make_speaker(session, make_tenant(session))
        job = make_job(session, speaker)
        job.heartbeat_at = datetime(2030, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=-5)))  # 17:00 UTC
        session.commit()
        cutoff = datetime(2030, 1, 1, 16, 0, tzinfo=timezone.utc)
        assert session.scalar(select(func.count()).where(AdaptationJob.heartbeat_at > cutoff)) == 1
        assert session.scalar(select(func.count()).where(AdaptationJob.heartbeat_at > cutoff + timedelta(hours=2))) == 0

    def test_naive_timestamp_is_refused(self, session: Session) -> None:
        job = make_job(session, make_speaker(session, make_tenant(session)))
        job.finished_at = datetime(2030, 1, 1)
        with pytest.raises(StatementError, match="naive datetime"):
            session.flush()

    def test_enum_columns_store_their_values(self, session: Session) -> None:
        utterance = make_utterance(session, make_speaker(session, make_tenant(session)))
        session.commit()
        raw = session.connection().exec_driver_sql("SELECT split FROM utterances").scalar()
        assert raw == "train"
        session.expire_all()
        assert session.get(Utterance, utterance.id).split is Split.train


def test_racing_job_creations_for_one_speaker_let_exactly_one_win(engine: Engine) -> None:
    """Separate sessions (as separate API replicas would) insert at the same moment: the database decides."""
    factory = make_session_factory(engine)
    with session_scope(factory) as session:
        speaker_id = make_speaker(session, make_tenant(session)).id
    racers = 4
    barrier = threading.Barrier(racers)
    outcomes: list[str] = []

    def create() -> None:
        barrier.wait()
        try:
            with session_scope(factory) as session:
                session.add(AdaptationJob(speaker_id=speaker_id, head_type=HeadType.ffn))
            outcomes.append("created")
        except IntegrityError:
            outcomes.append("refused")

    threads = [threading.Thread(target=create) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["created"] + ["refused"] * (racers - 1)
