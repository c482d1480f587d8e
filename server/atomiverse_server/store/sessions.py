"""Dashboard sign-in sessions: a signed cookie that names an API key and never holds it.

The cookie is ``<api_key_id>.<expires>.<nonce>.<mac>``, where ``mac`` is an HMAC-SHA256 of the
other three fields keyed by the key's stored hash. Nothing is stored server-side, so any server
process can check a session and there is nothing to clean up, and a session dies with its key:
revoke the key and every session opened with it stops working. Signing out clears the cookie
in the browser; a copy of the cookie taken before then stays valid until it expires.

The CSRF token is a second HMAC over the same fields: the page embeds it and the browser sends
it back in a header. A cross-site page can neither read the cookie nor compute the token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .. import security
from ..db import api_keys, workspaces
from .workspaces import Workspace

SESSION_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class Session:
    workspace: Workspace
    cookie: str
    csrf_token: str
    expires_at: int


def open_session(conn: Connection, *, api_key: str,
                 max_age: int = SESSION_SECONDS) -> Session | None:
    """A new session for a valid, unrevoked API key; None otherwise."""
    if not api_key.startswith(security.API_KEY_PREFIX):
        return None
    row = _key_row(conn, api_keys.c.key_hash == security.hash_secret(api_key))
    if row is None or not security.secret_matches(api_key, row.key_hash):
        return None
    fields = f"{row.key_id}.{int(time.time()) + max_age}.{secrets.token_urlsafe(12)}"
    return _session(row, fields)


def resolve_session(conn: Connection, *, cookie: str) -> Session | None:
    """The session a cookie carries, if it is well formed, unexpired, correctly signed and
    its key is still valid."""
    parts = cookie.split(".")
    if len(parts) != 4 or not all(parts) or len(cookie) > 200:
        return None
    key_id, expires, _nonce, _mac = parts
    if not expires.isdigit() or int(expires) < time.time():
        return None
    row = _key_row(conn, api_keys.c.id == key_id)
    if row is None:
        return None
    session = _session(row, cookie.rpartition(".")[0])
    return session if hmac.compare_digest(session.cookie, cookie) else None


def _key_row(conn: Connection, condition: sa.ColumnElement[bool]):  # type: ignore[no-untyped-def]
    return conn.execute(
        sa.select(api_keys.c.id.label("key_id"), api_keys.c.key_hash, workspaces.c.id,
                  workspaces.c.name, workspaces.c.balance)
        .join(workspaces, workspaces.c.id == api_keys.c.workspace_id)
        .where(condition, api_keys.c.revoked_at.is_(None))
    ).first()


def _session(row, fields: str) -> Session:  # type: ignore[no-untyped-def]
    secret = bytes.fromhex(row.key_hash)
    mac = hmac.new(secret, b"session|" + fields.encode(), hashlib.sha256).hexdigest()
    csrf = hmac.new(secret, b"csrf|" + fields.encode(), hashlib.sha256).hexdigest()
    return Session(workspace=Workspace(row.id, row.name, row.balance), cookie=f"{fields}.{mac}",
                   csrf_token=csrf, expires_at=int(fields.split(".")[1]))
