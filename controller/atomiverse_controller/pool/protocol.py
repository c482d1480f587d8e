"""The contract between the pool and its worker processes, for both sides: the command line
and environment a worker starts with, and the messages on its socket.

Transport: a ``multiprocessing.connection.Connection`` on an inherited socketpair end; every
message is one pickle, length-prefixed by ``Connection``. Message shapes (one definition, used
by :mod:`.pool` and :mod:`atomiverse_controller.worker_main`):

=============== ====================================================================
direction       message
=============== ====================================================================
worker->parent  once: :func:`ready`, or :func:`failed` (a traceback) and exit status 1
parent->worker  :func:`job` (``("job", job_id, payload)``), or :data:`STOP`: exit cleanly
worker->parent  per job: :func:`outcome`; ``result_json`` is the result already encoded
                as JSON (bytes), or None
=============== ====================================================================
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from typing import Any, Literal, TypedDict

from atomiverse_core import jsonio

WORKER_MODULE = "atomiverse_controller.worker_main"
OWN_TMPDIR_ENV = "ATOMIVERSE_WORKER_TMPDIR"  # set by the pool: this worker's TMPDIR, its own
STOP = None  # parent->worker: finish and exit


def thread_env(cores: int) -> dict[str, str]:
    """The numerical libraries' thread counts for a worker of ``cores`` cores (its job's
    ``cores_per_job``). Set before any of them loads: the pool puts them in the worker's
    environment, and the worker again, in case the package ``__init__`` loaded one first."""
    n = str(cores)
    return {"OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n,
            "OMP_STACKSIZE": "1G"}


def worker_command(fd: int, engine: str, memory_limit_mb: int | None, cores: int) -> list[str]:
    """How the pool starts a worker on the inherited socket ``fd``; parsed by worker_main."""
    return [sys.executable, "-m", WORKER_MODULE, "--fd", str(fd), "--engine", engine,
            "--memory-limit-mb", str(memory_limit_mb or 0), "--cores", str(cores)]


# ----- messages -------------------------------------------------------------------------------
JobMessage = tuple[Literal["job"], str, dict[str, Any]]


class ReadyMessage(TypedDict):
    type: Literal["ready"]
    engine: str
    version: str
    engines: dict[str, str]
    pid: int


class FailedMessage(TypedDict):
    type: Literal["failed"]
    error: str


class OutcomeMessage(TypedDict):
    type: Literal["outcome"]
    job_id: str
    ok: bool
    result_json: bytes | None
    error: str | None
    error_type: str | None
    wall_time_seconds: float


def job(job_id: str, payload: dict[str, Any]) -> JobMessage:
    return ("job", job_id, payload)


def ready(engine: str, version: str, engines: dict[str, str], pid: int) -> ReadyMessage:
    return {"type": "ready", "engine": engine, "version": version, "engines": engines,
            "pid": pid}


def failed(error: str) -> FailedMessage:
    return {"type": "failed", "error": error}


def outcome(job_id: str, ok: bool, result_json: bytes | None, error: str | None,
            error_type: str | None, wall_time_seconds: float) -> OutcomeMessage:
    return {"type": "outcome", "job_id": job_id, "ok": ok, "result_json": result_json,
            "error": error, "error_type": error_type, "wall_time_seconds": wall_time_seconds}


@dataclass
class Outcome:
    """How one job ended, as the pool hands it on. ``error_type`` is one of the schema's
    ErrorType values; ``result_json`` the result as the worker encoded it (JSON bytes), passed
    on as it is."""

    job_id: str
    ok: bool
    result_json: bytes | None = None
    error: str | None = None
    error_type: str | None = None
    wall_time_seconds: float = 0.0

    @classmethod
    def of(cls, message: OutcomeMessage) -> Outcome:
        return cls(**{f: message[f] for f in _OUTCOME_FIELDS})  # type: ignore[literal-required]

    @property
    def result(self) -> dict[str, Any] | None:
        """The result, decoded (for people and tests; the controller never needs it)."""
        return None if self.result_json is None else jsonio.loads(self.result_json)


_OUTCOME_FIELDS = tuple(f.name for f in fields(Outcome))
