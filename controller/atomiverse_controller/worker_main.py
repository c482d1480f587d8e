"""Worker process: one engine, one job at a time, until its pipe closes.

Started by :class:`atomiverse_controller.pool.WorkerPool` as
``python -m atomiverse_controller.worker_main --fd N [--engine NAME] [--memory-limit-mb M]
[--cores C]`` with one end of a socketpair inherited as fd N. Native code runs here, never in
the controller, so a segfault or abort costs this process and the one job it was running.

The command line, environment and messages are :mod:`atomiverse_controller.pool.protocol`.
The engine runs ``--cores`` threads (the controller's ``cores_per_job``), and a job's
``core_seconds`` is its wall time times that.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import select
import signal
import stat
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from atomiverse_core import jobtypes, jsonio

from .pool import exits, protocol

# xtb keeps large arrays on the stack: a thousand atoms overflow the default 8 MiB. Untouched
# stack pages cost no memory, so reserve generously.
ENGINE_THREAD_STACK_BYTES = 1 << 30
PARENT_CHECK_SECONDS = 2.0  # without a pidfd only
TRIM_AFTER_IDLE_SECONDS = 1.0
_WARM_UP_MOLECULE = {"numbers": [1, 1], "positions": [[0.0, 0.0, 0.0], [0.0, 0.0, 0.74]],
                     "charge": 0, "multiplicity": 1}


def _warm_up_payload() -> dict[str, Any]:
    """H2 as the registry's first job type (the single point: the cheapest lists first)."""
    first = jobtypes.all_types()[0]
    return {"job_type": first.name, "atoms": _WARM_UP_MOLECULE,
            "level_of_theory": {"method": "gfn2-xtb"}}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="atomiverse_controller.worker_main")
    parser.add_argument("--fd", type=int, required=True, help="inherited socket to the pool")
    parser.add_argument("--engine", default="", help="engine name; empty: the default engine")
    parser.add_argument("--memory-limit-mb", type=int, default=0, help="0: no cap")
    parser.add_argument("--cores", type=int, default=1, help="threads the engine runs")
    args = parser.parse_args(argv)
    if args.cores < 1:
        parser.error("--cores must be at least 1")
    return args


def _prepare_process(cores: int) -> None:
    os.environ.update(protocol.thread_env(cores))
    # Ctrl-C in a terminal is for the controller, which decides what happens to running jobs.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # So is SIGTERM: a batch scheduler (scancel, an allocation's end) and systemd send it to
    # every process of the job at once; a worker that died of it failed its job as a crash
    # while its controller was draining. The controller stops workers with SIGKILL.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_STACK, (hard, hard))
    # Crashes are reported as job errors; a core file per segfaulting molecule only fills disks.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _cap_memory(limit_mb: int) -> None:
    """Cap address space at what the warmed-up worker uses plus ``limit_mb``: the libraries and
    the reserved (mostly untouched) stack are not the job's memory."""
    try:
        with open("/proc/self/statm") as fh:
            baseline = int(fh.read().split()[0]) * resource.getpagesize()
    except OSError:
        baseline = 0
    limit = baseline + limit_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _warm_up(engine_name: str) -> tuple[Any, dict[str, str]]:
    """Import the engine and run a tiny single point, so the first job pays no start-up cost."""
    from .engines import available_engines, default_engine_name, get_engine

    engine = get_engine(engine_name or default_engine_name())
    if engine.name == "instant":
        engines = {engine.name: engine.version()}
    else:
        if not engine.found():
            raise RuntimeError(f"engine {engine.name!r} is not installed in {sys.executable}")
        import ase.optimize  # noqa: F401 - first optimisation should not pay for this import

        engines = available_engines()
    engine.compute(_warm_up_payload())
    return engine, engines


def _engine_for(default: Any, payload: dict[str, Any]) -> Any:
    """The job's engine: the one it asks for; else the worker's, if it can run the job's level
    of theory; else the first installed engine that can (ALPB solvation: tblite; GFN0/GFN-FF:
    xtb), the same choice the server made when it routed the job. A fake (instant) worker
    answers every job itself, so platform tests run without chemistry."""
    from .engines import EngineError, get_engine

    requested = payload.get("engine")
    if default.name == "instant" or (requested and requested == default.name):
        return default
    if not requested:
        candidates = _level_engines(payload)
        if candidates is None or default.name in candidates:
            return default
        for name in candidates:
            engine = get_engine(name)
            if engine.found():
                return engine
        raise EngineError(f"engine: {_level_requirement(payload)}, and this controller has "
                          f"none of {', '.join(candidates)}", "input")
    try:
        engine = get_engine(requested)
    except KeyError as e:
        raise EngineError(f"engine: unknown engine {requested!r}", "input") from e
    if engine.name == "instant" or not engine.found():
        raise EngineError(f"engine: {requested!r} is not installed on this controller", "input")
    return engine


def _level(payload: dict[str, Any]) -> Any:
    from .engines.base import parse_level

    try:
        return parse_level(payload.get("level_of_theory"))
    except ValueError:
        return None  # the engine reports a malformed level with the field's name


def _level_engines(payload: dict[str, Any]) -> tuple[str, ...] | None:
    level = _level(payload)
    return None if level is None else level.engines


def _level_requirement(payload: dict[str, Any]) -> str:
    level = _level(payload)
    return "" if level is None else level.engine_requirement()


