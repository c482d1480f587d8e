"""rate limits and idempotency keys

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 13:10:00

* ``rate_limits``: one GCRA row per (kind, workspace), shared by every server process;
* ``idempotency_keys``: the first response to a batch, returned again for a retry that
  carries the same Idempotency-Key (kept 24 hours).
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("tat", sa.Float, nullable=False),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("workspace_id", sa.String(32), sa.ForeignKey("workspaces.id"),
                  primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("response", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_idempotency_created", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_created", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_table("rate_limits")
