"""jobs: the result cache's index in two, done jobs and active ones, so a claim writes no cold page

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 09:00:00

An update that changes ``state`` puts the row's new version into every index of ``jobs``
(PostgreSQL: no HOT update). ``ix_jobs_cache (workspace_id, cache_key, state)`` holds every
job, keyed by a hash: a claim's new version landed beside the old one, on a leaf page anywhere
in the index, which in a big database is not in memory. With 1,000,000 jobs a claim of 64
read 64 pages this way, the one cost that grew with the table (issue 30). Now:

* ``ix_jobs_cache_done (workspace_id, cache_key)``, done jobs: the results that answer a
  submission; a job enters it once, when it finishes;
* ``ix_jobs_cache_active (workspace_id, cache_key)``, pending and running jobs: those a
  submission waits on; as small as the queue, so a claim writes into a page in memory.

Jobs without a cache key (``use_cache`` off) are in neither. A lookup's ``cache_key IN
(...)`` implies the key is not null, so both databases use these partial indexes for it.

Building them reads the table once: 0.6 s for 200,000 jobs on SQLite on a 2-core machine.
PostgreSQL blocks writes to ``jobs`` meanwhile.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DONE = sa.text("state = 'done' AND cache_key IS NOT NULL")
ACTIVE = sa.text("(state = 'pending' OR state = 'running') AND cache_key IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_jobs_cache_done", "jobs", ["workspace_id", "cache_key"],
                    postgresql_where=DONE, sqlite_where=DONE)
    op.create_index("ix_jobs_cache_active", "jobs", ["workspace_id", "cache_key", "state"],
                    postgresql_where=ACTIVE, sqlite_where=ACTIVE)
    op.drop_index("ix_jobs_cache", table_name="jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_cache", "jobs", ["workspace_id", "cache_key", "state"])
    op.drop_index("ix_jobs_cache_active", table_name="jobs")
    op.drop_index("ix_jobs_cache_done", table_name="jobs")
