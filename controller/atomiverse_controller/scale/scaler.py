"""The scaling loop: each poll, the pool's pending jobs and running capacity (from the
server) against the allocations asked for (from the scheduler, through Parsl).

Capacity counts only what runs or will: free slots of live members, and the slots of
allocations queued or started whose controller has not registered yet. More allocations are
asked for while pending jobs exceed that, never more than ``max_nodes`` at once; queued
allocations are cancelled once nothing is pending. Running ones are never cancelled here: their
controllers finish what they hold and exit after the idle timeout."""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from atomiverse_core import retry

from ..api import ControllerAPI, ServerUnavailable
from ..heartbeat import IDLE_HEARTBEAT_SECONDS
from .provider import controller_script
from .site import SiteConfig

log = logging.getLogger("atomiverse.scale")
# A member not heard from in this many heartbeats past its idle beat is not counted as
# running capacity (its allocation was killed; its leases run out and its jobs return to the
# queue). An idle controller beats only every IDLE_HEARTBEAT_SECONDS: a bare 3 x 3 s dropped
# every idle member from the count between its beats.
LIVE_HEARTBEATS = 3
# Allocations in a row that ended before their controller registered: the controller cannot
# start there (a wrong controller_command or worker_init); stop asking instead of looping.
MAX_START_FAILURES = 3
MAX_LOG_READ_BYTES = 1 << 20  # the registration is among a controller's first lines


def live_seconds(heartbeat_seconds: float) -> float:
    """How long since its last beat a pool member still counts as running capacity."""
    return max(IDLE_HEARTBEAT_SECONDS, heartbeat_seconds) + LIVE_HEARTBEATS * heartbeat_seconds


class AllocationsFail(RuntimeError):
    """Allocations keep ending before their controller registers; the message says where
    their output is."""


@dataclass
class Allocation:
    job_id: str
    submitted_at: float
    state: str = "PENDING"  # Parsl's JobState name


@dataclass
class Snapshot:
    """One poll's view, what the decision is made on (also logged)."""
    pending: int
    live_members: int
    running_slots: int
    free_slots: int
    held: int
    queued_allocations: int
    starting_allocations: int
    members: list[dict[str, Any]] = field(default_factory=list)


