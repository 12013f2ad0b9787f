"""Erasure tombstone on speakers; API key label and last use.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

Reviewed by hand:
- speakers.deleted_at: the tombstone a speaker deletion sets first (every lookup then treats the speaker as gone);
- api_keys.label (what the key is for, e.g. "hra run") and api_keys.last_used_at (refreshed at most hourly), shown
  by ``hra keys list``;
- the new head status ``withdrawn`` is data only (enums are VARCHAR(32) without a CHECK, see 0001);
- nullable columns only, so existing rows need no backfill; downgrade drops them (batch mode on SQLite, which
  migrations/env.py runs with foreign keys off).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("speakers") as batch:
        batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("label", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("last_used_at")
        batch.drop_column("label")
    with op.batch_alter_table("speakers") as batch:
        batch.drop_column("deleted_at")