def run_job(default_engine: Any, job_id: str, payload: dict[str, Any],
            cores: int = 1) -> dict[str, Any]:
    """Compute one payload on ``cores`` threads; never raises. Engine errors carry their
    message and traceback; how other exceptions count is :func:`exits.exception_failure`."""
    from .engines import EngineError

    out: dict[str, Any] = {"type": "outcome", "job_id": job_id, "ok": False, "result": None,
                           "error": None, "error_type": None}
    start = time.perf_counter()
    try:
        result = _engine_for(default_engine, payload).compute(payload)
        out.update(ok=True, result=result)
    except EngineError as e:
        out.update(error=f"{e.message}\n\n{traceback.format_exc()}", error_type=e.error_type)
    except Exception as e:  # noqa: BLE001 - a job's failure is data; MemoryError too
        error_type, message = exits.exception_failure(e)
        out.update(error=f"{message}\n\n{traceback.format_exc()}", error_type=error_type)
    wall = time.perf_counter() - start
    out["wall_time_seconds"] = wall
    if out["result"] is not None:
        out["result"]["wall_time_seconds"] = wall
        out["result"]["core_seconds"] = wall * cores
    return out


def _encoded(out: dict[str, Any]) -> dict[str, Any]:
    """The outcome as sent: the result travels as the JSON the server will receive. The
    controller only passes it on, so it never builds (or unpickles) the result's thousands
    of numbers, and it can hand this worker its next job sooner."""
    result = out.pop("result")
    try:
        out["result_json"] = None if result is None else jsonio.dumps(result)
    except TypeError as e:  # orjson's JSONEncodeError: an engine returned a non-JSON value
        out.update(ok=False, result_json=None, error_type="internal",
                   error=f"result could not be encoded as JSON: {e}")
    return dict(protocol.outcome(out["job_id"], out["ok"], out["result_json"], out["error"],
                                 out["error_type"], out.get("wall_time_seconds", 0.0)))


def _forget_stderr() -> None:
    """Empty stderr when it is a file holding something: the pool reads its tail after a
    crash, and only this job's messages explain this job's death. Most jobs write nothing:
    one ``fstat`` says so, instead of three system calls a job."""
    try:
        st = os.fstat(2)
        if stat.S_ISREG(st.st_mode) and st.st_size:
            os.ftruncate(2, 0)
            os.lseek(2, 0, os.SEEK_SET)
    except OSError:
        pass


def _return_free_memory() -> None:
    """Hand the heap a finished job freed back to the system: glibc keeps it otherwise, and
    an idle worker then holds its largest molecule's memory for good (about 15 MB after a
    series of optimisations). Once per idle spell, so a stream of jobs never pays for it."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to trim this way


def serve(conn: Connection, engine_name: str, memory_limit_mb: int, cores: int = 1) -> int:
    """Warm up, report ready, then answer jobs until the pool says stop or goes away."""
    try:
        engine, engines = _warm_up(engine_name)
        if memory_limit_mb > 0:
            _cap_memory(memory_limit_mb)
    except BaseException:  # noqa: BLE001 - the pool reports why this worker cannot start
        conn.send(protocol.failed(traceback.format_exc()))
        return 1
    from atomiverse_core.heap import freeze_startup_heap

    freeze_startup_heap()
    conn.send(protocol.ready(engine.name, engine.version(), engines, os.getpid()))
    # One poll object for the worker's life: ``conn.poll`` built and tore down a selector
    # for every job.
    socket_ready = select.poll()
    socket_ready.register(conn.fileno(), select.POLLIN)
    while True:
        try:
            if not socket_ready.poll(TRIM_AFTER_IDLE_SECONDS * 1000):
                _return_free_memory()
            message = conn.recv()
        except (EOFError, OSError):
            return 0
        if message is protocol.STOP:
            return 0
        _, job_id, payload = message
        _forget_stderr()
        try:
            conn.send(_encoded(run_job(engine, job_id, payload, cores)))
        except OSError:
            return 0  # the pool went away mid-job


def _remove_own_tmpdir() -> None:
    own = os.environ.get(protocol.OWN_TMPDIR_ENV)
    if own:
        import shutil

        shutil.rmtree(own, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    _prepare_process(args.cores)
    conn = Connection(args.fd)
    status: list[int] = []
    # The engine runs in a thread because only a thread's stack size can be chosen from here.
    threading.stack_size(ENGINE_THREAD_STACK_BYTES)
    parent = os.getppid()
    done_r, done_w = os.pipe()

    def engine() -> None:
        try:
            status.append(serve(conn, args.engine, args.memory_limit_mb, args.cores))
        finally:
            os.write(done_w, b"x")

    thread = threading.Thread(target=engine, name="engine", daemon=True)
    thread.start()
    if not _wait_engine_or_parent(thread, parent, done_r):
        # Orphaned (the controller was killed): nobody will read the result, and nobody
        # is left to remove this worker's temporary directory but itself.
        _remove_own_tmpdir()
        os._exit(2)
    thread.join()
    _remove_own_tmpdir()  # the pool does too; but a pool that went away cannot
    return status[0] if status else 1


def _wait_engine_or_parent(thread: threading.Thread, parent: int, done: int) -> bool:
    """Until the engine thread ends (True) or the controller that started us is gone
    (False). With a pidfd the kernel says when the parent exits, and an idle worker never
    wakes (issue 22); without one (not Linux, or older than 5.3), a look every
    ``PARENT_CHECK_SECONDS``."""
    pidfd = _pidfd(parent)
    if pidfd is not None:
        ready, _, _ = select.select([done, pidfd], [], [])
        return done in ready
    while thread.is_alive():
        thread.join(PARENT_CHECK_SECONDS)
        if os.getppid() != parent:
            return False
    return True


def _pidfd(pid: int) -> int | None:
    """A descriptor readable once ``pid`` exits; None without pidfd support, or if ``pid``
    is no longer our parent (gone before we looked, its number perhaps reused)."""
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    if os.getppid() != pid:  # opened after the parent died: not our parent's descriptor
        os.close(fd)
        return None
    return fd


if __name__ == "__main__":
    sys.exit(main())
