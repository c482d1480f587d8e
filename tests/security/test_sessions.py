"""Finding: the dashboard cookie was an HMAC keyed by the API key's stored hash, so whoever could
read the database could forge a session for every workspace; signing out only cleared the
browser's copy. Now sessions are server-side records of a random cookie kept only as a hash:
nothing in the database makes a cookie, and sign-out or key revocation ends the session for
every copy of it. Checked against a real server process and its real SQLite file."""

from __future__ import annotations

import hashlib
import hmac
import re
import sqlite3
import time
from contextlib import closing

import httpx2 as httpx
import pytest

COOKIE = "atomiverse_session"


def _sign_in(url: str, key: str) -> str:
    r = httpx.post(f"{url}/signin", data={"api_key": key, "next": "/jobs"},
                   follow_redirects=False)
    assert r.status_code == 303, r.text[:300]
    return r.cookies[COOKIE]


def _jobs_status(url: str, cookie: str) -> int:
    return httpx.get(f"{url}/api/v1/jobs", cookies={COOKIE: cookie}).status_code


def _csrf(url: str, cookie: str) -> str:
    page = httpx.get(f"{url}/jobs", cookies={COOKIE: cookie}).text
    return re.search(r'name="csrf-token" content="([0-9a-f]+)"', page).group(1)


def _database_rows(server, sql: str) -> list[tuple]:
    """What another local user who could read the database file would see."""
    path = server.database_url.removeprefix("sqlite:///")
    # closing(): sqlite3's own `with` does not close, and an unclosed connection is a
    # ResourceWarning on Python 3.13, raised in whichever later test collects it.
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return db.execute(sql).fetchall()


@pytest.fixture
def workspace(server):
    name = f"sessions-{time.monotonic_ns()}"
    return name, server.new_workspace(name)


@pytest.fixture
def key(workspace):
    return workspace[1]


def test_nothing_in_the_database_makes_a_session(server, key):
    assert _jobs_status(server.url, _sign_in(server.url, key)) == 200
    # The old recipe: <key id>.<expires>.<nonce>.HMAC(stored key hash, "session|" + fields)
    forged = []
    for key_id, key_hash in _database_rows(server, "SELECT id, key_hash FROM api_keys"):
        fields = f"{key_id}.{int(time.time()) + 3600}.nonce"
        mac = hmac.new(bytes.fromhex(key_hash), b"session|" + fields.encode(),
                       hashlib.sha256).hexdigest()
        forged.append(f"{fields}.{mac}")
    # And whatever the session table holds, used as a cookie as it is.
    tables = {t for (t,) in _database_rows(server, "SELECT name FROM sqlite_master")}
    if "sessions" in tables:
        forged += [f"avs_{h}" for (h,) in _database_rows(server,
                                                          "SELECT token_hash FROM sessions")]
        forged += [h for (h,) in _database_rows(server, "SELECT token_hash FROM sessions")]
    assert forged
    assert {_jobs_status(server.url, cookie) for cookie in forged} == {401}


def test_sign_out_ends_every_copy_of_the_session(server, key):
    cookie = _sign_in(server.url, key)
    copy = cookie  # what a shoulder-surfer or a stolen cookie jar kept
    r = httpx.post(f"{server.url}/signout", cookies={COOKIE: cookie},
                   data={"csrf_token": _csrf(server.url, cookie)}, follow_redirects=False)
    assert r.status_code == 303
    assert _jobs_status(server.url, copy) == 401
    assert httpx.get(f"{server.url}/jobs", cookies={COOKIE: copy},
                     follow_redirects=False).status_code == 303  # back to /signin


def test_revoking_the_key_ends_its_sessions(server, workspace):
    name, key = workspace
    cookie = _sign_in(server.url, key)
    other = _sign_in(server.url, server.new_workspace(f"bystander-{time.monotonic_ns()}"))
    assert _jobs_status(server.url, cookie) == 200
    server.admin("revoke-key", name, key[:8])
    assert _jobs_status(server.url, cookie) == 401
    assert _jobs_status(server.url, other) == 200
