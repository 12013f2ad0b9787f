"""Per-tenant quota overrides; the stored size of each utterance (the stored-bytes quota).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

Reviewed by hand:
- tenants.quotas: JSON object of per-tenant overrides of the ``quota_*`` settings (``hra tenants quota``); NULL
  means the defaults (app.services.quotas);
- utterances.size_bytes: the stored FLAC's size. Existing rows are backfilled with an upper estimate (16-bit
  16 kHz mono PCM: 32,000 bytes a second of audio; FLAC is smaller), so that usage is never under-counted;
  NOT NULL with a server default of 0, so that adding it needs no table rebuild on SQLite;
- downgrade drops both (batch mode on SQLite, which migrations/env.py runs with foreign keys off).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PCM_BYTES_PER_SECOND = 32_000


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("quotas", sa.JSON(), nullable=True))
    with op.batch_alter_table("utterances") as batch:
        batch.add_column(sa.Column("size_bytes", sa.BigInteger(), nullable=False, server_default=sa.text("0")))
    op.execute(f"UPDATE utterances SET size_bytes = CAST(duration_s * {PCM_BYTES_PER_SECOND} AS BIGINT)")


def downgrade() -> None:
    with op.batch_alter_table("utterances") as batch:
        batch.drop_column("size_bytes")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("quotas")
