"""What this controller holds: jobs claimed but not started, and jobs running. Shared by the
claim loop, the dispatch loop and the heartbeat, so every access takes the lock."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any


class Ledger:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._queued: deque[dict[str, Any]] = deque()
        self._running: dict[str, dict[str, Any]] = {}
        self._wake_below = 0  # what wait_until_below waits for; 0: nobody waits

    def add_claimed(self, jobs: list[dict[str, Any]]) -> None:
        with self._lock:
            self._queued.extend(jobs)
            self._lock.notify_all()

    def next_queued(self) -> dict[str, Any] | None:
        with self._lock:
            if not self._queued:
                return None
            job = self._queued.popleft()
            self._running[job["job_id"]] = job
            return job

    def unstart(self, job: dict[str, Any]) -> None:
        """Put a job taken by ``next_queued`` back at the head of the queue: no worker took it."""
        with self._lock:
            if self._running.pop(job["job_id"], None) is not None:
                self._queued.appendleft(job)

    def finish(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            job = self._running.pop(job_id, None)
            # Woken per finished job, the claim loop cost a thread switch per job for nothing.
            if len(self._queued) + len(self._running) < self._wake_below:
                self._lock.notify_all()
            return job

    def drop(self, job_ids: set[str]) -> tuple[list[str], list[str]]:
        """Forget these jobs; returns (were queued, were running)."""
        with self._lock:
            queued = [j["job_id"] for j in self._queued if j["job_id"] in job_ids]
            self._queued = deque(j for j in self._queued if j["job_id"] not in job_ids)
            running = [j for j in job_ids if self._running.pop(j, None) is not None]
            self._lock.notify_all()
            return queued, running

    def take_queued(self) -> list[dict[str, Any]]:
        with self._lock:
            jobs = list(self._queued)
            self._queued.clear()
            self._lock.notify_all()
            return jobs

    def take_running(self) -> list[dict[str, Any]]:
        with self._lock:
            jobs = list(self._running.values())
            self._running.clear()
            return jobs

    def leases(self) -> list[dict[str, str]]:
        with self._lock:
            return [{"job_id": j["job_id"], "lease_id": j["lease_id"]}
                    for j in (*self._queued, *self._running.values())]

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return len(self._queued), len(self._running)

    def wait_until_below(self, total: int, timeout: float) -> bool:
        """Block until fewer than ``total`` jobs are held; True if so. One waiter at a time
        (the claim loop)."""
        with self._lock:
            self._wake_below = total
            try:
                return self._lock.wait_for(
                    lambda: len(self._queued) + len(self._running) < total, timeout)
            finally:
                self._wake_below = 0
