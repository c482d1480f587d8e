"""A self-pipe that makes a pool's blocked ``wait`` return: from any thread, at no CPU cost
while nothing happens."""

from __future__ import annotations

import os


class Waker:
    def __init__(self) -> None:
        self.fd, self._write_fd = os.pipe()  # ``fd``: the end to wait on
        os.set_blocking(self.fd, False)
        os.set_blocking(self._write_fd, False)
        self._asked = False

    def wake(self) -> None:
        """Make the waiter return and :meth:`drain` say True. Thread-safe."""
        self._asked = True
        self.nudge()

    def nudge(self) -> None:
        """Make the waiter look again (e.g. at a new worker's socket); :meth:`drain` does not
        report it as asked for."""
        if self._write_fd < 0:
            return
        try:
            os.write(self._write_fd, b"x")
        except (BlockingIOError, OSError):
            pass  # pipe full (a wakeup is pending anyway) or closed

    def drain(self) -> bool:
        """Empty the pipe; True if :meth:`wake` was called since the last drain."""
        try:
            while os.read(self.fd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        asked, self._asked = self._asked, False
        return asked

    def close(self) -> None:
        read_fd, write_fd = self.fd, self._write_fd
        self._write_fd = -1  # a wake() after close must not write to a reused descriptor
        os.close(read_fd)
        os.close(write_fd)
