"""The pool of worker processes that run engines, one job per slot, seen from the controller.

Each slot is a ``worker_main`` subprocess in its own session (its own process group), talking
over a socketpair (protocol in :mod:`atomiverse_controller.worker_main`). The pool never runs
native code itself: a worker that segfaults, aborts, is OOM-killed, overruns its walltime or is
cancelled is killed with its whole process group and replaced, and the pool keeps serving.

``poll()`` sleeps in ``multiprocessing.connection.wait`` on the worker sockets plus a self-pipe,
so an idle pool costs no CPU. ``submit``, ``cancel``, ``wakeup`` and the queries may be called
from other threads than the one polling; one thread polls, and ``shutdown`` comes after it stopped.

With ``idle_seconds``, a pool that has run nothing for that long stops all but ``keep_warm``
workers, so an idle daemon on a many-core node does not hold a warm engine per core. A stopped
("dormant") slot still counts as free: ``submit`` starts its worker again and hands it the job,
which runs once the worker is warm (about a second).

Short jobs can be staged: ``stage()`` sends a job to a busy worker's socket behind the one it
runs, so the worker starts it the moment it finishes instead of waiting a round trip for this
process to be scheduled and hand it over. At most one per worker. A staged job counts as
started when the job before it reports. If the worker dies, overruns or is cancelled first,
the staged job never started: its replacement runs it once warm.

Outcomes: every submitted or staged job yields exactly one :class:`Outcome` from ``poll()``,
except a job stopped by ``cancel()``, which yields none (the caller asked for it and already
knows).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import IO, Any

from atomiverse_core import jsonio

from .worker_main import OWN_TMPDIR_ENV, THREAD_ENV

log = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 120.0
EXIT_WAIT_SECONDS = 5.0
RESPAWN_BACKOFF_SECONDS = (1.0, 2.0, 5.0, 15.0, 60.0)
STDERR_TAIL_BYTES = 4096
_OUT_OF_MEMORY_MESSAGES = ("Cannot allocate memory", "MemoryError", "out of memory",
                           "Error allocating")  # the last: tblite's gfortran, no errno text
_OUTCOME_FIELDS = ("job_id", "ok", "result_json", "error", "error_type", "wall_time_seconds")
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


@dataclass
class Outcome:
    """How one job ended. ``error_type`` is one of the schema's ErrorType values;
    ``result_json`` the result as the worker encoded it (JSON bytes), passed on as it is."""

    job_id: str
    ok: bool
    result_json: bytes | None = None
    error: str | None = None
    error_type: str | None = None
    wall_time_seconds: float = 0.0

    @property
    def result(self) -> dict[str, Any] | None:
        """The result, decoded (for people and tests; the controller never needs it)."""
        return None if self.result_json is None else jsonio.loads(self.result_json)


@dataclass
class _Staged:
    """A job waiting in a busy worker's socket. The payload is kept to hand it to a
    replacement should this worker never start it."""

    job_id: str
    payload: dict[str, Any]
    walltime_seconds: float | None
    cancelled: bool = False


class WorkerStartError(RuntimeError):
    """A worker could not start (engine missing, import error, ...); the message says why."""


@dataclass(eq=False)
class _Worker:
    proc: subprocess.Popen[bytes] | None = None
    conn: Connection | None = None
    stderr: IO[bytes] | None = None  # an unlinked temp file; the worker empties it per job
    tmpdir: str | None = None  # the worker's TMPDIR, removed when the worker goes
    state: str = "down"  # down -> starting -> idle <-> busy; any -> down when it dies;
    # idle -> dormant when retired; dormant -> busy (warming) when submit starts it with a job
    warming: bool = False  # busy with a job handed over before the worker said it was ready
    job_id: str | None = None
    job_started: float = 0.0  # time.monotonic()
    walltime_seconds: float | None = None
    respawn_at: float = 0.0
    failures: int = 0  # consecutive failed starts, for backoff
    start_error: str | None = None
    spawned_at: float = 0.0  # time.monotonic()
    staged: _Staged | None = None  # the job sent behind the running one

    @property
    def deadline(self) -> float | None:
        if self.state != "busy" or self.walltime_seconds is None or self.warming:
            return None
        return self.job_started + self.walltime_seconds


def describe_exit(returncode: int | None, memory_limit_mb: int | None,
                  last_words: str = "") -> tuple[str, str]:
    """``(error_type, message)`` for a worker that died while running a job; ``last_words`` is
    the last line it wrote to stderr (native libraries say why they stop there)."""
    if returncode is None:
        message = "worker process stopped answering while running the engine"
    elif returncode >= 0:
        message = f"worker process exited with status {returncode} while running the engine"
    else:
        signum = -returncode
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = "unknown signal"
        message = f"worker process killed by signal {signum} ({name}) while running the engine"
    if last_words:
        message += f": {last_words}"
    out_of_memory = any(m in last_words for m in _OUT_OF_MEMORY_MESSAGES)
    if returncode == -signal.SIGKILL:
        if memory_limit_mb:
            return "resource", f"{message}; it may have exceeded the memory cap of " \
                               f"{memory_limit_mb} MB"
        # Nobody here sent it: the system killed the worker (usually the OOM killer).
        # That says nothing about the job, so the attempt is worth repeating.
        return "resource", f"{message}; possibly by the out-of-memory killer"
    if out_of_memory and memory_limit_mb:
        return "resource", f"{message} (memory cap {memory_limit_mb} MB)"
    return "crash", message


class WorkerPool:
    """``slots`` worker processes running ``engine`` (None: the worker's default engine)."""

    def __init__(self, slots: int, engine: str | None = None,
                 memory_limit_mb: int | None = None,
                 start_timeout_seconds: float = START_TIMEOUT_SECONDS,
                 idle_seconds: float | None = None, keep_warm: int = 1) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        if keep_warm < 0:
            raise ValueError("keep_warm must be at least 0")
        self.slots = slots
        self.idle_seconds, self.keep_warm = idle_seconds, keep_warm
        self._last_busy = time.monotonic()
        self.memory_limit_mb = memory_limit_mb
        self.start_timeout_seconds = start_timeout_seconds
        self.engine_name: str | None = engine  # resolved by the first worker when None
        self.engine_version: str | None = None
        self.engines: dict[str, str] = {}  # what the workers can run: name -> version
        self._requested_engine = engine or ""
        self._workers: list[_Worker] = []
        self._retired: list[Connection] = []
        self._lock = threading.RLock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._woken = False
        self._closed = False
        self._unstarted: list[Outcome] = []  # staged jobs no worker could take over
        self.staged_total = 0

    # ----- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Spawn every worker and wait until each has warmed up; WorkerStartError if one can't."""
        with self._lock:
            if self._workers or self._closed:
                raise RuntimeError("a WorkerPool starts once")
            self._workers = [_Worker() for _ in range(self.slots)]
            for worker in self._workers:
                self._spawn(worker)
        deadline = time.monotonic() + self.start_timeout_seconds
        error = None
        while error is None and self._count("starting"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                error = f"not ready after {self.start_timeout_seconds:g} s"
                break
            self.poll(remaining)  # returns as soon as any worker reports
            error = next((w.start_error for w in self._workers if w.start_error), None)
        if error is not None:
            self.shutdown(kill=True)
            raise WorkerStartError(f"worker for engine {self._requested_engine or '(default)'!r} "
                                   f"failed to start: {error}")

    def shutdown(self, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop every worker. ``kill=False``: idle workers exit cleanly and running jobs get
        ``timeout`` seconds to finish (their outcomes are discarded: poll first to keep them);
        ``kill=True``: SIGKILL now."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers, self._workers = self._workers, []
        if not kill:
            for w in workers:
                self._send(w, None)
            deadline = time.monotonic() + timeout
            for w in workers:
                if w.proc is not None:
                    try:
                        w.proc.wait(max(0.0, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        pass
        for w in workers:
            self._kill(w)
        for conn in self._retired:
            conn.close()
        self._retired.clear()
        wake_r, wake_w = self._wake_r, self._wake_w
        self._wake_w = -1  # wakeup() after shutdown must not write to a reused descriptor
        os.close(wake_r)
        os.close(wake_w)

    def __enter__(self) -> WorkerPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(kill=True)

    # ----- jobs --------------------------------------------------------------------------------
    def free_slots(self) -> int:
        """Slots that take a job now: warm idle workers, and dormant ones submit restarts."""
        return self._count("idle") + self._count("dormant")

    def warm_workers(self) -> int:
        """Worker processes running (warm or warming up), for ops and tests."""
        with self._lock:
            return sum(1 for w in self._workers if w.proc is not None)

    def _count(self, state: str) -> int:
        with self._lock:
            return sum(1 for w in self._workers if w.state == state)

    def running_jobs(self) -> list[str]:
        """Jobs that will yield an outcome: running, and staged behind a running one."""
        with self._lock:
            running = [w.job_id for w in self._workers if w.state == "busy" and w.job_id]
            return running + [w.staged.job_id for w in self._workers
                              if w.staged is not None and not w.staged.cancelled]

    def stageable(self) -> int:
        """Workers that take a staged job now: busy with a job, none staged yet."""
        with self._lock:
            return sum(1 for w in self._workers if self._can_stage(w))

    def staged_jobs(self) -> int:
        with self._lock:
            return sum(1 for w in self._workers if w.staged is not None)

    def worker_pids(self) -> dict[str, int]:
        """Job id (``#<slot>`` for an idle or starting worker) -> worker pid, for ops and tests."""
        with self._lock:
            return {w.job_id or f"#{i}": w.proc.pid for i, w in enumerate(self._workers)
                    if w.proc is not None}

    def submit(self, job_id: str, payload: dict[str, Any],
               walltime_seconds: float | None = None) -> None:
        """Start a job on a free slot; RuntimeError if there is none. ``walltime_seconds``
        defaults to the payload's ``walltime_seconds`` (None: no limit)."""
        if walltime_seconds is None:
            walltime_seconds = payload.get("walltime_seconds")
        with self._lock:
            if job_id in self.running_jobs():
                raise ValueError(f"job {job_id} is already running")
            # Warm workers first; a dormant one is started with the job already in its socket.
            for worker in sorted(self._workers, key=lambda w: w.state != "idle"):
                if worker.state not in ("idle", "dormant"):
                    continue
                warming = worker.state == "dormant"
                if warming:
                    self._spawn(worker)
                if self._send(worker, ("job", job_id, payload)):
                    worker.state, worker.job_id, worker.warming = "busy", job_id, warming
                    worker.job_started = self._last_busy = time.monotonic()
                    worker.walltime_seconds = walltime_seconds
                    return
                self._replace(worker)  # died while idle; try the next one
            raise RuntimeError("no free slot")

    def stage(self, job_id: str, payload: dict[str, Any],
              walltime_seconds: float | None = None) -> bool:
        """Send a job to a busy worker, to start when its running job ends (see the module
        docstring). False if no worker can take one (``stageable()`` is 0)."""
        if walltime_seconds is None:
            walltime_seconds = payload.get("walltime_seconds")
        with self._lock:
            if job_id in self.running_jobs():
                raise ValueError(f"job {job_id} is already running")
            for worker in self._workers:
                if self._can_stage(worker) and self._send(worker, ("job", job_id, payload)):
                    worker.staged = _Staged(job_id, payload, walltime_seconds)
                    self.staged_total += 1
                    return True
            return False

    def cancel(self, job_id: str) -> bool:
        """Kill the worker running ``job_id`` (its whole process group) and start a fresh one;
        a job staged behind it goes to the fresh one. A staged ``job_id`` is stopped as it
        starts. The job yields no Outcome. False if the job is not running here."""
        with self._lock:
            worker = next((w for w in self._workers if w.state == "busy" and w.job_id == job_id),
                          None)
            if worker is None:
                return self._cancel_staged(job_id)
            log.info("job %s cancelled: killing worker pid %s", job_id, _pid(worker))
            self._replace(worker)
        self._nudge()  # a blocked poll must start watching the replacement
        return True

    def _cancel_staged(self, job_id: str) -> bool:
        # It is in the worker's socket already; the worker is stopped once it has it.
        staged = next((w.staged for w in self._workers
                       if w.staged is not None and w.staged.job_id == job_id), None)
        if staged is None or staged.cancelled:
            return False
        log.info("job %s cancelled while staged: its worker stops when it starts it", job_id)
        staged.cancelled = True
        return True

    def wakeup(self) -> None:
        """Make a blocked ``poll()`` return now (possibly with no outcomes). Thread-safe."""
        self._woken = True
        self._nudge()

    def poll(self, timeout: float | None = None) -> list[Outcome]:
        """Outcomes of finished jobs; blocks up to ``timeout`` seconds (None: no limit) until
        there is at least one. Returns early, possibly with ``[]``, on ``wakeup()``, when a
        worker reports anything else (e.g. a replacement became ready: free slots changed) and
        when idle workers were stopped."""
        end = None if timeout is None else time.monotonic() + timeout
        outcomes: list[Outcome] = []
        while True:
            with self._lock:
                if self._closed:
                    return outcomes
                self._close_retired()
                outcomes += self._expire_walltimes()
                outcomes += self._expire_warm_ups()
                outcomes += self._take_unstarted()
                self._respawn_due()
                retired = self._retire_idle()
                watched = {w.conn: w for w in self._workers if w.conn is not None}
                wait_for = self._wait_seconds(end)
            if outcomes or retired:
                return outcomes
            ready = wait([*watched, self._wake_r], wait_for)
            woken = self._drain_wakeup() if self._wake_r in ready else False
            heard = False
            with self._lock:
                for conn in ready:
                    worker = watched.get(conn)  # type: ignore[call-overload]
                    if worker is None or worker.conn is not conn:
                        continue  # the wakeup pipe, or a worker retired meanwhile
                    heard = True
                    if (outcome := self._receive(worker)) is not None:
                        outcomes.append(outcome)
                outcomes += self._take_unstarted()
            if outcomes or woken or heard:
                return outcomes
            if end is not None and time.monotonic() >= end:
                return outcomes

    # ----- internals (callers hold self._lock) -------------------------------------------------
    def _spawn(self, worker: _Worker) -> None:
        parent_sock, child_sock = socket.socketpair()
        # stderr goes to a file, not a pipe: nobody has to drain it, and after a crash its tail
        # says why (e.g. "Error allocating ... bytes: Cannot allocate memory").
        worker.stderr = tempfile.TemporaryFile()
        # Its own TMPDIR: a worker killed mid-job (walltime, cancel, crash) cannot clean up
        # what its engine wrote there (GFN-FF's topology files, an isolated child's directory);
        # the pool removes the whole directory with the worker.
        worker.tmpdir = tempfile.mkdtemp(prefix="atomiverse-worker-")
        cmd = [sys.executable, "-m", "atomiverse_controller.worker_main",
               "--fd", str(child_sock.fileno()), "--engine", self._requested_engine,
               "--memory-limit-mb", str(self.memory_limit_mb or 0)]
        try:
            worker.proc = subprocess.Popen(
                cmd, pass_fds=(child_sock.fileno(),), start_new_session=True,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=worker.stderr,
                env={**_worker_env(), "TMPDIR": worker.tmpdir, OWN_TMPDIR_ENV: worker.tmpdir})
        except OSError as e:
            parent_sock.close()
            worker.stderr.close()
            worker.stderr = None
            _remove_tmpdir(worker)
            worker.state, worker.start_error = "down", f"could not run {sys.executable}: {e}"
            worker.respawn_at = time.monotonic() + self._backoff(worker)
            worker.failures += 1
            return
        finally:
            child_sock.close()
        worker.conn = Connection(parent_sock.detach())
        worker.state, worker.job_id, worker.start_error = "starting", None, None
        worker.warming, worker.spawned_at = False, time.monotonic()

    def _replace(self, worker: _Worker) -> None:
        """Kill the worker and start a fresh one. A job staged behind the one it was running
        (crash, walltime, cancel) never started: the fresh worker runs it once warm."""
        staged, worker.staged = worker.staged, None
        self._kill(worker)
        if not self._closed:
            self._spawn(worker)
        if staged is None or staged.cancelled or self._closed:
            return
        if worker.state == "starting" and self._send(worker, ("job", staged.job_id,
                                                               staged.payload)):
            worker.state, worker.job_id, worker.warming = "busy", staged.job_id, True
            worker.job_started = time.monotonic()
            worker.walltime_seconds = staged.walltime_seconds
            return
        self._unstarted.append(self._not_started(
            (staged.job_id, time.monotonic()),
            f"worker could not start: {worker.start_error or 'no replacement worker'}"))

    def _can_stage(self, worker: _Worker) -> bool:
        return (worker.state == "busy" and not worker.warming and worker.staged is None
                and worker.conn is not None)

    def _start_staged(self, worker: _Worker) -> None:
        """The worker's job reported: the staged one, if any, is running now."""
        staged, worker.staged = worker.staged, None
        if staged is None:
            worker.state, worker.job_id = "idle", None
            return
        worker.job_id, worker.job_started = staged.job_id, time.monotonic()
        worker.walltime_seconds = staged.walltime_seconds
        if staged.cancelled:
            log.info("job %s cancelled: killing worker pid %s", staged.job_id, _pid(worker))
            self._replace(worker)

    def _take_unstarted(self) -> list[Outcome]:
        taken, self._unstarted = self._unstarted, []
        return taken

    def _kill(self, worker: _Worker) -> None:
        """SIGKILL the worker's process group, reap it, and retire its connection."""
        if worker.proc is not None:
            try:
                # The group too: anything the engine started dies with it. The group id
                # cannot be reused while the group has members, so this is safe after exit.
                os.killpg(worker.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                worker.proc.wait(EXIT_WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                log.warning("worker pid %s did not exit after SIGKILL", worker.proc.pid)
        if worker.conn is not None:
            # Closed later: the polling thread may be waiting on this descriptor right now.
            self._retired.append(worker.conn)
        if worker.stderr is not None:
            worker.stderr.close()
            worker.stderr = None
        _remove_tmpdir(worker)
        worker.proc, worker.conn, worker.state, worker.job_id = None, None, "down", None
        worker.warming = False

    def _send(self, worker: _Worker, message: Any) -> bool:
        try:
            if worker.conn is not None:
                worker.conn.send(message)
                return True
        except OSError:
            pass
        return False

    def _receive(self, worker: _Worker) -> Outcome | None:
        """Handle one message (or the death) of a readable worker."""
        assert worker.conn is not None
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            return self._on_death(worker)
        kind = message.get("type")
        if kind == "ready":
            worker.failures = 0
            if worker.warming:  # its job is waiting in its socket; the walltime starts now
                worker.warming, worker.job_started = False, time.monotonic()
            else:
                worker.state = "idle"
            self.engine_name = message["engine"]
            self.engine_version, self.engines = message["version"], message["engines"]
        elif kind == "failed":
            job = self._job_of_warming(worker)
            summary = message["error"].strip().splitlines()[-1]
            self._on_start_failure(worker, summary, message["error"])
            if job is not None:
                return self._not_started(job, f"worker could not start: {summary}")
        elif kind == "outcome" and worker.state == "busy" and message["job_id"] == worker.job_id:
            self._last_busy = time.monotonic()
            self._start_staged(worker)
            return Outcome(**{k: message[k] for k in _OUTCOME_FIELDS})
        else:
            log.warning("worker pid %s sent an unexpected message %r", _pid(worker), kind)
        return None

    def _on_death(self, worker: _Worker) -> Outcome | None:
        """The worker's socket closed: it died. Fail its job (if any) and replace it."""
        returncode = None
        if worker.proc is not None:
            try:
                returncode = worker.proc.wait(EXIT_WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        state, job_id, started = worker.state, worker.job_id, worker.job_started
        tail = _stderr_tail(worker)
        last_words = next((ln.strip() for ln in reversed(tail.splitlines()) if ln.strip()), "")
        if state == "starting" or worker.warming:
            job = self._job_of_warming(worker)
            detail = f"worker process exited with status {returncode} before it was ready"
            summary = f"{detail}: {last_words}" if last_words else detail
            self._on_start_failure(worker, summary, f"{detail}\n{tail}")
            return None if job is None else self._not_started(job, f"worker could not start: "
                                                                   f"{summary}")
        log.warning("worker pid %s died (%s) while %s; stderr ends: %s", _pid(worker), returncode,
                    f"running job {job_id}" if job_id else state, tail.strip()[-1000:] or "-")
        self._replace(worker)
        if state != "busy" or job_id is None:
            return None
        error_type, error = describe_exit(returncode, self.memory_limit_mb, last_words[-300:])
        return Outcome(job_id, False, None, error, error_type, time.monotonic() - started)

    def _job_of_warming(self, worker: _Worker) -> tuple[str, float] | None:
        return (worker.job_id or "", worker.job_started) if worker.warming else None

    def _not_started(self, job: tuple[str, float], error: str) -> Outcome:
        """The job never ran: it failed with the machine, not by itself, so the server may
        try it again (a retryable error type)."""
        job_id, handed_over = job
        return Outcome(job_id, False, None, error, "resource", time.monotonic() - handed_over)

    def _on_start_failure(self, worker: _Worker, summary: str, detail: str) -> None:
        log.error("worker failed to start: %s", detail)
        self._kill(worker)
        worker.start_error = summary
        worker.respawn_at = time.monotonic() + self._backoff(worker)
        worker.failures += 1

    def _backoff(self, worker: _Worker) -> float:
        return RESPAWN_BACKOFF_SECONDS[min(worker.failures, len(RESPAWN_BACKOFF_SECONDS) - 1)]

    def _respawn_due(self) -> None:
        now = time.monotonic()
        for worker in self._workers:
            if worker.state == "down" and worker.respawn_at <= now and not self._closed:
                self._spawn(worker)

    def _expire_walltimes(self) -> list[Outcome]:
        now, expired = time.monotonic(), []
        for worker in self._workers:
            deadline = worker.deadline
            if deadline is not None and now >= deadline:
                job_id, limit = worker.job_id or "", worker.walltime_seconds or 0.0
                started = worker.job_started
                log.warning("job %s exceeded walltime of %g s: killing worker pid %s",
                            job_id, limit, _pid(worker))
                self._replace(worker)
                expired.append(Outcome(job_id, False, None, f"exceeded walltime of {limit:g} s",
                                       "walltime", now - started))
        return expired

    def _expire_warm_ups(self) -> list[Outcome]:
        """Jobs handed to a restarted worker that is not ready within the start timeout."""
        now, expired = time.monotonic(), []
        for worker in self._workers:
            if worker.warming and now >= worker.spawned_at + self.start_timeout_seconds:
                job = (worker.job_id or "", worker.job_started)
                summary = f"not ready after {self.start_timeout_seconds:g} s"
                self._on_start_failure(worker, summary, f"worker pid {_pid(worker)} {summary}")
                expired.append(self._not_started(job, f"worker could not start: {summary}"))
        return expired

    def _retire_at(self) -> float | None:
        """When idle workers beyond ``keep_warm`` are due to stop (None: nothing to retire)."""
        if self.idle_seconds is None or self._closed:
            return None
        if any(w.state in ("busy", "starting") for w in self._workers):
            return None
        if self._count("idle") <= self.keep_warm:
            return None
        return self._last_busy + self.idle_seconds

    def _retire_idle(self) -> bool:
        """Stop the idle workers beyond ``keep_warm`` if they are due; True if any stopped."""
        due = self._retire_at()
        if due is None or time.monotonic() < due:
            return False
        idle = [w for w in self._workers if w.state == "idle"]
        for worker in idle[self.keep_warm:]:
            self._kill(worker)
            worker.state = "dormant"
        log.info("event=workers_retired workers=%d kept_warm=%d idle_seconds=%g",
                 len(idle) - self.keep_warm, self.keep_warm, self.idle_seconds)
        return True

    def _wait_seconds(self, end: float | None) -> float | None:
        now = time.monotonic()
        times = [t for t in (w.deadline for w in self._workers) if t is not None]
        times += [w.spawned_at + self.start_timeout_seconds for w in self._workers if w.warming]
        times += [t for t in (self._retire_at(),) if t is not None]
        times += [w.respawn_at for w in self._workers if w.state == "down"]
        if end is not None:
            times.append(end)
        return max(0.0, min(times) - now) if times else None

    def _close_retired(self) -> None:
        for conn in self._retired:
            conn.close()
        self._retired.clear()

    def _nudge(self) -> None:
        if self._wake_w < 0:
            return
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # pipe full (a wakeup is pending anyway) or pool shut down

    def _drain_wakeup(self) -> bool:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        woken, self._woken = self._woken, False
        return woken


def _stderr_tail(worker: _Worker) -> str:
    if worker.stderr is None:
        return ""
    try:
        fd = worker.stderr.fileno()
        size = os.fstat(fd).st_size
        offset = max(0, size - STDERR_TAIL_BYTES)
        return os.pread(fd, size - offset, offset).decode(errors="replace")
    except OSError:
        return ""


def _remove_tmpdir(worker: _Worker) -> None:
    if worker.tmpdir is not None:
        shutil.rmtree(worker.tmpdir, ignore_errors=True)
        worker.tmpdir = None


def _pid(worker: _Worker) -> int | None:
    return worker.proc.pid if worker.proc is not None else None


def _worker_env() -> dict[str, str]:
    env = {**os.environ, **THREAD_ENV}
    # The worker imports this package by name, wherever the controller found it.
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + path if path else "")
    return env
