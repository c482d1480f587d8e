"""Run one computation in a forked child process, for native code that leaves global state
behind or writes files into the working directory.

Why: loading GFN0-xTB in libxtb 6.5.1 changes later GFN2-xTB energies in the same process by
~1e-4 Hartree, and GFN-FF writes ``gfnff_topo``/``gfnff_adjacency`` into the current directory
and prints its topology to standard output whatever the verbosity. A fork (a few milliseconds)
gives each such job a throwaway copy of the process: its own globals, a private temporary working
directory and a muted standard output; the parent, warm and clean, only reads the answer.

The child dies with its parent (``PR_SET_PDEATHSIG``), so a cancelled or timed-out job's worker,
killed by the pool, takes the computation with it. A child that crashes becomes an
``EngineError`` naming the signal.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import sys
import tempfile
from collections.abc import Callable
from typing import Any, TypeVar

from .base import EngineError

T = TypeVar("T")
_PR_SET_PDEATHSIG = 1


def run_isolated(fn: Callable[[], T], *, label: str) -> T:
    """``fn()`` in a forked child, in a private temporary directory, standard output muted.
    Its return value, EngineError or MemoryError comes back; any other exception becomes an
    internal EngineError."""
    read_fd, write_fd = os.pipe()
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child: never returns
        os.close(read_fd)
        _child(fn, write_fd, parent)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        raise EngineError(f"{label}: the isolated process died ({_describe(status)})",
                          "internal")
    ok, value = pickle.loads(data)
    if not ok:
        raise value
    return value


def _child(fn: Callable[[], Any], write_fd: int, parent: int) -> None:
    code = 0
    try:
        _die_with_parent(parent)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
        _single_threaded_openmp()
        with tempfile.TemporaryDirectory(prefix="atomiverse-engine-") as tmp:
            os.chdir(tmp)
            try:
                out: tuple[bool, Any] = (True, fn())
            except EngineError as e:
                out = (False, e)
            except MemoryError as e:  # the worker counts it, as it does its own
                out = (False, e)
            except Exception as e:  # noqa: BLE001 - everything else is reported, not raised
                out = (False, EngineError(f"{type(e).__name__}: {e}", "internal"))
            os.chdir("/")
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(pickle.dumps(out))
    except BaseException:  # noqa: BLE001 - the parent reports a child with no answer
        code = 1
    finally:
        os._exit(code)  # no atexit handlers, no flushing of the parent's buffers


def _single_threaded_openmp() -> None:
    """libgomp is not fork-safe: a child of a process that ran a parallel region with several
    threads waits forever on the next one, for threads it does not have. One thread per team
    takes the path that needs no pool. (So an isolated computation runs one thread, even in a
    worker of several cores.)"""
    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "libgomp" in line and "/" in line}
    except OSError:
        return
    for path in paths:
        try:
            ctypes.CDLL(path).omp_set_num_threads(1)
        except (OSError, AttributeError):
            pass


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
