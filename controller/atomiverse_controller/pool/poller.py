"""Which of the pool's descriptors are readable: one ``select.poll`` for the pool's life,
brought up to date with the descriptors to watch before each wait.
``multiprocessing.connection.wait`` built, filled and closed a selector on every call: once
per job on a busy controller. Used by the polling thread only."""

from __future__ import annotations

import select
from typing import Generic, TypeVar

T = TypeVar("T")


class Poller(Generic[T]):
    def __init__(self) -> None:
        self._poll = select.poll()
        self._fds: set[int] = set()

    def wait(self, watched: dict[int, T], timeout: float | None) -> list[T]:
        """The values of ``watched`` (descriptor -> value) whose descriptor is readable or
        closed at the other end, waiting up to ``timeout`` seconds (None: no limit) for one."""
        for fd in self._fds - watched.keys():
            self._poll.unregister(fd)
        for fd in watched.keys() - self._fds:
            self._poll.register(fd, select.POLLIN)
        self._fds = set(watched)
        events = self._poll.poll(None if timeout is None else timeout * 1000.0)
        return [watched[fd] for fd, _ in events]
