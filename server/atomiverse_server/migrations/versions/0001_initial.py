"""initial schema: workspaces, api_keys, controllers, jobs and their indexes

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00

Exactly the tables and indexes ``atomiverse_server.db`` declared before migrations existed, so
a database created by ``metadata.create_all`` back then is this revision (``migrate`` stamps
it as such).
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workspaces",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(120), nullable=False, unique=True),
        sa.Column("balance", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("workspace_id", sa.String(32), sa.ForeignKey("workspaces.id"),
                  nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("label", sa.String(120)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float),
    )
    op.create_table(
        "controllers",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("workspace_id", sa.String(32), sa.ForeignKey("workspaces.id"),
                  nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("slots", sa.Integer, nullable=False),
        sa.Column("cores_per_job", sa.Integer, nullable=False),
        sa.Column("capacity", sa.Integer, nullable=False),
        sa.Column("engines", sa.JSON, nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("serves_managed", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("registered_at", sa.Float, nullable=False),
        sa.Column("last_seen_at", sa.Float, nullable=False),
        sa.UniqueConstraint("workspace_id", "name", name="uq_controller_name"),
    )
    op.create_table(
        "jobs",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(32), nullable=False, unique=True),
        sa.Column("workspace_id", sa.String(32), sa.ForeignKey("workspaces.id"),
                  nullable=False),
        sa.Column("name", sa.String(120)),
        sa.Column("job_type", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("compute_target", sa.String(100), nullable=False),
        sa.Column("controller_id", sa.String(32)),
        sa.Column("claimed_by", sa.String(32)),
        sa.Column("lease_id", sa.String(32)),
        sa.Column("lease_expires_at", sa.Float),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("walltime_seconds", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("result", sa.JSON),
        sa.Column("error", sa.Text),
        sa.Column("error_type", sa.String(32)),
        sa.Column("attempt_errors", sa.JSON),
        sa.Column("billed_core_seconds", sa.Float, nullable=False),
        sa.Column("cache_key", sa.String(64)),
        sa.Column("cached_from", sa.String(32)),
        sa.Column("preview", sa.JSON),
    )
    # The hot queries: list by workspace, newest first (keyset on seq); claim by target,
    # oldest first; the lease-expiry sweep; the result-cache lookup.
    op.create_index("ix_jobs_workspace_seq", "jobs", ["workspace_id", "seq"])
    op.create_index("ix_jobs_claim", "jobs", ["state", "controller_id", "seq"])
    op.create_index("ix_jobs_lease", "jobs", ["state", "lease_expires_at"])
    op.create_index("ix_jobs_cache", "jobs", ["workspace_id", "cache_key", "state"])


def downgrade() -> None:
    op.drop_table("jobs")
    op.drop_table("controllers")
    op.drop_table("api_keys")
    op.drop_table("workspaces")
