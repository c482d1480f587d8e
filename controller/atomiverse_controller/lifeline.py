"""The local controller's life is tied to its embedded server's: once the server process is
gone, nothing will ever answer at its URL again (a new server of the home listens elsewhere
and starts its own controller), so the controller stops instead of retrying forever and
holding its workers' memory."""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable

import psutil

log = logging.getLogger("atomiverse.controller")
# How often the server process is looked at (seconds) where the kernel cannot say when it
# exits (no pidfd: not Linux, or older than 5.3). The controller exits within about this long
# of its server, plus its cold shutdown (results it could not deliver are spooled for the
# next controller of the home). With a pidfd it learns at once and never wakes before.
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
        self._pidfd = _open_pidfd(self.server)
        self._stop_r, self._stop_w = os.pipe()

    def run(self) -> None:
        if self._pidfd is not None:
            # Readable once the process exits (or at stop): no wake-up before (issue 22).
            ready, _, _ = select.select([self._pidfd, self._stop_r], [], [])
            if self._stop_r in ready:
                return
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
        os.write(self._stop_w, b"x")


def _open_pidfd(server: psutil.Process | None) -> int | None:
    """A descriptor that becomes readable when ``server`` exits, if this kernel has them.
    Opened, then the process checked again: the descriptor is of our server, not of a
    process that reused its pid."""
    if server is None or not hasattr(os, "pidfd_open"):
        return None
    try:
        fd = os.pidfd_open(server.pid)
    except OSError:  # gone already, or no pidfd support: the polling loop decides
        return None
    try:
        alive = server.is_running()
    except psutil.Error:
        alive = False
    if not alive:
        os.close(fd)
        return None
    return fd
