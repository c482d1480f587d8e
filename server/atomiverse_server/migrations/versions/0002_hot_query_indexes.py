"""indexes for managed-pool claims, cache followers and state-filtered listing

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02 00:00:00

* ``ix_jobs_pending`` (partial, pending only): claims by a controller serving the managed
  pool, whose routing is an OR the ``ix_jobs_claim`` order cannot serve;
* ``ix_jobs_cached_from`` (partial, followers only): settling the jobs that waited on a
  cache leader when it finishes;
* ``ix_jobs_workspace_state_seq``: ``list_jobs`` filtered by state, ``count_by_state``.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("state = 'pending'")
FOLLOWER = sa.text("cached_from IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_jobs_pending", "jobs", ["seq"], postgresql_where=PENDING,
                    sqlite_where=PENDING)
    op.create_index("ix_jobs_cached_from", "jobs", ["cached_from"], postgresql_where=FOLLOWER,
                    sqlite_where=FOLLOWER)
    op.create_index("ix_jobs_workspace_state_seq", "jobs", ["workspace_id", "state", "seq"])


def downgrade() -> None:
    op.drop_index("ix_jobs_workspace_state_seq", table_name="jobs")
    op.drop_index("ix_jobs_cached_from", table_name="jobs")
    op.drop_index("ix_jobs_pending", table_name="jobs")
