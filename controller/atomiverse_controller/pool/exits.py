"""How a job that did not finish by itself failed: the schema's ``error_type`` for a worker's
exit, signal, running out of memory or an exception, in one place for both sides of the pool.

The server retries ``resource`` (and ``lost``) failures: they say something about the machine,
not the job. So running out of memory is ``resource`` however it shows: a ``MemoryError`` in the
worker or in an isolated child, the worker's last words on stderr, or a SIGKILL nobody here
sent (the OOM killer). ``crash`` and ``internal`` are not retried: the job may cause them.
"""

from __future__ import annotations

import signal

OUT_OF_MEMORY = "resource"
NOT_STARTED = "resource"  # the job never ran: its worker could not start
_OUT_OF_MEMORY_MESSAGES = ("Cannot allocate memory", "MemoryError", "out of memory",
                           "Error allocating")  # the last: tblite's gfortran, no errno text


def exception_failure(exc: BaseException) -> tuple[str, str]:
    """``(error_type, message)`` for an exception a job raised that is not an engine's own
    error (those carry their type)."""
    if isinstance(exc, MemoryError):
        return OUT_OF_MEMORY, "out of memory"
    return "internal", f"{type(exc).__name__}: {exc}"


def last_words(stderr_tail: str) -> str:
    """The last non-empty line a worker wrote to stderr: native libraries say why they stop
    there."""
    return next((ln.strip() for ln in reversed(stderr_tail.splitlines()) if ln.strip()), "")


def describe_exit(returncode: int | None, memory_limit_mb: int | None,
                  last_words: str = "") -> tuple[str, str]:
    """``(error_type, message)`` for a worker that died while running a job; ``last_words`` is
    the last line it wrote to stderr."""
    message = _how_it_ended(returncode)
    if last_words:
        message += f": {last_words}"
    if returncode == -signal.SIGKILL:
        if memory_limit_mb:
            return OUT_OF_MEMORY, (f"{message}; it may have exceeded the memory cap of "
                                   f"{memory_limit_mb} MB")
        # Nobody here sent it: the system killed the worker (usually the OOM killer).
        # That says nothing about the job, so the attempt is worth repeating.
        return OUT_OF_MEMORY, f"{message}; possibly by the out-of-memory killer"
    if any(m in last_words for m in _OUT_OF_MEMORY_MESSAGES):
        cap = f"memory cap {memory_limit_mb} MB" if memory_limit_mb else "out of memory"
        return OUT_OF_MEMORY, f"{message} ({cap})"
    return "crash", message


def _how_it_ended(returncode: int | None) -> str:
    if returncode is None:
        return "worker process stopped answering while running the engine"
    if returncode >= 0:
        return f"worker process exited with status {returncode} while running the engine"
    signum = -returncode
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = "unknown signal"
    return f"worker process killed by signal {signum} ({name}) while running the engine"
