"""New work is refused before the disk is full, not when a write fails on it.

A SQLite database keeps growing with every batch and result; once its disk is full, a write
fails half-way through a request (``dberrors`` turns that into a 507, and SQLite rolls the
transaction back). A check of the free space (one ``statvfs``, microseconds) before a
submission is read refuses it early with a 507 that says why, and leaves the last
``min_free_disk_mb`` for what is already accepted: results, leases, the write-ahead log.

Only where the server's data is on its own disk: the SQLite file's directory. A PostgreSQL
server's disk is its operator's to watch (PostgreSQL refuses writes itself, which is a 503)."""

from __future__ import annotations

import logging
import shutil
from functools import lru_cache
from pathlib import Path

from fastapi import HTTPException
from sqlalchemy.engine import make_url

from .settings import Settings, database_url_or_default

log = logging.getLogger("atomiverse.server.diskspace")
MB = 1024 * 1024
RETRY_AFTER_SECONDS = 60


def data_directory(settings: Settings) -> Path | None:
    """The directory holding the SQLite database file (None for another database)."""
    return _sqlite_directory(settings.database_url, settings.home)


@lru_cache(maxsize=16)
def _sqlite_directory(database_url: str | None, home: Path) -> Path | None:
    # Parsed once per database: before every submission, parsing its URL and joining its
    # path cost twice the free-space check itself (issue 28: 3% of the server's CPU a call).
    url = make_url(database_url_or_default(database_url, home))
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).parent


def free_mb(directory: Path) -> float:
    return shutil.disk_usage(directory).free / MB


def refuse_new_work_if_disk_nearly_full(settings: Settings) -> None:
    """HTTPException 507 if the database's disk has less than ``min_free_disk_mb`` free."""
    if settings.min_free_disk_mb <= 0:
        return
    directory = data_directory(settings)
    if directory is None:
        return
    try:
        free = free_mb(directory)
    except OSError:  # the directory is gone or unreadable: the write will say what is wrong
        return
    if free < settings.min_free_disk_mb:
        log.error("event=disk_nearly_full free_mb=%.1f min_free_disk_mb=%g dir=%s", free,
                  settings.min_free_disk_mb, directory)
        raise HTTPException(507, (
            f"Insufficient storage: the server's disk is nearly full ({free:.0f} MB free, "
            f"below the {settings.min_free_disk_mb:g} MB it keeps free, min_free_disk_mb), "
            f"so it accepts no new jobs until its operator frees space; jobs accepted "
            f"earlier are safe and keep running"),
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
