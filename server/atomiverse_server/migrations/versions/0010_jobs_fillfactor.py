"""jobs on PostgreSQL: pages filled to 90%, so that a job's updates stay on its page

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 09:40:00

A job's row is written once and updated at least twice (its claim, its report) and on every
lease extension. An update that changes an indexed column (``state``) is never HOT, and its
new version goes wherever there is room: on a full page, somewhere else in the table. In a
big table whose pages are full, the 64 jobs of a claim and their new versions each sat on a
page of their own instead of a few pages between them, and the claim cost 1.25 times what it
costs in a small database (issue 30; ``bench/size.py``). With a tenth of each page kept for updates, a new
version stays beside the old one, and new jobs go to pages of their own.

``ALTER TABLE ... SET (fillfactor)`` changes no page that exists: pages written from now on
are filled so, the existing ones as they are rewritten (``VACUUM FULL``, ``pg_repack``).
SQLite has no fill factor.
"""
from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FILLFACTOR = 90


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE jobs SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE jobs RESET (fillfactor)")
