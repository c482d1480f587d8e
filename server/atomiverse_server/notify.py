"""Wake long-polls when something they wait for may have happened.

In-process events make one server fast; waiters also re-check the database every
``fallback_seconds`` so that several server processes on one database still see each
other's changes."""

from __future__ import annotations

import asyncio
import threading


class Signal:
    """A broadcast signal usable from worker threads and awaited on the event loop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def fire(self) -> None:
        loop, event = self._loop, self._event
        if loop is None or event is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._rotate)

    def _rotate(self) -> None:
        # Wake everyone waiting now and give later waiters a fresh event.
        assert self._event is not None
        self._event.set()
        self._event = asyncio.Event()

    def snapshot(self) -> asyncio.Event | None:
        """Take the current event *before* checking the database, so a change that lands
        between the check and the wait still wakes the waiter. Call on the event loop."""
        return self._event

    @staticmethod
    async def wait(event: asyncio.Event | None, timeout: float) -> None:
        if event is None:
            await asyncio.sleep(timeout)
            return
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass


class Notifier:
    fallback_seconds = 1.0

    def __init__(self) -> None:
        self.jobs_pending = Signal()  # new claimable work
        self.jobs_finished = Signal()  # some job reached a terminal state

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.jobs_pending.bind(loop)
        self.jobs_finished.bind(loop)
