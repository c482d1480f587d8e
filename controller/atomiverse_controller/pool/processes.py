"""A worker process as the operating system sees it: started in its own session (its own
process group) on one end of a socketpair, with its own TMPDIR and stderr in a file; killed
with its whole group. Nothing here knows about jobs."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any

from . import protocol

log = logging.getLogger("atomiverse_controller.workers")
EXIT_WAIT_SECONDS = 5.0
STDERR_TAIL_BYTES = 4096
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)


@dataclass(eq=False)
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    conn: Connection
    stderr: IO[bytes] | None  # an unlinked temp file; the worker empties it per job
    tmpdir: str | None  # the worker's TMPDIR, removed when the worker goes

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, message: Any) -> bool:
        """False if the worker is gone (its socket closed)."""
        try:
            self.conn.send(message)
        except OSError:
            return False
        return True

    def wait_exit(self, timeout: float = EXIT_WAIT_SECONDS) -> int | None:
        """Its exit status once it exited (negative: the signal); None if it does not
        within ``timeout`` seconds."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> Connection:
        """SIGKILL the process group and reap the worker; its connection is returned, not
        closed: the polling thread may be waiting on that descriptor right now."""
        try:
            # The group too: anything the engine started dies with it. The group id
            # cannot be reused while the group has members, so this is safe after exit.
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(EXIT_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning("worker pid %s did not exit after SIGKILL", self.proc.pid)
        if self.stderr is not None:
            self.stderr.close()
            self.stderr = None
        _remove(self.tmpdir)
        self.tmpdir = None
        return self.conn

    def stderr_tail(self) -> str:
        if self.stderr is None:
            return ""
        try:
            fd = self.stderr.fileno()
            size = os.fstat(fd).st_size
            offset = max(0, size - STDERR_TAIL_BYTES)
            return os.pread(fd, size - offset, offset).decode(errors="replace")
        except OSError:
            return ""


def spawn(engine: str, memory_limit_mb: int | None, cores: int) -> WorkerProcess:
    """Start a worker (not yet warm); OSError if the interpreter cannot be run."""
    parent_sock, child_sock = socket.socketpair()
    # stderr goes to a file, not a pipe: nobody has to drain it, and after a crash its tail
    # says why (e.g. "Error allocating ... bytes: Cannot allocate memory").
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the worker
    # Its own TMPDIR: a worker killed mid-job (walltime, cancel, crash) cannot clean up
    # what its engine wrote there (GFN-FF's topology files, an isolated child's directory);
    # the pool removes the whole directory with the worker.
    tmpdir = tempfile.mkdtemp(prefix="atomiverse-worker-")
    try:
        proc = subprocess.Popen(
            protocol.worker_command(child_sock.fileno(), engine, memory_limit_mb, cores),
            pass_fds=(child_sock.fileno(),), start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
            env={**_worker_env(cores), "TMPDIR": tmpdir, protocol.OWN_TMPDIR_ENV: tmpdir})
    except OSError:
        parent_sock.close()
        stderr.close()
        _remove(tmpdir)
        raise
    finally:
        child_sock.close()
    return WorkerProcess(proc, Connection(parent_sock.detach()), stderr, tmpdir)


def _remove(tmpdir: str | None) -> None:
    if tmpdir is not None:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _worker_env(cores: int) -> dict[str, str]:
    env = {**os.environ, **protocol.thread_env(cores)}
    # The worker imports this package by name, wherever the controller found it.
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + path if path else "")
    return env
