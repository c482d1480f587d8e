"""Wake long-polls when something they wait for may have happened.

In-process events make one server fast. Several server processes on one PostgreSQL database
pass their signals to each other (``pgnotify``: LISTEN/NOTIFY, through the ``relay`` of each
signal); waiters also re-check the database every ``fallback_seconds``, in case a
notification was lost with a connection.

A signal may say *which* jobs changed. Its events form a chain (each fired event points to
the next), so a waiter that was busy while several signals fired still learns every job
they named, and skips the database when none of them is one it waits for."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator

from .handoff import ClaimWaiters


class _Event(asyncio.Event):
    def __init__(self) -> None:
        super().__init__()
        self.job_ids: frozenset[str] | None = None  # what the fire named; None: unknown
        self.next: _Event | None = None


Relay = Callable[[str, "frozenset[str] | None"], None]


class Signal:
    """A broadcast signal usable from worker threads and awaited on the event loop.
    ``relay`` (set by ``pgnotify``): also tells the other server processes, by ``name``."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.relay: Relay | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: _Event | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = _Event()

    def fire(self, job_ids: Iterable[str] | None = None) -> None:
        """Wake every waiter, here and in the other server processes; ``job_ids``: the
        jobs this is about, if known."""
        ids = None if job_ids is None else frozenset(job_ids)
        self.fire_here(ids)
        relay = self.relay
        if relay is not None:
            relay(self.name, ids)

    def fire_here(self, job_ids: Iterable[str] | None = None) -> None:
        """Wake the waiters of this process only (what another process told us, or what
        this one learnt from the database, which the others read too)."""
        loop, event = self._loop, self._event
        if loop is None or event is None or loop.is_closed():
            return
        ids = None if job_ids is None else frozenset(job_ids)
        loop.call_soon_threadsafe(self._rotate, ids)

    def _rotate(self, job_ids: frozenset[str] | None) -> None:
        # Wake everyone waiting now and give later waiters a fresh event.
        assert self._event is not None
        fired, self._event = self._event, _Event()
        fired.job_ids, fired.next = job_ids, self._event
        fired.set()

    def snapshot(self) -> _Event | None:
        """Take the current event *before* checking the database, so a change that lands
        between the check and the wait still wakes the waiter. Call on the event loop."""
        return self._event

    @staticmethod
    def named_since(event: _Event | None) -> tuple[set[str] | None, _Event | None]:
        """Every job named by the signals fired since ``event`` was taken (None if any fire
        named none: anything may have changed), and the event to wait on next."""
        named: set[str] | None = set()
        while event is not None and event.is_set():
            if event.job_ids is None or named is None:
                named = None
            else:
                named |= event.job_ids
            event = event.next
        return named, event

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

    def __init__(self, fallback_seconds: float | None = None,
                 max_watches: int | None = None) -> None:
        if fallback_seconds is not None:
            self.fallback_seconds = fallback_seconds
        self.jobs_pending = Signal("pending")  # new claimable work
        self.jobs_finished = Signal("finished")  # some job reached a terminal state
        # some job changed state (any: started, requeued, ...)
        self.jobs_changed = Signal("changed")
        # new jobs stored; names the workspaces, not the jobs (pages' watches)
        self.jobs_submitted = Signal("submitted")
        self.claim_waiters = ClaimWaiters()  # claim polls parked here, for hand-offs
        self.watches = Watches(max_watches)  # job watches and waits parked here, bounded
        # A composite job (a chain) may move on when one of its children finishes: wakes
        # workflows.Advancer (``children_finished``). Not on every finish: a pass costs a query.
        self.composites_wake = threading.Event()
        self.registrations = 0  # controllers registered with this process: see Advancer
        self.stopping = False

    def finished(self, job_ids: Iterable[str] | None) -> None:
        """Jobs reached a terminal state (``None``: some jobs, which ones unknown)."""
        ids = None if job_ids is None else list(job_ids)
        self.jobs_finished.fire(ids)  # relayed once: the others fire both, as here
        self.jobs_changed.fire_here(ids)

    def signals(self) -> dict[str, Signal]:
        """The signals passed between server processes, by name."""
        return {s.name: s for s in (self.jobs_pending, self.jobs_finished, self.jobs_changed,
                                    self.jobs_submitted)}

    def heard(self, name: str, job_ids: frozenset[str] | None) -> None:
        """Another server process fired signal ``name``: wake the waiters here."""
        signal = self.signals().get(name)
        if signal is not None:
            signal.fire_here(job_ids)
        if signal is self.jobs_finished:
            self.jobs_changed.fire_here(job_ids)

    def children_finished(self) -> None:
        """Some job that is a composite's child reached a terminal state."""
        self.composites_wake.set()

    def controller_registered(self) -> None:
        """A controller said its engines: composites waiting for them may start."""
        self.registrations += 1
        self.composites_wake.set()

    def stop(self) -> None:
        """The server is shutting down: long-polls answer now. Left parked, they would hold
        the shutdown for its whole grace period and then be cancelled mid-request."""
        self.stopping = True
        self.jobs_pending.fire_here()  # this process's polls only: the others go on
        self.jobs_finished.fire_here()
        self.jobs_changed.fire_here()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.jobs_pending.bind(loop)
        self.jobs_finished.bind(loop)
        self.jobs_changed.bind(loop)
        self.jobs_submitted.bind(loop)


class TooManyWatches(Exception):
    pass


class Watches:
    """The job watches and waits parked in this process: at most ``limit`` at once (each
    holds a connection and a little memory; past the limit a client gets 429 and retries),
    and one watch per ``(workspace, watch_id)``: a client's newer watch ends its older one
    at once, so adding jobs to a watch costs one request, not a wait for the old one's
    timeout. On the event loop only."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit or 4000
        self.parked = 0
        self.asleep = 0  # of those, waiting for a signal now (the atomiverse_parked_waits gauge)
        self._by_id: dict[tuple[str, str], asyncio.Event] = {}

    def enter(self, workspace_id: str, watch_id: str | None) -> asyncio.Event:
        if self.parked >= self.limit:
            raise TooManyWatches(f"{self.parked} watches are open on this server, the most it "
                                 f"holds; retry in a second")
        self.parked += 1
        superseded = asyncio.Event()
        if watch_id is not None:
            older = self._by_id.get((workspace_id, watch_id))
            if older is not None:
                older.set()
            self._by_id[(workspace_id, watch_id)] = superseded
        return superseded

    @contextlib.contextmanager
    def sleeping(self) -> Iterator[None]:
        """Around a parked watch's or wait's sleep: past its first read, until it wakes."""
        self.asleep += 1
        try:
            yield
        finally:
            self.asleep -= 1

    def leave(self, workspace_id: str, watch_id: str | None, mine: asyncio.Event) -> None:
        self.parked -= 1
        if watch_id is not None and self._by_id.get((workspace_id, watch_id)) is mine:
            del self._by_id[(workspace_id, watch_id)]
