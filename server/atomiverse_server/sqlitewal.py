"""SQLite's write-ahead log: switching a file to it, safely when several processes open a
new file at once."""

from __future__ import annotations

import sqlite3
from typing import Any

import tenacity

# How long a connection waits for another's lock on the SQLite file.
SQLITE_BUSY_SECONDS = 30


def use_wal(dbapi_conn: Any) -> None:
    """Put the SQLite file in WAL mode (a file stays so). Two connections switching a new
    file at once can each hold a read lock and want the write lock; rather than deadlock,
    SQLite answers one of them "database is locked" at once, without its busy wait (the
    likely cause of one of four processes migrating one new database failing so on a loaded
    machine). That one tries again, and finds the file switched."""
    for attempt in tenacity.Retrying(
            retry=tenacity.retry_if_exception(_locked), reraise=True,
            wait=tenacity.wait_random_exponential(multiplier=0.01, max=0.5),
            stop=tenacity.stop_after_delay(SQLITE_BUSY_SECONDS)):
        with attempt:
            cur = dbapi_conn.cursor()
            try:
                if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                    cur.execute("PRAGMA journal_mode=WAL")
            finally:
                cur.close()


def _locked(e: BaseException) -> bool:
    return isinstance(e, sqlite3.OperationalError) and "locked" in str(e)
