"""Initial schema: tenants, API keys, speakers, utterances, adaptation jobs, heads, evaluations.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Reviewed by hand from the autogenerate draft:
- every constraint and index carries the name storage.models.NAMING_CONVENTION gives it (op.f() marks a name
  as final), so later migrations can drop or alter them by name on Postgres and SQLite alike;
- enums are VARCHAR(32) without a CHECK (storage.models._enum): adding a value needs no DDL;
- timestamps are TIMESTAMP WITH TIME ZONE (storage.models.UTCDateTime on the Python side);
- "at most one active job per speaker" is the unique adaptation_jobs.active_speaker_id, kept equal to
  speaker_id exactly while the job is active by ck_adaptation_jobs_active_speaker_id_matches_state;
- "at most one head in service per speaker" is the partial unique index ix_heads_speaker_id_in_service;
- downgrade drops everything upgrade made, children before parents.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HEAD_TYPES = ("linear", "ffn")
HEAD_STATUSES = ("candidate", "in_service", "retired", "rejected")
JOB_STATES = ("queued", "training", "evaluating", "promoted", "rejected", "failed", "cancelled")
ACTIVE_JOB_STATES = "'queued', 'training', 'evaluating'"
SPLITS = ("train", "eval")
DECISIONS = ("promote", "reject")


def _enum(name: str, values: tuple[str, ...]) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, length=32)


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
        sa.UniqueConstraint("name", name=op.f("uq_tenants_name")),
    )

    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("revoked_at", _timestamp(), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_api_keys_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_tenant_id"), "api_keys", ["tenant_id"])

    op.create_table(
        "speakers",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("external_id", sa.String(length=256), nullable=True),
        sa.Column("display_name", sa.String(length=256), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_speakers_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_speakers")),
        sa.UniqueConstraint("tenant_id", "external_id", name=op.f("uq_speakers_tenant_id_external_id")),
    )
    op.create_index(op.f("ix_speakers_tenant_id"), "speakers", ["tenant_id"])

    op.create_table(
        "heads",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("speaker_id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("head_type", _enum("headtype", HEAD_TYPES), nullable=False),
        sa.Column("status", _enum("headstatus", HEAD_STATUSES), nullable=False),
        sa.Column("object_key", sa.String(length=512), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("parameters", sa.Integer(), nullable=False),
        sa.Column("backbone_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("controller_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("parent_head_id", sa.Uuid(), nullable=True),
        sa.Column("train_utterance_ids", sa.JSON(), nullable=False),
        sa.Column("train_metrics", sa.JSON(), nullable=False),
        sa.Column("promoted_at", _timestamp(), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["speaker_id"], ["speakers.id"], name=op.f("fk_heads_speaker_id_speakers"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_heads")),
        sa.UniqueConstraint("object_key", name=op.f("uq_heads_object_key")),
        sa.UniqueConstraint("speaker_id", "version", name=op.f("uq_heads_speaker_id_version")),
    )
    op.create_index(op.f("ix_heads_speaker_id"), "heads", ["speaker_id"])
    op.create_index(
        op.f("ix_heads_speaker_id_in_service"),
        "heads",
        ["speaker_id"],
        unique=True,
        postgresql_where=sa.text("status = 'in_service'"),
        sqlite_where=sa.text("status = 'in_service'"),
    )

    op.create_table(
        "utterances",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("speaker_id", sa.Uuid(), nullable=False),
        sa.Column("object_key", sa.String(length=512), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("sample_rate", sa.Integer(), nullable=False),
        sa.Column("original_sample_rate", sa.Integer(), nullable=False),
        sa.Column("original_channels", sa.Integer(), nullable=False),
        sa.Column("transcript", sa.Text(), nullable=False),
        sa.Column("split", _enum("split", SPLITS), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["speaker_id"], ["speakers.id"], name=op.f("fk_utterances_speaker_id_speakers"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_utterances")),
        sa.UniqueConstraint("object_key", name=op.f("uq_utterances_object_key")),
    )
    op.create_index(op.f("ix_utterances_speaker_id"), "utterances", ["speaker_id"])

    op.create_table(
        "adaptation_jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("speaker_id", sa.Uuid(), nullable=False),
        sa.Column("head_type", _enum("headtype", HEAD_TYPES), nullable=False),
        sa.Column("state", _enum("jobstate", JOB_STATES), nullable=False),
        sa.Column("active_speaker_id", sa.Uuid(), nullable=True),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("total_steps", sa.Integer(), nullable=True),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("budget", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("head_id", sa.Uuid(), nullable=True),
        sa.Column("started_at", _timestamp(), nullable=True),
        sa.Column("heartbeat_at", _timestamp(), nullable=True),
        sa.Column("finished_at", _timestamp(), nullable=True),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.CheckConstraint(
            f"(state IN ({ACTIVE_JOB_STATES}) AND active_speaker_id = speaker_id)"
            f" OR (state NOT IN ({ACTIVE_JOB_STATES}) AND active_speaker_id IS NULL)",
            name=op.f("ck_adaptation_jobs_active_speaker_id_matches_state"),
        ),
        sa.ForeignKeyConstraint(
            ["head_id"], ["heads.id"], name=op.f("fk_adaptation_jobs_head_id_heads"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["speaker_id"], ["speakers.id"], name=op.f("fk_adaptation_jobs_speaker_id_speakers"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adaptation_jobs")),
        sa.UniqueConstraint("active_speaker_id", name=op.f("uq_adaptation_jobs_active_speaker_id")),
    )
    op.create_index(op.f("ix_adaptation_jobs_speaker_id"), "adaptation_jobs", ["speaker_id"])
    op.create_index(op.f("ix_adaptation_jobs_state"), "adaptation_jobs", ["state"])

    op.create_table(
        "evaluations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("candidate_head_id", sa.Uuid(), nullable=True),
        sa.Column("reference_head_id", sa.Uuid(), nullable=True),
        sa.Column("base_wer", sa.Float(), nullable=False),
        sa.Column("in_service_wer", sa.Float(), nullable=True),
        sa.Column("candidate_wer", sa.Float(), nullable=False),
        sa.Column("eval_utterances", sa.Integer(), nullable=False),
        sa.Column("eval_words", sa.Integer(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("decision", _enum("decision", DECISIONS), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("report_key", sa.String(length=512), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["candidate_head_id"],
            ["heads.id"],
            name=op.f("fk_evaluations_candidate_head_id_heads"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["adaptation_jobs.id"], name=op.f("fk_evaluations_job_id_adaptation_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluations")),
        sa.UniqueConstraint("job_id", name=op.f("uq_evaluations_job_id")),
    )


def downgrade() -> None:
    op.drop_table("evaluations")
    op.drop_index(op.f("ix_adaptation_jobs_state"), table_name="adaptation_jobs")
    op.drop_index(op.f("ix_adaptation_jobs_speaker_id"), table_name="adaptation_jobs")
    op.drop_table("adaptation_jobs")
    op.drop_index(op.f("ix_utterances_speaker_id"), table_name="utterances")
    op.drop_table("utterances")
    op.drop_index(op.f("ix_heads_speaker_id_in_service"), table_name="heads")
    op.drop_index(op.f("ix_heads_speaker_id"), table_name="heads")
    op.drop_table("heads")
    op.drop_index(op.f("ix_speakers_tenant_id"), table_name="speakers")
    op.drop_table("speakers")
    op.drop_index(op.f("ix_api_keys_tenant_id"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("tenants")
