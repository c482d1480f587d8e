"""The pool of worker processes that run engines, one job per slot, seen from the controller.

Each slot is a ``worker_main`` subprocess in its own session (:mod:`.processes`), talking over
a socketpair (:mod:`.protocol`). The pool never runs native code itself: a worker that
segfaults, aborts, is OOM-killed, overruns its walltime or is cancelled is killed with its
whole process group and replaced, and the pool keeps serving. How a death becomes an error
type is :mod:`.exits`; a slot's states are :mod:`.slots`.

``poll()`` sleeps in ``multiprocessing.connection.wait`` on the worker sockets plus a self-pipe,
so an idle pool costs no CPU. ``submit``, ``cancel``, ``wakeup`` and the queries may be called
from other threads than the one polling; one thread polls, and ``shutdown`` comes after it stopped.

``cores_per_job``: each worker runs its engine with that many threads (OpenMP, BLAS) and
reports ``core_seconds`` as wall time times that number, which is what the server bills. A
slot is one job at a time, so the pool uses ``slots * cores_per_job`` cores. (A computation
xtb runs in a forked child, GFN0-xTB and GFN-FF, runs one thread: libgomp is not fork-safe.)

With ``idle_seconds``, a pool that has run nothing for that long stops all but ``keep_warm``
workers, so an idle daemon on a many-core node does not hold a warm engine per core. A stopped
("dormant") slot still counts as free: ``submit`` starts its worker again and hands it the job,
which runs once the worker is warm (about a second).

Short jobs can be staged: ``stage()`` sends a job to a busy worker's socket behind the one it
runs, so the worker starts it the moment it finishes instead of waiting a round trip for this
process to be scheduled and hand it over. Up to ``stage_depth`` per worker: a worker with
several in its socket runs them one after the other without sleeping, so a process switch
(the largest cost of an instant job on a busy machine) is paid per few jobs, not per job. A
staged job counts as started when the job before it reports. If the worker dies, overruns or
is cancelled first, the staged jobs never started: its replacement runs them once warm, or
each fails as not started (retryable) if it cannot start.

Outcomes: every submitted or staged job yields exactly one :class:`Outcome` from ``poll()``,
except a job stopped by ``cancel()``, which yields none (the caller asked for it and already
knows).
"""

from __future__ import annotations

import logging
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, Self

from . import protocol
from .poller import Poller
from .protocol import Outcome
from .slots import Slot, SlotState, Staged
from .supervisor import BUSY, DORMANT, IDLE, STARTING, SlotSupervisor
from .waker import Waker

log = logging.getLogger("atomiverse_controller.workers")

START_TIMEOUT_SECONDS = 120.0
# Jobs staged behind a running one, at most, per worker. 3 was measured against 1 with 64
# instant workers on 2 cores (bench/README.md, issue 30 item 1, third round): no lower CPU per
# job (the workers' share rather rose: more of them runnable at once), so one it stays.
STAGE_DEPTH = 1


class WorkerStartError(RuntimeError):
    """A worker could not start (engine missing, import error, ...); the message says why."""


