"""The report loop: sends finished results to the server. Results that pile up while a
report is in flight go together in the next one, so reports batch themselves under load.

Results go to the on-disk spool only when the server cannot take them (and at shutdown),
not on the way out: a write and fsync per result would sit between a worker finishing
and its next job. A controller killed with results still in memory loses nothing: their
leases expire and the jobs run again."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from atomiverse_core import jsonio, retry

from .api import ControllerAPI, ServerRefused, ServerUnavailable
from .spool import Spool

log = logging.getLogger("atomiverse.controller.report")
MAX_REPORTS_PER_REQUEST = 500
# While more results are on their way (``more_coming``: the controller says so while a round
# of queued jobs is still to start), reports are spaced at least this far apart and results
# finishing meanwhile ride along. With nothing more coming, a
# result goes at once, so a lone job's latency is unchanged. A report is a write transaction
# on the server, and each wakes the clients waiting on those jobs: 200 single points made
# seven of each at 0.5 s.
MIN_REPORT_INTERVAL_SECONDS = 1.0
# Well under the server's default 64 MiB body limit: optimisation trajectories are large.
MAX_REPORT_BYTES = 8 * 1024 * 1024


class ReportLoop(threading.Thread):
    def __init__(self, api: ControllerAPI, *, name: str, spool: Spool,
                 more_coming: Callable[[], bool] = lambda: False) -> None:
        super().__init__(name="report-loop", daemon=True)
        self.api, self.controller_name, self.spool = api, name, spool
        self.more_coming = more_coming
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.delivered = 0
        self._arrived = threading.Event()  # a result was handed over
        self._spool_failing = False  # the last spool write failed (full disk)

    def put(self, report: dict[str, Any], *, spooled: bool = False) -> None:
        report["_spooled"] = spooled
        self.queue.put(report)
        # A holding report loop only needs waking once nothing more is coming; woken for
        # every result, it cost a thread switch per job for nothing.
        if not self.more_coming():
            self._arrived.set()

    def resend_spooled(self) -> int:
        """Results a previous run computed but could not deliver."""
        reports = self.spool.pending()
        for report in reports:
            self.put(report, spooled=True)
        if reports:
            log.info("event=spool_resend controller=%s jobs=%d", self.controller_name,
                     len(reports))
        return len(reports)

    def _spool(self, batch: list[dict[str, Any]]) -> bool:
        """Keep results the server could not take on disk, so a restart still delivers.
        When the disk refuses (full), they stay in memory, still sent at every retry, and
        the write is tried again with the next retry; False until all are on disk."""
        for report in batch:
            if report.get("_spooled"):
                continue
            try:
                self.spool.put(_decoded(_unmarked(report)))
            except OSError as e:
                if not self._spool_failing:
                    log.error("event=spool_full controller=%s dir=%s error=%s action="
                              "results_kept_in_memory_and_spooling_retried",
                              self.controller_name, self.spool.dir, e)
                self._spool_failing = True
                return False
            report["_spooled"] = True
        if self._spool_failing:
            log.warning("event=spool_writable controller=%s dir=%s", self.controller_name,
                        self.spool.dir)
            self._spool_failing = False
        return True

    def spool_undelivered(self) -> int:
        """At shutdown: whatever is still queued goes to disk for the next start."""
        pending = []
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                pending.append(item)
        if not self._spool(pending):
            unwritten = sum(not r.get("_spooled") for r in pending)
            log.error("event=results_dropped controller=%s jobs=%d reason=spool_full "
                      "consequence=their_leases_expire_and_the_jobs_run_again",
                      self.controller_name, unwritten)
        return len(pending)

    def close(self) -> None:
        self.queue.put(None)

    def run(self) -> None:
        closing = False
        last_sent = 0.0
        while not closing:
            first = self.queue.get()
            if first is None:
                break
            self._hold_while_more_coming(until=last_sent + MIN_REPORT_INTERVAL_SECONDS)
            last_sent = time.monotonic()
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

    def _hold_while_more_coming(self, until: float) -> None:
        """Let results that finish soon ride along, but stop holding as soon as no more are
        coming (the last queued job has started): the batch's last results go at once."""
        while (pause := until - time.monotonic()) > 0 and self.more_coming():
            self._arrived.clear()
            self._arrived.wait(pause)

    def _deliver_halves(self, batch: list[dict[str, Any]]) -> None:
        half = len(batch) // 2
        self._deliver(batch[:half])
        self._deliver(batch[half:])

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        if len(batch) > 1 and sum(map(_size, batch)) > MAX_REPORT_BYTES:
            self._deliver_halves(batch)
            return
        # Until the server takes them: each failed try first puts the results on disk.
        sending = retry.retrying(retry.REPORT, before_sleep=lambda state: self._retrying(
            batch, retry.last_failure(state)),
            retry_on=lambda e: isinstance(e, ServerUnavailable))
        try:
            out = sending(self.api.complete, [_on_the_wire(r) for r in batch])
        except ValueError as e:  # a 4xx: the request is wrong, sending it again won't do
            if len(batch) > 1:  # find the bad report; the others still go (log2 n tries)
                self._deliver_halves(batch)
                return
            log.error("event=report_refused controller=%s job=%s error=%s",
                      self.controller_name, batch[0]["job_id"], e)
            out = {"accepted": [], "rejected": [r["job_id"] for r in batch]}
        except ServerRefused as e:
            log.error("event=report_refused controller=%s jobs=%d error=%s",
                      self.controller_name, len(batch), e)
            out = {"accepted": [], "rejected": [r["job_id"] for r in batch]}
        for job_id in out["rejected"]:
            log.info("event=report_rejected controller=%s job=%s reason=lease_not_held",
                     self.controller_name, job_id)
        self.delivered += len(out["accepted"])
        for report in batch:
            if report.get("_spooled"):
                self.spool.remove(report)

    def _retrying(self, batch: list[dict[str, Any]], error: BaseException | None) -> None:
        log.warning("event=report_retry controller=%s jobs=%d error=%s",
                    self.controller_name, len(batch), error)
        self._spool(batch)


def _unmarked(report: dict[str, Any]) -> dict[str, Any]:
    """The report without this loop's own ``_spooled`` mark."""
    return {k: v for k, v in report.items() if k != "_spooled"}


def _on_the_wire(report: dict[str, Any]) -> dict[str, Any]:
    """The report as sent: a result the worker encoded goes into the body as it is."""
    out = _unmarked(report)
    if isinstance(out.get("result"), bytes):
        out["result"] = jsonio.raw(out["result"])
    return out


def _decoded(report: dict[str, Any]) -> dict[str, Any]:
    """The report with its result as plain JSON values, for the spool's files."""
    if isinstance(report.get("result"), bytes):
        return {**report, "result": jsonio.loads(report["result"])}
    return report


def _size(report: dict[str, Any]) -> int:
    """Rough JSON size of a report, from its biggest part (positions and trajectories)."""
    result = report.get("result") or {}
    if isinstance(result, bytes):  # encoded by the worker: its size is known
        return 200 + len(result) + len(report.get("error") or "")
    traj = result.get("trajectory_positions_angstrom") or []
    atoms = len(result.get("gradient_hartree_per_bohr") or [])
    return 2_000 + 120 * atoms * (1 + len(traj)) + len(report.get("error") or "")
