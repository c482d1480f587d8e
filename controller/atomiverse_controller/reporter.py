"""The report loop: sends finished results to the server. Results that pile up while a
report is in flight go together in the next one, so reports batch themselves under load."""

from __future__ import annotations

import logging
import queue
import random
import threading
from typing import Any

from .api import ControllerAPI, ServerRefused, ServerUnavailable
from .spool import Spool

log = logging.getLogger("atomiverse.controller.report")
MAX_REPORTS_PER_REQUEST = 500
# Well under the server's default 64 MiB body limit: optimisation trajectories are large.
MAX_REPORT_BYTES = 8 * 1024 * 1024


class ReportLoop(threading.Thread):
    def __init__(self, api: ControllerAPI, *, name: str, spool: Spool) -> None:
        super().__init__(name="report-loop", daemon=True)
        self.api, self.controller_name, self.spool = api, name, spool
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.delivered = 0
        self._idle = threading.Condition()
        self._in_flight = 0

    def put(self, report: dict[str, Any], *, spooled: bool = False) -> None:
        if not spooled:
            self.spool.put(report)
        with self._idle:
            self._in_flight += 1
        self.queue.put(report)

    def resend_spooled(self) -> int:
        """Results a previous run computed but could not deliver."""
        reports = self.spool.pending()
        for report in reports:
            self.put(report, spooled=True)
        if reports:
            log.info("event=spool_resend controller=%s jobs=%d", self.controller_name,
                     len(reports))
        return len(reports)

    def close(self) -> None:
        self.queue.put(None)

    def flush(self, timeout: float) -> bool:
        """Wait until every report handed over so far is delivered (or given up)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def run(self) -> None:
        closing = False
        while not closing:
            first = self.queue.get()
            if first is None:
                break
            batch, size = [first], _size(first)
            while len(batch) < MAX_REPORTS_PER_REQUEST and size < MAX_REPORT_BYTES:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    closing = True
                    break
                batch.append(item)
                size += _size(item)
            self._deliver(batch)

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        if len(batch) > 1 and sum(map(_size, batch)) > MAX_REPORT_BYTES:
            half = len(batch) // 2
            self._deliver(batch[:half])
            self._deliver(batch[half:])
            return
        backoff = 0.2
        while True:
            try:
                out = self.api.complete(batch)
                break
            except ServerUnavailable as e:
                log.warning("event=report_retry controller=%s jobs=%d error=%s",
                            self.controller_name, len(batch), e)
                # Capped low: the results are waiting, and a server back from an outage
                # only holds their leases for one lease period.
                threading.Event().wait(backoff * (1 + random.random()))
                backoff = min(backoff * 2, 5.0)
            except (ServerRefused, ValueError) as e:
                log.error("event=report_refused controller=%s jobs=%d error=%s",
                          self.controller_name, len(batch), e)
                out = {"accepted": [], "rejected": [r["job_id"] for r in batch]}
                break
        for job_id in out["rejected"]:
            log.info("event=report_rejected controller=%s job=%s reason=lease_not_held",
                     self.controller_name, job_id)
        self.delivered += len(out["accepted"])
        for report in batch:
            self.spool.remove(report)
        with self._idle:
            self._in_flight -= len(batch)
            self._idle.notify_all()


def _size(report: dict[str, Any]) -> int:
    """Rough JSON size of a report, from its biggest part (positions and trajectories)."""
    result = report.get("result") or {}
    traj = result.get("trajectory_positions_angstrom") or []
    atoms = len(result.get("gradient_hartree_per_bohr") or [])
    return 2_000 + 120 * atoms * (1 + len(traj)) + len(report.get("error") or "")
