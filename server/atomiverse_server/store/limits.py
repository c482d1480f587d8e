"""Rate limits (GCRA, one row per key) and idempotency keys, both in the database so that
several server processes behave as one."""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa
from atomiverse_core import jsonio
from sqlalchemy.engine import Connection

from ..db import idempotency_keys, is_postgres, rate_limits
from ._time import now

IDEMPOTENCY_TTL_SECONDS = 24 * 3600.0


def _insert_ignore(conn: Connection, table: sa.Table, values: dict[str, Any]) -> None:
    if is_postgres(conn.engine):
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    conn.execute(insert(table).values(**values).on_conflict_do_nothing())


def take(conn: Connection, *, key: str, per_minute: int) -> float | None:
    """Spend one request of ``key``'s allowance: ``per_minute`` at once, then one every
    60/per_minute seconds. Returns None if allowed, else the seconds to wait."""
    t = now()
    interval = 60.0 / per_minute
    burst = interval * (per_minute - 1)
    _insert_ignore(conn, rate_limits, {"key": key, "tat": t})
    q = sa.select(rate_limits.c.tat).where(rate_limits.c.key == key)
    if is_postgres(conn.engine):
        q = q.with_for_update()
    tat = max(conn.execute(q).scalar_one(), t)
    if tat - t > burst:
        return tat - burst - t
    conn.execute(rate_limits.update().where(rate_limits.c.key == key)
                 .values(tat=tat + interval))
    return None


def request_hash(body: Any) -> str:
    # No key sorting: a retry resends the same bytes, so its keys come in the same order.
    return hashlib.sha256(jsonio.dumps(body)).hexdigest()


def find_response(conn: Connection, *, workspace_id: str, key: str) -> tuple[str, Any] | None:
    row = conn.execute(sa.select(idempotency_keys.c.request_hash, idempotency_keys.c.response)
                       .where(idempotency_keys.c.workspace_id == workspace_id,
                              idempotency_keys.c.key == key,
                              idempotency_keys.c.created_at > now() - IDEMPOTENCY_TTL_SECONDS)
                       ).first()
    return (row.request_hash, row.response) if row else None


def save_response(conn: Connection, *, workspace_id: str, key: str, digest: str,
                  response: Any) -> None:
    conn.execute(idempotency_keys.delete().where(idempotency_keys.c.workspace_id == workspace_id,
                                                 idempotency_keys.c.key == key))
    conn.execute(idempotency_keys.insert().values(workspace_id=workspace_id, key=key,
                                                  request_hash=digest, response=response,
                                                  created_at=now()))


def forget_old_responses(conn: Connection) -> int:
    res = conn.execute(idempotency_keys.delete().where(
        idempotency_keys.c.created_at < now() - IDEMPOTENCY_TTL_SECONDS))
    return res.rowcount
