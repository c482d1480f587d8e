"""The local controller's life is tied to its embedded server's: once the server process is
gone, nothing will ever answer at its URL again (a new server of the home listens elsewhere
and starts its own controller), so the controller stops instead of retrying forever and
holding its workers' memory."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psutil

log = logging.getLogger("atomiverse.controller")
# How often the server process is looked at (seconds). The controller exits within about
# this long of its server, plus its cold shutdown (results it could not deliver are spooled
# for the next controller of the home).
CHECK_SECONDS = 1.0


class Lifeline(threading.Thread):
    def __init__(self, pid: int, on_gone: Callable[[], None]) -> None:
        super().__init__(name="lifeline", daemon=True)
        self.on_gone = on_gone
        self.gone = threading.Event()
        try:
            self.server: psutil.Process | None = psutil.Process(pid)
        except psutil.NoSuchProcess:
            self.server = None
        self._stop = threading.Event()

    def run(self) -> None:
        # is_running() also compares the start time: a reused pid is not our server.
        while self._server_alive():
            if self._stop.wait(CHECK_SECONDS):
                return
        log.warning("event=server_gone pid=%s action=exit",
                    self.server.pid if self.server else None)
        self.gone.set()
        self.on_gone()

    def _server_alive(self) -> bool:
        try:
            return self.server is not None and self.server.is_running() and \
                self.server.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def stop(self) -> None:
        self._stop.set()
