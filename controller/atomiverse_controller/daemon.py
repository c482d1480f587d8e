"""The controller's main loop: register, then dispatch claimed jobs to warm worker
processes and hand their outcomes to the report loop, until told to stop.

Shutdown is warm then cold: the first SIGTERM/SIGINT stops claiming, hands back jobs not
yet started, and lets running ones (and a short job staged behind one, already in its
worker) finish within the grace period; the second hands everything back at once."""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from atomiverse_core import retry, sdnotify
from atomiverse_core.heap import freeze_startup_heap

from . import allocation
from .api import ControllerAPI, ServerRefused, ServerUnavailable, save_token
from .claimer import ClaimLoop
from .config import ControllerConfig
from .heartbeat import Heartbeat
from .ledger import Ledger
from .lifeline import Lifeline
from .pool import Outcome, WorkerPool
from .reporter import ReportLoop
from .spool import Spool

log = logging.getLogger("atomiverse.controller")
# Jobs shorter than this (the claim loop's moving average) are staged behind running ones, so
# a worker goes from one to the next without a round trip through this process: about half a
# millisecond a job on a loaded machine, 2% of a 25 ms single point. Longer jobs gain nothing
# measurable, and a job staged behind a long one could wait while another slot sits idle.
STAGE_JOBS_SHORTER_THAN_SECONDS = 0.25
# The idle dispatch loop's backstop wake-up: every event it waits for wakes it anyway.
IDLE_POLL_SECONDS = 30.0
# How long a stopping controller waits for its claim loop's last poll (ended by deregister).
CLAIMER_JOIN_SECONDS = 10.0
# Tries at handing back and deregistering when stopping, over about 4 s (retry.CLIENT).
LEAVE_ATTEMPTS = 5


