"""What an ATOMIVERSE_HOME records about the processes that belong to it, and the check that a
recorded pid still is that process.

``server.json`` (written by the SDK that started the embedded server) and ``controller.json``
(written by that server for its local controller) each hold a pid, the process's start time
(``create_time``, seconds since the epoch as psutil reports it) and what was started. A pid
alone proves nothing: after a crash or a reboot it may belong to anything, so a record is
trusted only while the process with that pid started at the recorded time and its command
line names this home (as an absolute path: see ``home_path``), and it runs as this user (a
command line is anyone's to write: another user's process is never this home's). Nothing is
ever signalled on the strength of a pid alone.

A verified process is still not proof of who answers on the recorded port (while a server
shuts down, its process lives on after its socket is closed, and another user may listen
there). ``server.secret`` (0600, beside the credentials) is the proof: the embedded server
answers a fresh nonce with ``identity_proof`` of it, which nobody who cannot read the file can
compute, before the SDK sends it a key."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

import psutil

SERVER_RECORD = "server.json"
CONTROLLER_RECORD = "controller.json"
SERVER_SECRET = "server.secret"
# Unauthenticated: it answers a nonce with a proof, nothing else (see identity_proof).
IDENTITY_PATH = "/embedded/identity"
SECRET_BYTES = 32
NONCE_BYTES = 32
_PROOF_CONTEXT = b"atomiverse embedded server identity\0"
# psutil derives create_time from the boot time and clock ticks: the same process reads the
# same value to well within this (seconds).
CREATE_TIME_TOLERANCE_SECONDS = 0.05
# How a server's log says it is rewriting its database before it answers (a migration over a
# big home takes minutes): the SDK that started it waits on instead of giving up on it.
UPGRADE_NOTICE = "Upgrading the database:"


def home_path(home: Path) -> Path:
    """The home as every process of it names it: absolute, symlinks resolved."""
    return home.expanduser().resolve()


def read_record(home: Path, name: str) -> dict[str, Any] | None:
    try:
        record = json.loads((home / name).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


def write_record(home: Path, name: str, record: dict[str, Any]) -> None:
    """Replace the record atomically, private to its owner (a half-written record is read as
    none at all, never as a wrong pid)."""
    home.mkdir(parents=True, exist_ok=True)
    tmp = home / f".{name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    os.replace(tmp, home / name)


def process_record(proc: psutil.Process, **fields: Any) -> dict[str, Any]:
    return {"pid": proc.pid, "create_time": proc.create_time(), **fields}


def verified_process(record: dict[str, Any] | None, *, program: str,
                     home: Path) -> psutil.Process | None:
    """The live process ``record`` names, if it is still that process: same start time, a
    command line that runs ``program`` (a module name) and names ``home``, and this user's.
    Else None."""
    if not record or not isinstance(record.get("pid"), int):
        return None
    try:
        proc = psutil.Process(record["pid"])
        created = proc.create_time()
        cmdline = proc.cmdline()
        if proc.status() == psutil.STATUS_ZOMBIE or proc.uids().real != os.getuid():
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    recorded = record.get("create_time")
    if not isinstance(recorded, (int, float)) or \
            abs(created - recorded) > CREATE_TIME_TOLERANCE_SECONDS:
        return None
    if program not in cmdline or not any(_inside(arg, home) for arg in cmdline):
        return None
    return proc


def _inside(arg: str, home: Path) -> bool:
    """``arg`` is the home or a path in it (whole path components, never a substring)."""
    text = str(home)
    return arg == text or arg.startswith(text.rstrip(os.sep) + os.sep)


def process_tree(proc: psutil.Process) -> list[psutil.Process]:
    """The process and every descendant it has now (workers live in their own sessions, so a
    process group would miss them)."""
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def server_secret(home: Path) -> bytes:
    """The home's server secret, created (0600) by whichever side comes first: the SDK before
    it starts a server, or a server started by hand. Created whole or not at all (linked into
    place), so a racing reader never sees it half-written."""
    path = home / SERVER_SECRET
    if not path.exists():
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = home / f".{SERVER_SECRET}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(SECRET_BYTES))
        with contextlib.suppress(FileExistsError):  # another process was first: keep its
            os.link(tmp, path)
        tmp.unlink()
    return bytes.fromhex(path.read_text().strip())


def identity_proof(secret: bytes, nonce: str) -> str:
    """What the server answers to ``nonce``: HMAC-SHA256 keyed by the server secret (hex)."""
    return hmac.new(secret, _PROOF_CONTEXT + nonce.encode(), hashlib.sha256).hexdigest()


def new_nonce() -> str:
    return secrets.token_hex(NONCE_BYTES)
