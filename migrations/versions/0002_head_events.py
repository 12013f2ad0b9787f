"""head_events: who promoted or retired a head version by hand, when and why (operator rollbacks).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Reviewed by hand: names follow storage.models.NAMING_CONVENTION; enums are VARCHAR(32) without a CHECK, as in
0001; rows go with their head or speaker (ON DELETE CASCADE); downgrade drops the table and its indexes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HEAD_STATUSES = ("candidate", "in_service", "retired", "rejected")
HEAD_ACTIONS = ("promote", "retire")


def _enum(name: str, values: tuple[str, ...]) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, length=32)


def upgrade() -> None:
    op.create_table(
        "head_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("speaker_id", sa.Uuid(), nullable=False),
        sa.Column("head_id", sa.Uuid(), nullable=False),
        sa.Column("action", _enum("headaction", HEAD_ACTIONS), nullable=False),
        sa.Column("from_status", _enum("headstatus", HEAD_STATUSES), nullable=False),
        sa.Column("to_status", _enum("headstatus", HEAD_STATUSES), nullable=False),
        sa.Column("replaced_head_id", sa.Uuid(), nullable=True),
        sa.Column("actor_key_id", sa.Uuid(), nullable=True),
        sa.Column("actor", sa.String(length=256), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["head_id"], ["heads.id"], name=op.f("fk_head_events_head_id_heads"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["speaker_id"], ["speakers.id"], name=op.f("fk_head_events_speaker_id_speakers"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_head_events")),
    )
    op.create_index(op.f("ix_head_events_head_id"), "head_events", ["head_id"])
    op.create_index(op.f("ix_head_events_speaker_id"), "head_events", ["speaker_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_head_events_speaker_id"), table_name="head_events")
    op.drop_index(op.f("ix_head_events_head_id"), table_name="head_events")
    op.drop_table("head_events")
