"""The claim loop: keep the local queue filled between a low and a high watermark, so a
big batch costs a claim per several jobs and the workers never wait for the network.

How many jobs to hold follows how long jobs take: enough queued per slot to cover
``CLAIM_HORIZON_SECONDS`` of work, at most ``prefetch_per_slot``. Single points of a few
milliseconds come dozens at a time (a claim is a round trip and a write transaction on the
server); hour-long optimisations come one per slot, so a controller does not sit on work
that another, idle controller could start now."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from atomiverse_core import retry

from .api import ControllerAPI, ServerRefused, ServerUnavailable
from .ledger import Ledger

log = logging.getLogger("atomiverse.controller.claim")
CLAIM_HORIZON_SECONDS = 1.0
INITIAL_PER_SLOT = 8  # before any job has finished here
JOB_SECONDS_WEIGHT = 0.2


class ClaimLoop(threading.Thread):
    def __init__(self, api: ControllerAPI, ledger: Ledger, *, name: str, slots: int,
                 prefetch_per_slot: int, wait_seconds: float, on_claimed: Callable[[], None],
                 on_refused: Callable[[Exception], None]) -> None:
        super().__init__(name="claim-loop", daemon=True)
        self.api, self.ledger, self.controller_name = api, ledger, name
        self.slots, self.max_per_slot = slots, prefetch_per_slot
        self.job_seconds: float | None = None  # moving average of finished jobs' wall time
        self.wait_seconds = wait_seconds
        self.on_claimed, self.on_refused = on_claimed, on_refused
        self.stop_event = threading.Event()
        self.last_claim_empty = False
        self.claimed_total = 0

    def stop(self) -> None:
        self.stop_event.set()

    def observe(self, wall_seconds: float) -> None:
        """A job finished after ``wall_seconds``: the next claims are sized by it."""
        w = max(wall_seconds, 1e-4)
        self.job_seconds = w if self.job_seconds is None else \
            (1 - JOB_SECONDS_WEIGHT) * self.job_seconds + JOB_SECONDS_WEIGHT * w

    def per_slot(self) -> int:
        """Jobs to keep queued behind each slot."""
        if self.job_seconds is None:
            return min(self.max_per_slot, INITIAL_PER_SLOT)
        return max(min(self.max_per_slot, math.ceil(CLAIM_HORIZON_SECONDS / self.job_seconds)),
                   min(self.max_per_slot, 1))

    def watermarks(self) -> tuple[int, int]:
        """Claim once ``low`` or fewer jobs are held (running or queued), up to ``high``.
        ``low`` keeps a job waiting behind every slot while the claim is in flight, so its
        round trip is hidden behind compute instead of paid by an idle slot."""
        per_slot = self.per_slot()
        low = self.slots * (1 + min(per_slot, 1))
        return low, max(self.slots * (1 + per_slot), low)

    def run(self) -> None:
        # Jitter keeps a fleet of controllers from retrying in step; a stop ends the wait.
        claiming = retry.retrying(retry.CLAIM, retry_on=self._claim_failed,
                                  stop_event=self.stop_event)
        while not self.stop_event.is_set():
            low, high = self.watermarks()
            # Without prefetch (low == high == slots) claim only for a free slot: holding one
            # job more than the slots would keep it from an idle controller of the pool.
            if not self.ledger.wait_until_below(min(low + 1, high), timeout=0.5):
                continue
            if self._wanted(high) <= 0:
                # Every slot busy and the queue full (``low == high``, as with no prefetch):
                # nothing is claimed until a job finishes, not even one.
                self.ledger.wait_until_below(high, timeout=0.5)
                continue
            try:
                jobs = claiming(self._claim, high)
            except ServerRefused as e:
                self.on_refused(e)
                return
            except retry.Stopped:
                return
            self.last_claim_empty = not jobs
            if jobs:
                if self.stop_event.is_set():
                    # Claimed while shutting down: hand them straight back.
                    self._release(jobs)
                    return
                self.claimed_total += len(jobs)
                claimed_at = time.monotonic()
                for j in jobs:
                    j["claimed_at"] = claimed_at
                # Workers first, log lines after: a claim's worth of lines holds the GIL for
                # a millisecond or more, while a slot may be waiting for its first job.
                self.ledger.add_claimed(jobs)
                self.on_claimed()
                for j in jobs:
                    log.info("event=claimed controller=%s job=%s attempt=%s",
                             self.controller_name, j["job_id"], j["attempt"])

    def _claim(self, high: int) -> list[dict]:
        """One claim, for as many jobs as it takes to fill the queue up to ``high``."""
        wanted = self._wanted(high)
        if wanted <= 0:  # jobs were added meanwhile (a retry after a failed claim)
            return []
        return self.api.claim(max_jobs=wanted, wait_seconds=self.wait_seconds)

    def _wanted(self, high: int) -> int:
        queued, running = self.ledger.counts()
        return high - queued - running

    def _claim_failed(self, error: BaseException) -> bool:
        """The server is away or turned the claim down: wait and claim again."""
        if not isinstance(error, (ServerUnavailable, ValueError)):
            return False
        log.warning("event=claim_failed controller=%s error=%s", self.controller_name, error)
        return True

    def _release(self, jobs: list[dict]) -> None:
        try:
            self.api.release([{"job_id": j["job_id"], "lease_id": j["lease_id"]} for j in jobs])
        except (ServerUnavailable, ServerRefused, ValueError) as e:
            log.warning("event=release_failed controller=%s error=%s", self.controller_name, e)
