"""controller pools: a member names the pool whose jobs it claims too

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 10:00:00

Controllers a batch scheduler starts for one target (``atomiverse scale``) register as members
of the target's pool controller and claim the jobs routed to it (issue 29).
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: instant on SQLite and PostgreSQL.
    op.add_column("controllers", sa.Column("pool_id", sa.String(32)))


def downgrade() -> None:
    with op.batch_alter_table("controllers") as batch:
        batch.drop_column("pool_id")
