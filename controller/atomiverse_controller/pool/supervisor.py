"""Keeping each slot's worker alive: start, replace, respawn with backoff; read what a worker
says or how it died; enforce walltimes, warm-up timeouts and idle retirement. The base of
:class:`~.pool.WorkerPool`, which adds the public API; every method here runs with the pool's
lock held."""

from __future__ import annotations

import logging
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from . import exits, processes, protocol
from .protocol import Outcome
from .slots import Slot, SlotState
from .waker import Waker

log = logging.getLogger("atomiverse_controller.workers")

RESPAWN_BACKOFF_SECONDS = (1.0, 2.0, 5.0, 15.0, 60.0)
DOWN, STARTING, IDLE, BUSY, DORMANT = (SlotState.DOWN, SlotState.STARTING, SlotState.IDLE,
                                       SlotState.BUSY, SlotState.DORMANT)


class SlotSupervisor:
    slots: int
    cores_per_job: int
    memory_limit_mb: int | None
    start_timeout_seconds: float
    idle_seconds: float | None
    keep_warm: int
    engine_name: str | None
    engine_version: str | None
    engines: dict[str, str]
    _requested_engine: str
    _workers: list[Slot]
    _retired: list[Connection]
    _lock: threading.RLock
    _waker: Waker
    _closed: bool
    _unstarted: list[Outcome]
    _last_busy: float

    def _spawn(self, worker: Slot) -> None:
        try:
            process = processes.spawn(self._requested_engine, self.memory_limit_mb,
                                      self.cores_per_job)
        except OSError as e:
            worker.move(DOWN)
            worker.start_error = f"could not run {sys.executable}: {e}"
            worker.respawn_at = time.monotonic() + self._backoff(worker)
            worker.failures += 1
            return
        worker.started(process)

    def _replace(self, worker: Slot) -> None:
        """Kill the worker and start a fresh one. Jobs staged behind the one it was running
        (crash, walltime, cancel) never started: the fresh worker runs them once warm, in
        their order; if it cannot start, each fails as not started (retryable)."""
        staged = [s for s in worker.staged if not s.cancelled]
        worker.staged = []
        self._kill(worker)
        if not self._closed:
            self._spawn(worker)
        if not staged or self._closed:
            return
        first, *rest = staged
        if worker.state is STARTING and self._send(worker, protocol.job(first.job_id,
                                                                        first.payload)):
            worker.run(first.job_id, first.walltime_seconds, warming=True)
            staged = rest
            while staged and self._send(worker, protocol.job(staged[0].job_id,
                                                             staged[0].payload)):
                worker.staged.append(staged.pop(0))
        reason = f"worker could not start: {worker.start_error or 'no replacement worker'}"
        self._unstarted += [self._not_started((s.job_id, time.monotonic()), reason)
                            for s in staged]

    def _take_unstarted(self) -> list[Outcome]:
        taken, self._unstarted = self._unstarted, []
        return taken

    def _kill(self, worker: Slot) -> None:
        """SIGKILL the worker's process group, reap it, and retire its connection (closed
        later: the polling thread may be waiting on it right now)."""
        if worker.process is not None:
            self._retired.append(worker.process.kill())
        worker.stopped()

    def _send(self, worker: Slot, message: Any) -> bool:
        return worker.process is not None and worker.process.send(message)

    def _receive(self, worker: Slot) -> Outcome | None:
        """Handle one message (or the death) of a readable worker."""
        assert worker.process is not None
        try:
            message = worker.process.conn.recv()
        except (EOFError, OSError):
            return self._on_death(worker)
        kind = message.get("type")
        if kind == "ready":
            worker.failures = 0
            if worker.warming:  # its job is waiting in its socket; the walltime starts now
                worker.warming, worker.job_started = False, time.monotonic()
            else:
                worker.move(IDLE)
            self.engine_name = message["engine"]
            self.engine_version, self.engines = message["version"], message["engines"]
        elif kind == "failed":
            job = self._job_of_warming(worker)
            summary = message["error"].strip().splitlines()[-1]
            self._on_start_failure(worker, summary, message["error"])
            if job is not None:
                return self._not_started(job, f"worker could not start: {summary}")
        elif kind == "outcome" and worker.state is BUSY and message["job_id"] == worker.job_id:
            self._last_busy = time.monotonic()
            self._start_staged(worker)
            return Outcome.of(message)
        else:
            log.warning("worker pid %s sent an unexpected message %r", worker.pid, kind)
        return None

    def _start_staged(self, worker: Slot) -> None:
        """The worker's job reported: the first staged one, if any, is running now."""
        staged = worker.run_staged()
        if staged is not None and staged.cancelled:
            log.info("job %s cancelled: killing worker pid %s", staged.job_id, worker.pid)
            self._replace(worker)

    def _on_death(self, worker: Slot) -> Outcome | None:
        """The worker's socket closed: it died. Fail its job (if any) and replace it."""
        assert worker.process is not None
        returncode = worker.process.wait_exit()
        state, job_id, started = worker.state, worker.job_id, worker.job_started
        tail = worker.process.stderr_tail()
        last_words = exits.last_words(tail)
        if state is STARTING or worker.warming:
            job = self._job_of_warming(worker)
            detail = f"worker process exited with status {returncode} before it was ready"
            summary = f"{detail}: {last_words}" if last_words else detail
            self._on_start_failure(worker, summary, f"{detail}\n{tail}")
            return None if job is None else self._not_started(job, f"worker could not start: "
                                                                   f"{summary}")
        log.warning("worker pid %s died (%s) while %s; stderr ends: %s", worker.pid, returncode,
                    f"running job {job_id}" if job_id else state.value,
                    tail.strip()[-1000:] or "-")
        self._replace(worker)
        if state is not BUSY or job_id is None:
            return None
        error_type, error = exits.describe_exit(returncode, self.memory_limit_mb,
                                                last_words[-300:])
        return Outcome(job_id, False, None, error, error_type, time.monotonic() - started)

    def _job_of_warming(self, worker: Slot) -> tuple[str, float] | None:
        return (worker.job_id or "", worker.job_started) if worker.warming else None

    def _not_started(self, job: tuple[str, float], error: str) -> Outcome:
        """The job never ran: it failed with the machine, not by itself, so the server may
        try it again (a retryable error type)."""
        job_id, handed_over = job
        return Outcome(job_id, False, None, error, exits.NOT_STARTED,
                       time.monotonic() - handed_over)

    def _on_start_failure(self, worker: Slot, summary: str, detail: str) -> None:
        """The worker died or gave up before it was ready. Jobs staged behind its warming
        one (from a replaced worker) die with it and never ran: each fails as not started."""
        log.error("worker failed to start: %s", detail)
        self._unstarted += [self._not_started((s.job_id, time.monotonic()),
                                              f"worker could not start: {summary}")
                            for s in worker.staged if not s.cancelled]
        worker.staged = []
        self._kill(worker)
        worker.start_error = summary
        worker.respawn_at = time.monotonic() + self._backoff(worker)
        worker.failures += 1

    def _backoff(self, worker: Slot) -> float:
        return RESPAWN_BACKOFF_SECONDS[min(worker.failures, len(RESPAWN_BACKOFF_SECONDS) - 1)]

    def _respawn_due(self) -> None:
        now = time.monotonic()
        for worker in self._workers:
            if worker.state is DOWN and worker.respawn_at <= now and not self._closed:
                self._spawn(worker)

    def _expire_walltimes(self) -> list[Outcome]:
        now, expired = time.monotonic(), []
        for worker in self._workers:
            deadline = worker.deadline
            if deadline is not None and now >= deadline:
                job_id, limit = worker.job_id or "", worker.walltime_seconds or 0.0
                started = worker.job_started
                log.warning("job %s exceeded walltime of %g s: killing worker pid %s",
                            job_id, limit, worker.pid)
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
                self._on_start_failure(worker, summary, f"worker pid {worker.pid} {summary}")
                expired.append(self._not_started(job, f"worker could not start: {summary}"))
        return expired

    def _retire_at(self) -> float | None:
        """When idle workers beyond ``keep_warm`` are due to stop (None: nothing to retire)."""
        if self.idle_seconds is None or self._closed:
            return None
        if any(w.state in (BUSY, STARTING) for w in self._workers):
            return None
        if sum(1 for w in self._workers if w.state is IDLE) <= self.keep_warm:
            return None
        return self._last_busy + self.idle_seconds

    def _retire_idle(self) -> bool:
        """Stop the idle workers beyond ``keep_warm`` if they are due; True if any stopped."""
        due = self._retire_at()
        if due is None or time.monotonic() < due:
            return False
        idle = [w for w in self._workers if w.state is IDLE]
        for worker in idle[self.keep_warm:]:
            self._kill(worker)
            worker.move(DORMANT)
        log.info("event=workers_retired workers=%d kept_warm=%d idle_seconds=%g",
                 len(idle) - self.keep_warm, self.keep_warm, self.idle_seconds)
        return True

    def _wait_seconds(self, end: float | None) -> float | None:
        now = time.monotonic()
        times = [t for t in (w.deadline for w in self._workers) if t is not None]
        times += [w.spawned_at + self.start_timeout_seconds for w in self._workers if w.warming]
        times += [t for t in (self._retire_at(),) if t is not None]
        times += [w.respawn_at for w in self._workers if w.state is DOWN]
        if end is not None:
            times.append(end)
        return max(0.0, min(times) - now) if times else None

    def _close_retired(self) -> None:
        for conn in self._retired:
            conn.close()
        self._retired.clear()
