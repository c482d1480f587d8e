"""claims batch by batch, the costliest job of a batch first

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 20:00:00

* ``jobs.claim_rank``: a job's place in its batch's claim order, 0 for the costliest
  (``scheduling.py``); jobs stored before this revision get 0 and keep their seq order;
* ``ix_jobs_claim`` and ``ix_jobs_pending`` now end in the claim order
  (``created_at, claim_rank, seq``) instead of ``seq``.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("state = 'pending'")


def _claim_indexes(order: list[str]) -> None:
    op.drop_index("ix_jobs_pending", table_name="jobs")
    op.drop_index("ix_jobs_claim", table_name="jobs")
    op.create_index("ix_jobs_claim", "jobs", ["state", "controller_id", *order])
    op.create_index("ix_jobs_pending", "jobs", order, postgresql_where=PENDING,
                    sqlite_where=PENDING)


def upgrade() -> None:
    op.add_column("jobs", sa.Column("claim_rank", sa.Integer, nullable=False,
                                    server_default="0"))
    _claim_indexes(["created_at", "claim_rank", "seq"])


def downgrade() -> None:
    _claim_indexes(["seq"])
    op.drop_column("jobs", "claim_rank")
