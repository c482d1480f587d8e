"""What a request that met a database failure answers: not a 500 (the server has no bug, and a
client does not retry a 500) but

* 503 with ``Retry-After`` when the database cannot be reached (restarting, a connection cut,
  the pool's connections all gone): the SDK and the controllers try again, and the pool's
  pre-ping (``db.make_engine``) reconnects on the next checkout;
* 507 when SQLite or PostgreSQL reports its disk full: nothing of the request was stored (its transaction
  rolled back), jobs accepted earlier are intact, and the client is told why.

The cheaper, earlier refusal of new work on a nearly full disk is ``diskspace``."""

from __future__ import annotations

import logging
import sqlite3

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc

log = logging.getLogger("atomiverse.server.dberrors")
UNAVAILABLE_RETRY_AFTER_SECONDS = 2
DISK_FULL_RETRY_AFTER_SECONDS = 60
# Failures of the connection, not of the statement: worth another try once it is back.
CONNECTION_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError)


PG_DISK_FULL = "53100"  # SQLSTATE disk_full


def disk_full(error: BaseException) -> bool:
    """SQLite's SQLITE_FULL ("database or disk is full"), PostgreSQL's disk_full."""
    orig = getattr(error, "orig", error)
    if getattr(orig, "sqlstate", None) == PG_DISK_FULL:
        return True
    return isinstance(orig, sqlite3.OperationalError) and (
        getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        or "disk is full" in str(orig))


async def database_error(request: Request, error: Exception) -> JSONResponse:
    """The exception handler for ``CONNECTION_ERRORS`` (see the module docstring)."""
    where = f"{request.method} {request.url.path}"
    orig = getattr(error, "orig", None) or error
    if disk_full(error):
        log.error("event=disk_full request=%r: the database's disk is full", where)
        return JSONResponse(status_code=507, headers={
            "Retry-After": str(DISK_FULL_RETRY_AFTER_SECONDS)}, content={
            "detail": "Insufficient storage: the server's disk is full, so nothing of this "
                      "request was stored; jobs accepted earlier are safe. Retry once its "
                      "operator has freed space"})
    # The driver's message names the host and port, never the password; its first line is
    # enough to tell a restart from a cut.
    first_line = (str(orig).splitlines() or [""])[0][:200]
    log.warning("event=database_unavailable request=%r error=%s: %s", where,
                type(orig).__name__, first_line)
    return JSONResponse(status_code=503, headers={
        "Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)}, content={
        "detail": "Service unavailable: the server cannot reach its database just now "
                  "(restarting?); retry in a few seconds"})
