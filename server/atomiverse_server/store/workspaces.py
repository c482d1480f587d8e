"""Workspaces and their API keys."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .. import security
from ..db import api_keys, workspaces
from ._time import now


@dataclass(frozen=True)
class Workspace:
    id: str
    name: str
    balance: float


def create_workspace(conn: Connection, *, name: str, balance: float = 0.0) -> Workspace:
    ws = Workspace(id=security.new_id(), name=name, balance=balance)
    conn.execute(workspaces.insert().values(id=ws.id, name=name, balance=balance,
                                            created_at=now()))
    return ws


def get_workspace_by_name(conn: Connection, *, name: str) -> Workspace | None:
    row = conn.execute(sa.select(workspaces).where(workspaces.c.name == name)).first()
    return Workspace(row.id, row.name, row.balance) if row else None


def get_workspace(conn: Connection, *, workspace_id: str) -> Workspace | None:
    row = conn.execute(sa.select(workspaces).where(workspaces.c.id == workspace_id)).first()
    return Workspace(row.id, row.name, row.balance) if row else None


def issue_api_key(conn: Connection, *, workspace_id: str, label: str | None = None) -> str:
    """Create a key and return it; only its hash is stored, so this is the one time it is seen."""
    key = security.new_api_key()
    conn.execute(api_keys.insert().values(
        id=security.new_id(), workspace_id=workspace_id, key_hash=security.hash_secret(key),
        prefix=security.display_prefix(key), label=label, created_at=now()))
    return key


def revoke_api_key(conn: Connection, *, workspace_id: str, prefix: str) -> int:
    res = conn.execute(api_keys.update()
                       .where(api_keys.c.workspace_id == workspace_id,
                              api_keys.c.prefix == prefix, api_keys.c.revoked_at.is_(None))
                       .values(revoked_at=now()))
    return res.rowcount


def workspace_for_api_key(conn: Connection, *, key: str) -> Workspace | None:
    if not key.startswith(security.API_KEY_PREFIX):
        return None
    key_hash = security.hash_secret(key)
    row = conn.execute(
        sa.select(workspaces.c.id, workspaces.c.name, workspaces.c.balance, api_keys.c.key_hash)
        .join(api_keys, api_keys.c.workspace_id == workspaces.c.id)
        .where(api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None))
    ).first()
    if row is None or not security.secret_matches(key, row.key_hash):
        return None
    return Workspace(row.id, row.name, row.balance)


def set_balance(conn: Connection, *, workspace_id: str, balance: float) -> None:
    conn.execute(workspaces.update().where(workspaces.c.id == workspace_id)
                 .values(balance=balance))