class WorkerPool(SlotSupervisor):
    """``slots`` worker processes running ``engine`` (None: the worker's default engine) with
    ``cores_per_job`` threads each."""

    def __init__(self, slots: int, engine: str | None = None,
                 memory_limit_mb: int | None = None,
                 start_timeout_seconds: float = START_TIMEOUT_SECONDS,
                 idle_seconds: float | None = None, keep_warm: int = 1,
                 cores_per_job: int = 1, stage_depth: int = STAGE_DEPTH) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        if keep_warm < 0:
            raise ValueError("keep_warm must be at least 0")
        if cores_per_job < 1:
            raise ValueError("cores_per_job must be at least 1")
        if stage_depth < 1:
            raise ValueError("stage_depth must be at least 1")
        self.stage_depth = stage_depth
        self.slots, self.cores_per_job = slots, cores_per_job
        self.idle_seconds, self.keep_warm = idle_seconds, keep_warm
        self._last_busy = time.monotonic()
        self.memory_limit_mb = memory_limit_mb
        self.start_timeout_seconds = start_timeout_seconds
        self.engine_name: str | None = engine  # resolved by the first worker when None
        self.engine_version: str | None = None
        self.engines: dict[str, str] = {}  # what the workers can run: name -> version
        self._requested_engine = engine or ""
        self._workers: list[Slot] = []
        self._retired: list[Connection] = []
        self._lock = threading.RLock()
        self._waker = Waker()
        self._poller: Poller[tuple[Slot, Connection] | None] = Poller()
        self._closed = False
        self._unstarted: list[Outcome] = []  # staged jobs no worker could take over
        self.staged_total = 0

    # ----- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Spawn every worker and wait until each has warmed up; WorkerStartError if one can't."""
        with self._lock:
            if self._workers or self._closed:
                raise RuntimeError("a WorkerPool starts once")
            self._workers = [Slot() for _ in range(self.slots)]
            for worker in self._workers:
                self._spawn(worker)
        deadline = time.monotonic() + self.start_timeout_seconds
        error = None
        while error is None and self._count(STARTING):
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
                if w.process is not None:
                    w.process.send(protocol.STOP)
            deadline = time.monotonic() + timeout
            for w in workers:
                if w.process is not None:
                    w.process.wait_exit(max(0.0, deadline - time.monotonic()))
        for w in workers:
            self._kill(w)
        self._close_retired()
        self._waker.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(kill=True)

    # ----- jobs --------------------------------------------------------------------------------
    def free_slots(self) -> int:
        """Slots that take a job now: warm idle workers, and dormant ones submit restarts."""
        return self._count(IDLE) + self._count(DORMANT)

    def warm_workers(self) -> int:
        """Worker processes running (warm or warming up), for ops and tests."""
        with self._lock:
            return sum(1 for w in self._workers if w.process is not None)

    def _count(self, state: SlotState) -> int:
        with self._lock:
            return sum(1 for w in self._workers if w.state is state)

    def _holds(self, job_id: str) -> bool:
        """Whether ``job_id`` will yield an outcome here: ``running_jobs`` without building
        its list, on every job's way in."""
        return any((w.job_id == job_id and w.state is BUSY)
                   or any(s.job_id == job_id and not s.cancelled for s in w.staged)
                   for w in self._workers)

    def running_jobs(self) -> list[str]:
        """Jobs that will yield an outcome: running, and staged behind a running one."""
        with self._lock:
            running = [w.job_id for w in self._workers if w.state is BUSY and w.job_id]
            return running + [s.job_id for w in self._workers for s in w.staged
                              if not s.cancelled]

    def stageable(self) -> int:
        """Staged jobs the workers take now: ``stage_depth`` behind each running job, less
        those staged already."""
        with self._lock:
            return sum(self.stage_depth - len(w.staged) for w in self._workers
                       if w.can_stage(self.stage_depth))

    def staged_jobs(self) -> int:
        with self._lock:
            return sum(len(w.staged) for w in self._workers)

    def worker_pids(self) -> dict[str, int]:
        """Job id (``#<slot>`` for an idle or starting worker) -> worker pid, for ops and tests."""
        with self._lock:
            return {w.job_id or f"#{i}": w.process.pid for i, w in enumerate(self._workers)
                    if w.process is not None}

    def submit(self, job_id: str, payload: dict[str, Any],
               walltime_seconds: float | None = None) -> None:
        """Start a job on a free slot; RuntimeError if there is none. ``walltime_seconds``
        defaults to the payload's ``walltime_seconds`` (None: no limit)."""
        if walltime_seconds is None:
            walltime_seconds = payload.get("walltime_seconds")
        with self._lock:
            if self._holds(job_id):
                raise ValueError(f"job {job_id} is already running")
            # Warm workers first; a dormant one is started with the job already in its socket.
            for worker in sorted(self._workers, key=lambda w: w.state is not IDLE):
                if worker.state not in (IDLE, DORMANT):
                    continue
                warming = worker.state is DORMANT
                if warming:
                    self._spawn(worker)
                if self._send(worker, protocol.job(job_id, payload)):
                    worker.run(job_id, walltime_seconds, warming=warming)
                    self._last_busy = worker.job_started
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
            if self._holds(job_id):
                raise ValueError(f"job {job_id} is already running")
            # The worker with the fewest staged first: jobs spread over the slots.
            takers = [w for w in self._workers if w.can_stage(self.stage_depth)]
            for worker in sorted(takers, key=lambda w: len(w.staged)):
                if self._send(worker, protocol.job(job_id, payload)):
                    worker.staged.append(Staged(job_id, payload, walltime_seconds))
                    self.staged_total += 1
                    return True
            return False

    def cancel(self, job_id: str) -> bool:
        """Kill the worker running ``job_id`` (its whole process group) and start a fresh one;
        jobs staged behind it go to the fresh one. A staged ``job_id`` is stopped as it
        starts (those behind it go to the replacement). The job yields no Outcome. False if
        the job is not running here."""
        with self._lock:
            worker = next((w for w in self._workers if w.state is BUSY and w.job_id == job_id),
                          None)
            if worker is None:
                return self._cancel_staged(job_id)
            log.info("job %s cancelled: killing worker pid %s", job_id, worker.pid)
            self._replace(worker)
        self._waker.nudge()  # a blocked poll must start watching the replacement
        return True

    def _cancel_staged(self, job_id: str) -> bool:
        # It is in the worker's socket already; the worker is stopped once it has it.
        staged = next((s for w in self._workers for s in w.staged if s.job_id == job_id), None)
        if staged is None or staged.cancelled:
            return False
        log.info("job %s cancelled while staged: its worker stops when it starts it", job_id)
        staged.cancelled = True
        return True

    def wakeup(self) -> None:
        """Make a blocked ``poll()`` return now (possibly with no outcomes). Thread-safe."""
        self._waker.wake()

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
                watched: dict[int, tuple[Slot, Connection] | None] = {
                    w.process.conn.fileno(): (w, w.process.conn)
                    for w in self._workers if w.process is not None}
                watched[self._waker.fd] = None
                wait_for = self._wait_seconds(end)
            if outcomes or retired:
                return outcomes
            ready = self._poller.wait(watched, wait_for)
            woken = self._waker.drain() if None in ready else False
            heard = False
            with self._lock:
                for entry in ready:
                    if entry is None:
                        continue  # the wakeup pipe
                    worker, conn = entry
                    if worker.process is None or worker.process.conn is not conn:
                        continue  # a worker retired meanwhile
                    heard = True
                    if (outcome := self._receive(worker)) is not None:
                        outcomes.append(outcome)
                outcomes += self._take_unstarted()
            if outcomes or woken or heard:
                return outcomes
            if end is not None and time.monotonic() >= end:
                return outcomes
