"""composite jobs: a child job names its parent and its step

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 07:00:00

A chain (and any composite job type) runs on the server as ordinary child jobs; ``parent_id``
and ``step`` are how it finds them again, also after a restart (issue 27).
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (nullable, no default): instant on SQLite and PostgreSQL however many
    # jobs the table holds.
    op.add_column("jobs", sa.Column("parent_id", sa.String(32)))
    op.add_column("jobs", sa.Column("step", sa.Integer))
    op.create_index("ix_jobs_parent", "jobs", ["parent_id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_parent", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("step")
        batch.drop_column("parent_id")