class Controller:
    def __init__(self, config: ControllerConfig, api: ControllerAPI | None = None) -> None:
        self.config = config
        self.api = api or ControllerAPI(config.server)
        self.ledger = Ledger()
        self.pool = WorkerPool(config.slots, engine=config.engine,
                               memory_limit_mb=config.memory_limit_mb,
                               cores_per_job=config.cores_per_job,
                               idle_seconds=config.worker_idle_seconds or None,
                               keep_warm=config.warm_workers)
        self.reporter = ReportLoop(self.api, name=config.name, spool=Spool(config.spool_dir),
                                   more_coming=self._more_results_coming)
        self.claimer: ClaimLoop | None = None
        self.heartbeat: Heartbeat | None = None
        self._stop = threading.Event()  # warm: no new work
        self._kill = threading.Event()  # cold: give everything back now
        self._refused: Exception | None = None
        self.lifeline: Lifeline | None = None
        self.completed = 0
        self.failed = 0

    # ----- lifecycle ---------------------------------------------------------------------
    def request_stop(self, cold: bool = False) -> None:
        (self._kill if cold or self._stop.is_set() else self._stop).set()
        self._stop.set()
        if self.claimer:
            self.claimer.stop()
        self.pool.wakeup()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            cold = self._stop.is_set()
            log.info("event=signal controller=%s signal=%s shutdown=%s", self.config.name,
                     signal.Signals(signum).name, "cold" if cold else "warm")
            self.request_stop(cold=cold)

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _drain_requested(self) -> None:
        if not self._stop.is_set():
            log.info("event=drain controller=%s", self.config.name)
            self.request_stop()

    def _refused_by_server(self, exc: Exception) -> None:
        log.error("event=refused controller=%s error=%s", self.config.name, exc)
        self._refused = exc
        self.request_stop(cold=True)

    def register(self) -> None:
        """Come back with our own token if we have one; otherwise (or if the server no
        longer knows it) use the workspace API key once and keep the token it gives."""
        token = self._saved_token()
        key = self.config.resolved_api_key()
        if not token and not key:
            raise SystemExit("no credentials: pass --api-key or --api-key-file, set "
                             "ATOMIVERSE_API_KEY, or provide a controller token in "
                             f"{self.config.token_file}")
        out = None
        if token:
            try:
                out = self._register_with(token)
            except ServerRefused:
                if not key:
                    raise
                log.warning("event=token_refused controller=%s action=register_with_api_key",
                            self.config.name)
        if out is None:
            out = self._register_with(key)
            save_token(self.config.token_file, out["token"])
        self.heartbeat_seconds = out["heartbeat_seconds"]
        self.config.name = out["name"]
        log.info("event=registered controller=%s slots=%d engine=%s/%s", self.config.name,
                 self.config.slots, self.pool.engine_name, self.pool.engine_version)

    def _held_leases(self) -> list[dict[str, str]]:
        """What this process holds: its ledger's jobs and the spooled results it will still
        deliver (an earlier process's, too). The server ends this controller's other leases,
        so a crashed predecessor's jobs return to the queue at once."""
        spooled = [{"job_id": r["job_id"], "lease_id": r["lease_id"]}
                   for r in self.reporter.spool.pending()]
        return [*self.ledger.leases(), *spooled]

    def _saved_token(self) -> str | None:
        path = self.config.token_file
        return path.read_text().strip() if path.exists() else None

    def _register_with(self, credential: str) -> dict[str, Any]:
        """Register, trying again until the server answers (or we are told to stop)."""
        registering = retry.retrying(retry.REGISTER, stop_event=self._stop,
                                     retry_on=lambda e: isinstance(e, ServerUnavailable))
        try:
            return registering(lambda: self.api.register(
                api_key=credential, name=self.config.name, slots=self.config.slots,
                cores_per_job=self.config.cores_per_job, capacity=self.config.capacity,
                engines={self.pool.engine_name: self.pool.engine_version, **self.pool.engines},
                holding=self._held_leases(), pool=self.config.pool))
        except retry.Stopped as e:
            raise SystemExit("stopped before the server answered") from e

    def run(self, burst: bool = False, max_jobs: int | None = None) -> bool:
        """Serve until stopped. ``burst``: stop when there is no more work. Returns True on
        a clean stop (every result delivered, nothing held)."""
        if self.config.exit_with_pid:
            self.lifeline = Lifeline(self.config.exit_with_pid,
                                     on_gone=lambda: self.request_stop(cold=True))
            self.lifeline.start()
        self.pool.start()
        try:
            self.register()
            self._start_loops(burst)
            freeze_startup_heap()
            sdnotify.notify(f"READY=1\nSTATUS=serving {self.config.slots} slots as "
                            f"{self.config.name}")
            self._dispatch_until_stopped(burst, max_jobs)
            return self._shutdown()
        finally:
            self.pool.shutdown(kill=True)
            self.api.close()

    def _start_loops(self, burst: bool) -> None:
        self.reporter.start()
        self.reporter.resend_spooled()
        self.claimer = ClaimLoop(
            self.api, self.ledger, name=self.config.name, slots=self.config.slots,
            prefetch_per_slot=self.config.prefetch_per_slot,
            wait_seconds=0.0 if burst else self.config.claim_wait_seconds,
            on_claimed=self._claimed, on_refused=self._refused_by_server)
        self.claimer.start()
        self.heartbeat = Heartbeat(self.api, self.ledger, name=self.config.name,
                                   interval=self.heartbeat_seconds,
                                   on_stop_jobs=self._stop_jobs,
                                   on_refused=self._refused_by_server,
                                   on_drain=self._drain_requested,
                                   # A result waiting in the spool for the server to come back
                                   # keeps its lease: else the restarted server's sweep gave the
                                   # job to a new attempt before the spool was delivered.
                                   held=self._held_leases)
        self.heartbeat.start()
        if self.config.metrics_port:
            from .metrics import serve_metrics

            serve_metrics(self.config.metrics_port, self.config.name, self._metrics)

    def _claimed(self) -> None:
        self.pool.wakeup()
        if self.heartbeat is not None:  # asleep until the idle beat: the new leases need it
            self.heartbeat.wake()

    def _metrics(self) -> dict[str, float]:
        queued, running = self.ledger.counts()
        return {"claimed": self.claimer.claimed_total if self.claimer else 0,
                "done": self.completed - self.failed, "failed": self.failed,
                "staged": self.pool.staged_total,
                "running": running, "queued": queued, "slots": self.config.slots,
                "warm_workers": self.pool.warm_workers(),
                "heartbeat_age_seconds": time.monotonic() - self.heartbeat.last_ok
                if self.heartbeat else 0.0}

    # ----- dispatch ----------------------------------------------------------------------
    def _dispatch_until_stopped(self, burst: bool, max_jobs: int | None) -> None:
        idle_since = time.monotonic()
        drain_at = allocation.drain_time(allocation.allocation_end(),
                                         self.config.stop_before_end_seconds)
        if drain_at is not None:
            log.info("event=allocation_end controller=%s stop_claiming_in_seconds=%.0f",
                     self.config.name, drain_at - time.time())
        while not self._kill.is_set():
            if drain_at is not None and time.time() >= drain_at and not self._stop.is_set():
                log.info("event=allocation_ending controller=%s action=drain", self.config.name)
                self.request_stop()
            if not self._stop.is_set():
                self._fill_free_slots()
            outcomes = self.pool.poll(timeout=self._poll_seconds(burst, idle_since, drain_at))
            if outcomes and not self._stop.is_set():
                # The freed worker gets its next job before we log and queue the result.
                self._fill_free_slots()
            for outcome in outcomes:
                self._report(outcome)
            queued, running = self.ledger.counts()
            if queued or running:
                idle_since = time.monotonic()
            if self._stop.is_set() and not running:
                return
            if max_jobs is not None and self.completed >= max_jobs:
                return
            if burst and not (queued or running) and self.claimer.last_claim_empty:
                return
            limit = self.config.exit_when_idle_seconds
            if limit and time.monotonic() - idle_since > limit:
                log.info("event=idle_exit controller=%s idle_seconds=%.0f", self.config.name,
                         limit)
                return

    def _poll_seconds(self, burst: bool, idle_since: float, drain_at: float | None) -> float:
        """How long the dispatch loop may sleep. A claim, a stop and a worker's outcome wake
        it at once; with nothing held, a sleep of a second would only wake an idle
        controller for nothing (issue 22), so it sleeps until the idle exit or the
        allocation's drain is due."""
        queued, running = self.ledger.counts()
        if queued or running or burst or self._stop.is_set():
            return 1.0
        seconds = IDLE_POLL_SECONDS
        limit = self.config.exit_when_idle_seconds
        if limit:
            seconds = min(seconds, idle_since + limit - time.monotonic())
        if drain_at is not None:
            seconds = min(seconds, drain_at - time.time())
        return max(0.05, seconds)

    def _fill_free_slots(self) -> None:
        while self.pool.free_slots() > 0:
            job = self.ledger.next_queued()
            if job is None:
                return
            self.pool.submit(job["job_id"], job["job"], job.get("walltime_seconds"))
        if self._jobs_are_short():
            self._stage_behind_running()

    def _jobs_are_short(self) -> bool:
        seconds = self.claimer.job_seconds if self.claimer is not None else None
        return seconds is not None and seconds < STAGE_JOBS_SHORTER_THAN_SECONDS

    def _stage_behind_running(self) -> None:
        """Stage only while a full round of jobs is queued besides: at a batch's end the last
        jobs go to whichever slot frees first."""
        # Counted once per fill, not per job: meanwhile other threads only add claimed jobs
        # or drop cancelled ones (then ``next_queued`` says None).
        for _ in range(min(self.ledger.counts()[0] - self.config.slots,
                           self.pool.stageable())):
            job = self.ledger.next_queued()
            if job is None:
                return
            if not self.pool.stage(job["job_id"], job["job"], job.get("walltime_seconds")):
                self.ledger.unstart(job)
                return

    def _more_results_coming(self) -> bool:
        """Whether results held for the next report will soon have company: a full round of
        queued jobs is still to start. Once fewer remain, what is held goes out, so the
        batch's last results, sent the moment they finish, do not queue behind it."""
        return self.ledger.counts()[0] + self.pool.staged_jobs() >= self.config.slots

    def _report(self, outcome: Outcome) -> None:
        job = self.ledger.finish(outcome.job_id)
        if self.claimer is not None and outcome.ok:
            self.claimer.observe(outcome.wall_time_seconds)
        if job is None:
            return  # cancelled or lost meanwhile: the server no longer wants this result
        self.completed += 1
        self.failed += not outcome.ok
        log.info("event=finished controller=%s job=%s ok=%s wall_seconds=%.3f%s",
                 self.config.name, outcome.job_id, outcome.ok, outcome.wall_time_seconds,
                 "" if outcome.ok else f" error_type={outcome.error_type}")
        self.reporter.put({"job_id": outcome.job_id, "lease_id": job["lease_id"],
                           "ok": outcome.ok, "result": outcome.result_json,
                           "error": outcome.error, "error_type": outcome.error_type})

    def _stop_jobs(self, job_ids: set[str], reason: str) -> None:
        queued, running = self.ledger.drop(job_ids)
        for job_id in running:
            self.pool.cancel(job_id)
        for job_id in (*queued, *running):
            log.info("event=stopped controller=%s job=%s reason=%s", self.config.name, job_id,
                     reason)

    # ----- shutdown ----------------------------------------------------------------------
    def _shutdown(self) -> bool:
        sdnotify.notify("STOPPING=1")
        if self.claimer:
            self.claimer.stop()
        unstarted = self.ledger.take_queued()
        if not self._kill.is_set():
            self._finish_running_within_grace()
        running = self.ledger.take_running()
        for job in running:
            self.pool.cancel(job["job_id"])
        handed_back = [{"job_id": j["job_id"], "lease_id": j["lease_id"]}
                       for j in (*unstarted, *running)]
        self.reporter.close()
        # With the server gone for good nothing will take the results: spool them now.
        server_gone = self.lifeline is not None and self.lifeline.gone.is_set()
        self.reporter.join(timeout=0.5 if server_gone else 30)
        if self.reporter.is_alive():
            # Still retrying an unreachable server: whatever is queued waits on disk.
            self.reporter.spool_undelivered()
        if self.heartbeat:
            self.heartbeat.stop()
        if self._refused is not None or server_gone:
            return False
        try:
            self._leave(handed_back)
        except (ServerUnavailable, ServerRefused, ValueError) as e:
            log.warning("event=deregister_failed controller=%s error=%s", self.config.name, e)
            return False
        log.info("event=stopped controller=%s completed=%d", self.config.name, self.completed)
        return True

    def _leave(self, handed_back: list[dict[str, str]]) -> None:
        """Hand back what was not finished and say goodbye, trying again for a few seconds
        if the server is briefly unreachable. Both requests may be repeated safely. Tried
        once, a goodbye on a kept-alive connection that the server closed at the same
        moment (an idle exit after uvicorn's 5 s keep-alive) was lost. The controller then
        stayed "online" in the listing, and its allocation ended as failed."""
        leaving = retry.retrying(retry.CLIENT, attempts=LEAVE_ATTEMPTS,
                                 retry_on=lambda e: isinstance(e, ServerUnavailable),
                                 before_sleep=self._log_leave_retry)
        if handed_back:
            leaving(self.api.release, handed_back)
            log.info("event=released controller=%s jobs=%d", self.config.name,
                     len(handed_back))
        leaving(self.api.deregister)  # also ends the claim loop's last poll, empty-handed
        self._join_claimer()

    def _log_leave_retry(self, state: Any) -> None:
        log.warning("event=deregister_retry controller=%s attempt=%d error=%s",
                    self.config.name, state.attempt_number, retry.last_failure(state))

    def _join_claimer(self) -> None:
        """A claim answered while stopping is handed back by the claim loop itself: wait
        for it, or those jobs stay leased to an exited process until their lease runs out."""
        if self.claimer is not None and self.claimer.is_alive():
            self.claimer.join(timeout=CLAIMER_JOIN_SECONDS)
            if self.claimer.is_alive():
                log.warning("event=claim_still_open controller=%s", self.config.name)

    def _finish_running_within_grace(self) -> None:
        deadline = time.monotonic() + self.config.grace_seconds
        while not self._kill.is_set() and time.monotonic() < deadline:
            if not self.ledger.counts()[1]:
                return
            for outcome in self.pool.poll(timeout=min(1.0, deadline - time.monotonic())):
                self._report(outcome)
