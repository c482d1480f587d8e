"""server-side dashboard sessions; a secret for opaque list cursors

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 04:00:00

* ``sessions``: one row per signed-in browser, keyed by the SHA-256 hash of the random cookie.
  The cookie used to be an HMAC keyed by the API key's stored hash, which anyone who could read
  the database could compute (issue 23); cookies made that way no longer sign anyone in.
* controllers that joined the managed pool by name only (another workspace's controller called
  ``local-<hostname>`` on an embedded server) leave it: only the embedded ``local`` workspace
  and the operator's ``managed-pool`` workspace register pool members (issue 23);
* ``server_secrets``: random values every server process on this database shares; ``cursor``
  keys the encryption of list cursors, which showed a global sequence number (issue 23).
"""
from __future__ import annotations

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("api_key_id", sa.String(32), sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_sessions_expires", "sessions", ["expires_at"])
    server_secrets = op.create_table(
        "server_secrets",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.String(128), nullable=False),
    )
    op.bulk_insert(server_secrets, [{"name": "cursor", "value": secrets.token_hex(32)}])
    op.execute(sa.text(
        "UPDATE controllers SET serves_managed = :no WHERE serves_managed = :yes AND "
        "workspace_id NOT IN (SELECT id FROM workspaces WHERE name IN ('local', 'managed-pool'))"
    ).bindparams(no=False, yes=True))


def downgrade() -> None:
    op.drop_table("server_secrets")
    op.drop_index("ix_sessions_expires", table_name="sessions")
    op.drop_table("sessions")
