"""The claim loop: keep the local queue filled between a low and a high watermark, so a
big batch costs a claim per several jobs and the workers never wait for the network."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from .api import ControllerAPI, ServerRefused, ServerUnavailable
from .ledger import Ledger

log = logging.getLogger("atomiverse.controller.claim")


class ClaimLoop(threading.Thread):
    def __init__(self, api: ControllerAPI, ledger: Ledger, *, name: str, slots: int,
                 prefetch_per_slot: int, wait_seconds: float, on_claimed: Callable[[], None],
                 on_refused: Callable[[Exception], None]) -> None:
        super().__init__(name="claim-loop", daemon=True)
        self.api, self.ledger, self.controller_name = api, ledger, name
        # Refill while every slot still has a job waiting behind it, so the claim's round trip
        # is hidden behind a job's compute time rather than paid by an idle slot.
        self.low = slots * (1 + min(prefetch_per_slot, 1))
        self.high = max(slots * (1 + prefetch_per_slot), self.low)
        self.wait_seconds = wait_seconds
        self.on_claimed, self.on_refused = on_claimed, on_refused
        self.stop_event = threading.Event()
        self.last_claim_empty = False
        self.claimed_total = 0

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        backoff = 0.5
        while not self.stop_event.is_set():
            if not self.ledger.wait_until_below(self.low + 1, timeout=0.5):
                continue
            queued, running = self.ledger.counts()
            want = self.high - queued - running
            try:
                jobs = self.api.claim(max_jobs=max(want, 1), wait_seconds=self.wait_seconds)
                backoff = 0.5
            except ServerRefused as e:
                self.on_refused(e)
                return
            except (ServerUnavailable, ValueError) as e:
                log.warning("event=claim_failed controller=%s error=%s", self.controller_name, e)
                # Jitter keeps a fleet of controllers from retrying in step.
                self.stop_event.wait(backoff * (1 + random.random()))
                backoff = min(backoff * 2, 30.0)
                continue
            self.last_claim_empty = not jobs
            if jobs:
                if self.stop_event.is_set():
                    # Claimed while shutting down: hand them straight back.
                    self._release(jobs)
                    return
                self.claimed_total += len(jobs)
                for j in jobs:
                    j["claimed_at"] = time.monotonic()
                    log.info("event=claimed controller=%s job=%s attempt=%s",
                             self.controller_name, j["job_id"], j["attempt"])
                self.ledger.add_claimed(jobs)
                self.on_claimed()

    def _release(self, jobs: list[dict]) -> None:
        try:
            self.api.release([{"job_id": j["job_id"], "lease_id": j["lease_id"]} for j in jobs])
        except (ServerUnavailable, ServerRefused, ValueError) as e:
            log.warning("event=release_failed controller=%s error=%s", self.controller_name, e)
