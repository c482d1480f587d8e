"""Why the embedded server cannot start, said in seconds, and the restart budget.

Before a start the home is checked for what would make the server hang or die (a database
locked by a stuck process, a corrupt database file, a full disk); a server that still exits
while starting is reported with the last lines it logged. Restarts after crashes are counted
in ``restarts.json`` in the home, across every process using it: more than
``ATOMIVERSE_EMBEDDED_MAX_RESTARTS`` (default 3) within ``ATOMIVERSE_EMBEDDED_RESTART_WINDOW_SECONDS``
(default 60 s) is a crash loop, raised with the log's tail instead of being restarted again."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from atomiverse_core.localhome import read_record, write_record

from ._exceptions import APIConnectionError

RESTARTS_RECORD = "restarts.json"
DEFAULT_MAX_RESTARTS = 3
DEFAULT_RESTART_WINDOW_SECONDS = 60.0
KEEP_RESTARTS = 20
LOG_TAIL_LINES = 15
# The server's database and logs grow; below this much free space it fails in odd places.
MIN_FREE_BYTES = 20 * 1024 * 1024
# A healthy server holds SQLite's write lock for milliseconds; one held this long is stuck.
LOCK_PROBE_SECONDS = 2.0


class EmbeddedServerError(APIConnectionError):
    """The embedded server could not be started (the message names the cause and the log)."""


class PortTakenError(EmbeddedServerError):
    """The port chosen for the server was taken before it could listen on it."""


class CrashLoopError(EmbeddedServerError):
    """The embedded server keeps crashing: restarting it again would only hide that."""


def server_log(home: Path) -> Path:
    return home / "logs" / "server.log"


def log_tail(path: Path, since_byte: int = 0, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(since_byte)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def check_home_can_start(home: Path) -> None:
    """Raise ``EmbeddedServerError`` naming the cause if a server started now would fail or
    hang: a full disk, or a database that is corrupt or write-locked by a stuck process."""
    free = shutil.disk_usage(home).free
    if free < MIN_FREE_BYTES:
        raise EmbeddedServerError(
            f"the embedded server cannot start: the disk holding {home} is full "
            f"({free // 1024} KiB free); see {server_log(home)}")
    db = home / "atomiverse.db"
    if not db.exists():
        return
    try:
        conn = sqlite3.connect(db, timeout=LOCK_PROBE_SECONDS, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):
            raise EmbeddedServerError(
                f"the embedded server cannot start: its database {db} is locked by another "
                f"process (held for more than {LOCK_PROBE_SECONDS:.0f} s); end that process "
                f"or run `atomiverse local stop`; see {server_log(home)}") from e
        raise EmbeddedServerError(f"the embedded server cannot start: its database {db} "
                                  f"cannot be opened ({e}); see {server_log(home)}") from e
    except sqlite3.DatabaseError as e:
        raise EmbeddedServerError(
            f"the embedded server cannot start: its database {db} is corrupt ({e}); move it "
            f"aside to start with an empty one; see {server_log(home)}") from e


def exited_while_starting(home: Path, returncode: int, log_from: int) -> EmbeddedServerError:
    tail = log_tail(server_log(home), log_from)
    cause = _cause(tail)
    kind = PortTakenError if cause and "[Errno 98]" in cause else EmbeddedServerError
    return kind(
        f"the embedded server exited while starting (status {returncode})"
        f"{': ' + cause if cause else ''}; last lines of {server_log(home)}:\n{tail}")


def _cause(tail: str) -> str | None:
    """The exception a traceback ended with (``module.Error: message``), if there is one."""
    for line in reversed(tail.splitlines()):
        if "[Errno" in line:  # uvicorn: "ERROR:    [Errno 98] error while attempting to bind"
            return line.split(":", 1)[1].strip() if line.startswith("ERROR:") else line.strip()
        head = line.split(":", 1)[0]
        if line[:1].isalpha() and not line.startswith(("ERROR", "INFO", "WARNING")) and \
                head.endswith(("Error", "Exception")):
            return line.strip()
    return None


def _limits() -> tuple[int, float]:
    max_restarts = int(os.environ.get("ATOMIVERSE_EMBEDDED_MAX_RESTARTS")
                       or DEFAULT_MAX_RESTARTS)
    window = float(os.environ.get("ATOMIVERSE_EMBEDDED_RESTART_WINDOW_SECONDS")
                   or DEFAULT_RESTART_WINDOW_SECONDS)
    return max_restarts, window


def restarts(home: Path) -> list[dict[str, Any]]:
    record = read_record(home, RESTARTS_RECORD)
    entries = record.get("restarts") if record else None
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def check_restart_budget(home: Path) -> None:
    """Raise ``CrashLoopError`` if the server was restarted too often lately (callers hold
    the launch lock, so processes sharing the home count together)."""
    max_restarts, window = _limits()
    now = time.time()
    recent = [e for e in restarts(home) if now - float(e.get("at", 0)) < window]
    if len(recent) >= max_restarts:
        log = server_log(home)
        raise CrashLoopError(
            f"the embedded server crashed {len(recent)} times within {window:.0f} s "
            f"(last: {recent[-1].get('reason')}); not restarting it again: look at "
            f"{log}, then run `atomiverse local start`. Last lines of {log}:\n"
            f"{log_tail(log)}")


def note_restart(home: Path, reason: str, pid: int) -> None:
    entries = [*restarts(home), {"at": time.time(), "reason": reason, "pid": pid}]
    write_record(home, RESTARTS_RECORD, {"restarts": entries[-KEEP_RESTARTS:]})


def forget_restarts(home: Path) -> None:
    """A deliberate stop or start resets the budget: the user has seen to it."""
    (home / RESTARTS_RECORD).unlink(missing_ok=True)


def describe_restart(previous: dict[str, Any] | None) -> str:
    if previous is None:
        return "first start"
    return (f"server pid {previous.get('pid')} (of {_when(previous.get('started_at'))}) "
            f"was gone")


def _when(epoch: Any) -> str:
    if not isinstance(epoch, (int, float)):
        return "unknown time"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))
