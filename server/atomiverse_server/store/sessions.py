"""Dashboard sign-in sessions: server-side records named by a random cookie.

The cookie is ``avs_<random>``; the database keeps only its SHA-256 hash, the API key it was
opened with and when it expires. Whoever can read the database therefore cannot make a cookie
(the cookie used to be an HMAC keyed by the key's stored hash: a database reader could forge a
session for every workspace). Signing out deletes the record, so a copy of the cookie taken
before then stops working; revoking the key ends every session opened with it (the lookup
requires an unrevoked key). Any server process sharing the database can check a session.

The CSRF token is an HMAC of a fixed label keyed by the cookie itself: the page embeds it and
the browser sends it back in a header. A cross-site page can neither read the cookie nor compute
the token, and nothing in the database gives it either.
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
from ..db import api_keys, sessions, workspaces
from .workspaces import Workspace

SESSION_SECONDS = 7 * 24 * 3600
SESSION_PREFIX = "avs_"
_COOKIE_MAX_CHARS = 100


@dataclass(frozen=True)
class Session:
    workspace: Workspace
    cookie: str
    csrf_token: str
    expires_at: int


def open_session(conn: Connection, *, api_key: str,
                 max_age: int = SESSION_SECONDS) -> Session | None:
    """A new session for a valid, unrevoked API key (stored: call in a write transaction);
    None otherwise. Expired sessions are swept here, where a write happens anyway."""
    if not api_key.startswith(security.API_KEY_PREFIX):
        return None
    row = _key_row(conn, api_keys.c.key_hash == security.hash_secret(api_key))
    if row is None or not security.secret_matches(api_key, row.key_hash):
        return None
    now = time.time()
    conn.execute(sa.delete(sessions).where(sessions.c.expires_at < now))
    cookie = SESSION_PREFIX + secrets.token_urlsafe(32)
    expires_at = int(now) + max_age
    conn.execute(sa.insert(sessions).values(
        token_hash=security.hash_secret(cookie), api_key_id=row.key_id, created_at=now,
        expires_at=expires_at))
    return _session(row, cookie, expires_at)


def resolve_session(conn: Connection, *, cookie: str) -> Session | None:
    """The session a cookie names, if it exists, is unexpired and its key is unrevoked."""
    if not cookie.startswith(SESSION_PREFIX) or len(cookie) > _COOKIE_MAX_CHARS:
        return None
    row = _key_row(conn, sessions.c.token_hash == security.hash_secret(cookie),
                   sessions.c.expires_at > time.time(), with_session=True)
    return None if row is None else _session(row, cookie, int(row.expires_at))


def end_session(conn: Connection, *, cookie: str) -> None:
    """Sign out: the record goes, and with it every copy of the cookie."""
    if cookie.startswith(SESSION_PREFIX) and len(cookie) <= _COOKIE_MAX_CHARS:
        conn.execute(sa.delete(sessions).where(
            sessions.c.token_hash == security.hash_secret(cookie)))


def _key_row(conn: Connection, *conditions: sa.ColumnElement[bool],
             with_session: bool = False):  # type: ignore[no-untyped-def]
    columns = [api_keys.c.id.label("key_id"), api_keys.c.key_hash, workspaces.c.id,
               workspaces.c.name, workspaces.c.balance]
    source = api_keys.join(workspaces, workspaces.c.id == api_keys.c.workspace_id)
    if with_session:
        columns.append(sessions.c.expires_at)
        source = source.join(sessions, sessions.c.api_key_id == api_keys.c.id)
    return conn.execute(
        sa.select(*columns).select_from(source)
        .where(*conditions, api_keys.c.revoked_at.is_(None))
    ).first()


def _session(row, cookie: str, expires_at: int) -> Session:  # type: ignore[no-untyped-def]
    csrf = hmac.new(cookie.encode(), b"csrf", hashlib.sha256).hexdigest()
    return Session(workspace=Workspace(row.id, row.name, row.balance), cookie=cookie,
                   csrf_token=csrf, expires_at=expires_at)
