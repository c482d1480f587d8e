"""The heartbeat, on APScheduler: renews the leases of every job held, independent of
job progress, and learns which jobs were cancelled or are no longer ours."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from apscheduler.schedulers.background import BackgroundScheduler

from .api import ControllerAPI, ServerRefused, ServerUnavailable
from .ledger import Ledger

log = logging.getLogger("atomiverse.controller.heartbeat")
# Holding no lease, a beat only says "still here" and asks whether to drain: once in this
# many seconds is enough, and an idle controller then costs its server (and the machine)
# next to nothing.
IDLE_HEARTBEAT_SECONDS = 15.0


class Heartbeat:
    def __init__(self, api: ControllerAPI, ledger: Ledger, *, name: str, interval: float,
                 on_stop_jobs: Callable[[set[str], str], None],
                 on_refused: Callable[[Exception], None], on_drain: Callable[[], None],
                 held: Callable[[], list[dict[str, str]]] | None = None) -> None:
        """``held``: every lease this process holds, the ledger's and those of results not
        yet delivered (default: the ledger's)."""
        self.api, self.ledger, self.controller_name = api, ledger, name
        self.interval = interval
        self.on_stop_jobs, self.on_refused = on_stop_jobs, on_refused
        self.on_drain = on_drain
        self.held = held or ledger.leases
        self.last_ok = time.monotonic()
        self._sched = BackgroundScheduler(daemon=True)

    def start(self) -> None:
        self._sched.add_job(self.beat, "interval", seconds=self.interval, id="heartbeat",
                            max_instances=1, coalesce=True)
        self._sched.start()

    def stop(self) -> None:
        if self._sched.running:
            self._sched.shutdown(wait=False)

    def beat(self) -> None:
        leases = self.held()
        if not leases and time.monotonic() - self.last_ok < IDLE_HEARTBEAT_SECONDS:
            return
        try:
            out = self.api.heartbeat(leases)
        except ServerRefused as e:
            self.on_refused(e)
            return
        except (ServerUnavailable, ValueError) as e:
            log.warning("event=heartbeat_failed controller=%s error=%s", self.controller_name, e)
            return
        self.last_ok = time.monotonic()
        if out["cancelled"]:
            self.on_stop_jobs(set(out["cancelled"]), "cancelled")
        if out["lost"]:
            self.on_stop_jobs(set(out["lost"]), "lease lost")
        if out.get("drain"):
            self.on_drain()