class Scaler:
    def __init__(self, site: SiteConfig, provider: Any, api: ControllerAPI,
                 heartbeat_seconds: float) -> None:
        self.site, self.provider, self.api = site, provider, api
        self.live_seconds = live_seconds(heartbeat_seconds)
        self.allocations: dict[str, Allocation] = {}
        self.stop_event = threading.Event()
        self.submitted_total = 0
        self.start_failures = 0

    # ----- one poll ----------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        state = self.api.pool_state()
        live = [m for m in state["members"] if m["status"] == "online"
                and m["seen_seconds_ago"] < self.live_seconds]
        self._refresh_allocations()
        running_ids = {a.job_id for a in self.allocations.values() if a.state == "RUNNING"}
        if self.site.scheduler == "slurm":
            # A member is named TARGET.SLURM_JOB_ID: the allocations without one are starting.
            registered = {m["name"].rsplit(".", 1)[-1] for m in live}
            starting = len(running_ids - registered)
        else:  # a local process knows no allocation id of Parsl's: count instead
            starting = max(len(running_ids) - len(live), 0)
        queued = sum(a.state in ("PENDING", "HELD") for a in self.allocations.values())
        return Snapshot(pending=state["pending"], live_members=len(live),
                        running_slots=sum(m["slots"] for m in live),
                        free_slots=sum(max(m["slots"] - m["running"], 0) for m in live),
                        held=sum(m["running"] for m in live), queued_allocations=queued,
                        starting_allocations=starting, members=live)

    def step(self) -> Snapshot:
        snap = self.snapshot()
        coming = (snap.queued_allocations + snap.starting_allocations) * \
            self.site.slots_per_node
        uncovered = snap.pending - snap.free_slots - coming
        room = self.site.max_nodes - len(self.allocations)
        if uncovered > 0 and room > 0:
            self._submit(min(math.ceil(uncovered / self.site.slots_per_node), room), snap)
        elif snap.pending == 0 and snap.queued_allocations:
            self._cancel_queued()
        return snap

    def _refresh_allocations(self) -> None:
        ids = list(self.allocations)
        if not ids:
            return
        for job_id, status in zip(ids, self.provider.status(ids)):
            alloc = self.allocations[job_id]
            if status.terminal:
                log.info("event=allocation_ended job=%s state=%s", job_id, status.state.name)
                del self.allocations[job_id]
                self._check_started(job_id, status)
            elif status.state.name != alloc.state:
                log.info("event=allocation_state job=%s state=%s after_seconds=%.1f", job_id,
                         status.state.name, time.time() - alloc.submitted_at)
                alloc.state = status.state.name

    def _check_started(self, job_id: str, status: Any) -> None:
        """An allocation that ended without its controller registering (the controller logs
        ``event=registered`` to the allocation's stderr, in the work directory) failed to
        start one."""
        if _registered(status.stderr_path):
            self.start_failures = 0
            return
        self.start_failures += 1
        log.warning("event=allocation_without_controller job=%s stderr=%s", job_id,
                    status.stderr_path)
        if self.start_failures >= MAX_START_FAILURES:
            raise AllocationsFail(
                f"{self.start_failures} allocations in a row ended before their controller "
                f"registered: check controller_command and worker_init; the last one's "
                f"output is in {status.stderr_path}")

    def _submit(self, count: int, snap: Snapshot) -> None:
        log.info("event=scale_up pending=%d free_slots=%d queued=%d starting=%d submit=%d",
                 snap.pending, snap.free_slots, snap.queued_allocations,
                 snap.starting_allocations, count)
        for _ in range(count):
            job_id = self.provider.submit(controller_script(self.site), tasks_per_node=1,
                                          job_name=f"atomiverse.{self.site.target}")
            self.allocations[job_id] = Allocation(job_id, time.time())
            self.submitted_total += 1
            log.info("event=allocation_submitted job=%s", job_id)

    def _cancel_queued(self) -> None:
        queued = [a.job_id for a in self.allocations.values() if a.state in ("PENDING", "HELD")]
        log.info("event=scale_down pending=0 cancel_queued=%s", ",".join(queued))
        self.provider.cancel(queued)
        for job_id in queued:
            self.allocations.pop(job_id, None)

    # ----- the loop ----------------------------------------------------------------------
    def run(self) -> None:
        """Poll until stopped. The server away or a scheduler command failing is waited out
        (the claim backoff); a refused pool token ends the loop (ServerRefused)."""
        stepping = retry.retrying(retry.CLAIM, retry_on=self._worth_retrying,
                                  stop_event=self.stop_event)
        last = None
        while not self.stop_event.is_set():
            try:
                snap = stepping(self.step)
            except retry.Stopped:
                return
            summary = (snap.pending, snap.live_members, snap.held, len(self.allocations))
            if summary != last:
                log.info("event=pool pending=%d members=%d held=%d running_slots=%d "
                         "allocations=%d", snap.pending, snap.live_members, snap.held,
                         snap.running_slots, len(self.allocations))
                last = summary
            self.stop_event.wait(self.site.poll_seconds)

    def _worth_retrying(self, error: BaseException) -> bool:
        from parsl.providers.errors import ExecutionProviderException

        if isinstance(error, (ServerUnavailable, ExecutionProviderException)):
            log.warning("event=step_failed error=%s: %s", type(error).__name__, error)
            return True
        return False

    def stop(self) -> None:
        self.stop_event.set()

    def release_queued(self) -> None:
        """On exit: allocations still queued are cancelled (they would start for nothing);
        running ones finish their work and exit when idle."""
        self._refresh_allocations()
        if any(a.state in ("PENDING", "HELD") for a in self.allocations.values()):
            self._cancel_queued()


def _registered(stderr_path: str | None) -> bool:
    try:
        with open(stderr_path or "", "rb") as f:
            return b"event=registered" in f.read(MAX_LOG_READ_BYTES)
    except OSError:
        return False
