"""The heartbeat: renews the leases of every job held, independent of job progress, and
learns which jobs were cancelled or are no longer ours.

Timed by the monotonic clock alone, on a thread of its own. It ran on APScheduler, whose
interval trigger schedules by the wall clock: a controller whose clock was stepped back
five minutes (NTP, a VM resumed) sent no heartbeat for five minutes and lost every lease
(tests/chaos/test_chaos_clock.py). Leases are the server's clock's business; the
controller only needs "about every ``interval`` seconds"."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .api import ControllerAPI, ServerRefused, ServerUnavailable
from .ledger import Ledger

log = logging.getLogger("atomiverse.controller.heartbeat")
# Holding no lease, a beat only says "still here" and asks whether to drain: once in this
# many seconds is enough, and an idle controller then costs its server (and the machine)
# next to nothing. The thread sleeps that long too (``wake`` ends the sleep when jobs are
# claimed), instead of waking every ``interval`` to find it has nothing to renew.
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
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by stop() and wake()
        # True while the thread is in (or about to choose) the idle sleep; only then does a
        # claim need to wake it (see ``wake``).
        self._idle = False
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Leases were just taken (a claim): renew them from now on every ``interval``,
        not after the idle sleep. Thread-safe. Already beating every ``interval``, the
        thread is left asleep: woken for every claim, it took the interpreter from the
        thread handing the claimed job to a worker, once for each ASE calculation."""
        if self._idle:
            self._wake.set()

    def _run(self) -> None:
        """A beat every ``interval`` seconds from the end of the last while leases are held:
        one at a time, and a slow server (or a paused process) does not queue up beats to
        fire in a burst. Holding none, one beat per ``IDLE_HEARTBEAT_SECONDS``."""
        sleep = self.interval
        while True:
            woken = self._wake.wait(sleep)
            if self._stop.is_set():
                return
            if woken:  # a claim: the first renewal comes an interval from now
                self._wake.clear()
                self._idle, sleep = False, self.interval
                continue
            try:
                self.beat()
            except Exception:  # a bug in one beat must not end the renewals
                log.exception("event=heartbeat_error controller=%s", self.controller_name)
            # Idle until shown otherwise, set before the leases are looked at: a claim that
            # lands after that look still wakes the thread out of the sleep chosen from it.
            self._idle = True
            sleep = self._next_sleep()
            self._idle = sleep > self.interval

    def _next_sleep(self) -> float:
        """``interval`` while leases are held or the last beat failed; else until the idle
        beat is due (never less than ``interval``)."""
        if self.held():
            return self.interval
        return max(self.interval, self.last_ok + IDLE_HEARTBEAT_SECONDS - time.monotonic())

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
