"""jobs: on SQLite, the small columns first and the large ones (payload, result) last

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 20:30:00

SQLite stores a row's values in column order, and a row that does not fit its page continues
on a chain of overflow pages. To read a column it reads every value stored before it: the list
page's summary (``preview``, ``billed_core_seconds``, ...) came after ``payload`` and
``result``, so each listed optimisation walked its trajectory's chain, ~75 pages a row, and a
list page of 100 cost 10 ms of server CPU instead of 1 (issue 22). The table is rebuilt
(alembic's batch "recreate": a new table in the new order, the rows copied by name, the old one
dropped, every index made again), which reads and writes the whole table once: about a
minute per 100,000 optimisations.

PostgreSQL needs nothing: a value past ~2 KB is compressed and moved out of line (TOAST), so
the row holds an 18-byte pointer and the columns after it cost nothing to reach.
"""
from __future__ import annotations

from collections.abc import Sequence

import logging

import sqlalchemy as sa
from alembic import op
from atomiverse_core.localhome import UPGRADE_NOTICE

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SAY_FROM_JOBS = 10_000

# Frozen here (not imported from db.py): this revision must build this table whatever db.py
# says later.
_LARGE_LAST = (
    "seq", "id", "workspace_id", "name", "job_type", "state", "compute_target",
    "controller_id", "claimed_by", "lease_id", "lease_expires_at", "attempts",
    "walltime_seconds", "created_at", "started_at", "finished_at", "error_type",
    "billed_core_seconds", "cache_key", "cached_from", "claim_rank", "parent_id", "step",
    "preview", "error", "attempt_errors", "payload", "result")
# Revision 0007's order: 0001's table, then the columns 0004 and 0006 added.
_AS_ADDED = (
    "seq", "id", "workspace_id", "name", "job_type", "state", "payload", "compute_target",
    "controller_id", "claimed_by", "lease_id", "lease_expires_at", "attempts",
    "walltime_seconds", "created_at", "started_at", "finished_at", "result", "error",
    "error_type", "attempt_errors", "billed_core_seconds", "cache_key", "cached_from",
    "preview", "claim_rank", "parent_id", "step")

PENDING = sa.text("state = 'pending'")
FOLLOWER = sa.text("cached_from IS NOT NULL")


def _columns() -> dict[str, sa.Column]:
    columns = [
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
        sa.Column("claim_rank", sa.Integer, nullable=False, server_default="0"),
        sa.Column("parent_id", sa.String(32)),
        sa.Column("step", sa.Integer),
    ]
    return {c.name: c for c in columns}


def _jobs_table(order: Sequence[str]) -> sa.Table:
    """The jobs table of revisions 0007 and 0008, its columns in ``order``, every index."""
    metadata = sa.MetaData()
    sa.Table("workspaces", metadata, sa.Column("id", sa.String(32), primary_key=True))
    columns = _columns()
    assert set(order) == set(columns)
    return sa.Table(
        "jobs", metadata, *(columns[name] for name in order),
        sa.Index("ix_jobs_workspace_seq", "workspace_id", "seq"),
        sa.Index("ix_jobs_parent", "parent_id"),
        sa.Index("ix_jobs_claim", "state", "controller_id", "created_at", "claim_rank", "seq"),
        sa.Index("ix_jobs_lease", "state", "lease_expires_at"),
        sa.Index("ix_jobs_cache", "workspace_id", "cache_key", "state"),
        sa.Index("ix_jobs_pending", "created_at", "claim_rank", "seq",
                 postgresql_where=PENDING, sqlite_where=PENDING),
        sa.Index("ix_jobs_cached_from", "cached_from", postgresql_where=FOLLOWER,
                 sqlite_where=FOLLOWER),
        sa.Index("ix_jobs_workspace_state_seq", "workspace_id", "state", "seq"),
    )


def _rebuild(order: Sequence[str]) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return  # TOAST (see above)
    count = bind.execute(sa.text("SELECT count(*) FROM jobs")).scalar() or 0
    if count >= _SAY_FROM_JOBS:  # a server that says nothing for minutes looks hung
        logging.getLogger("atomiverse_server").warning(
            "%s rewriting the jobs table (%d jobs) once, about a minute per 100,000 "
            "optimisations; the server answers when it is done.", UPGRADE_NOTICE, count)
    with op.batch_alter_table("jobs", recreate="always", copy_from=_jobs_table(order)):
        pass  # the recreate is the change: same columns, same indexes, new order


def upgrade() -> None:
    _rebuild(_LARGE_LAST)


def downgrade() -> None:
    _rebuild(_AS_ADDED)
