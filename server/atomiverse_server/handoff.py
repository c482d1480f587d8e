"""New work handed straight to the controllers already waiting for it.

A controller with nothing to do sits in a claim long-poll. Without a hand-off, a submission
commits and fires the pending signal; the poll wakes on the event loop, goes to the thread
pool and claims in a write transaction of its own, while the client's first wait request
competes with it for the interpreter. A batch's first jobs then started 10 ms or more after
its commit, with every core idle. Instead, the request that committed the work claims for
the polls already parked here, in its own thread, right after its commit, and hands each
its jobs: the claim the poll would have made, made sooner.

Only polls in this server process are handed work. Other processes on a shared PostgreSQL
database find it on their periodic re-check, as before, and a controller that is between
polls claims for itself when it comes back. A hand-off whose poll has gone meanwhile (the
controller disconnected) leaves its jobs leased to nobody who knows: their leases expire and
they run again, as with a claim answer lost on the way back.

A single submission (``POST /api/v1/jobs`` and ``/run``, each calculation of the ASE
calculator) claims for the parked polls inside its own write transaction (``Handing``): one
commit instead of two on the call's path, and on SQLite one turn of the database's single
writer lock less. The polls are handed their jobs only once that transaction has committed,
and nothing (they look for themselves) if it did not."""

from __future__ import annotations

import asyncio
import logging
import threading
from types import TracebackType
from typing import Any, Self

from sqlalchemy.engine import Connection, Engine

from .db import write_tx
from .store import controllers as controller_store
from .store.controllers import Controller

log = logging.getLogger("atomiverse.server.handoff")
Claimed = list[dict[str, Any]]


class ClaimWaiter:
    """One claim long-poll, parked until work may have come."""

    def __init__(self, controller: Controller, max_jobs: int,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.controller, self.max_jobs = controller, max_jobs
        self.handed: asyncio.Future[Claimed] = loop.create_future()
        self._loop = loop
        self.taken = False  # by a submitter, which is claiming for it; under the lock

    def hand(self, jobs: Claimed) -> None:
        """Deliver the jobs claimed for this poll; from any thread."""
        try:
            self._loop.call_soon_threadsafe(_resolve, self.handed, jobs)
        except RuntimeError:  # the loop has closed: the server is stopping, the poll is gone
            pass


def _resolve(future: asyncio.Future[Claimed], jobs: Claimed) -> None:
    if not future.done():  # cancelled: the poll went away (see the module docstring)
        future.set_result(jobs)


class ClaimWaiters:
    """The polls parked in this process. Thread-safe: polls park and leave on the event
    loop; submitters take them from the thread pool."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parked: set[ClaimWaiter] = set()
        self._generations: dict[str, int] = {}
        self._freed: dict[str, int] = {}

    def generation(self, controller_id: str) -> int:
        """Bumped each time a new process of this controller registers (``evict``)."""
        with self._lock:
            return self._generations.get(controller_id, 0)

    def evict(self, controller_id: str) -> None:
        """The polls parked for this controller must not take more work: a new process of
        it has registered (they belong to one that is gone, killed mid-poll, its socket not
        yet noticed), or it is handing jobs back to stop. Wake them empty so that they return
        instead of claiming jobs for nobody."""
        with self._lock:
            self._generations[controller_id] = self._generations.get(controller_id, 0) + 1
        self.wake(controller_id)

    def wake(self, controller_id: str) -> None:
        """This controller's parked polls look again now: a slot of it came free. A pool
        member's claim is bounded by its free slots, and its claim for the next job often
        arrives before the report that frees the slot; nothing else wakes that poll, and
        the member sat idle until the pending signal next fired (issue 29). A poll between
        its look and its park is told by ``freed`` (see ``park``)."""
        with self._lock:
            self._freed[controller_id] = self._freed.get(controller_id, 0) + 1
            found = [w for w in self._parked if w.controller.id == controller_id]
            self._parked.difference_update(found)
        for waiter in found:
            waiter.hand([])

    def freed(self, controller_id: str) -> int:
        """How often this controller was woken: taken before a poll's look, like the
        pending signal's event, and given to ``park``."""
        with self._lock:
            return self._freed.get(controller_id, 0)

    def parked(self) -> int:
        """How many polls are parked now (the ``atomiverse_parked_claims`` gauge)."""
        with self._lock:
            return len(self._parked)

    def park(self, waiter: ClaimWaiter, freed: int | None = None) -> bool:
        """Park the poll; False, and not parked, if its controller was woken since
        ``freed`` was read (its look may have missed the slot that came free)."""
        with self._lock:
            if freed is not None and self._freed.get(waiter.controller.id, 0) != freed:
                return False
            self._parked.add(waiter)
            return True

    def leave(self, waiter: ClaimWaiter) -> bool:
        """Stop waiting. False if a submitter took this poll first: its jobs are being
        claimed and will arrive on ``waiter.handed``."""
        with self._lock:
            if waiter.taken:
                return False
            self._parked.discard(waiter)
            return True

    def take(self, claimable: frozenset[str | None]) -> list[ClaimWaiter]:
        """The parked polls of the controllers that can claim new jobs routed to these
        controller ids (None: the managed pool, claimed by the controllers serving it). Each
        poll is taken by one submitter only."""
        with self._lock:
            found = [w for w in self._parked if w.controller.id in claimable
                     # a pool's members claim its jobs (None in claimable is the managed pool)
                     or (w.controller.pool_id is not None and w.controller.pool_id in claimable)
                     or (None in claimable and w.controller.serves_managed)]
            for waiter in found:
                waiter.taken = True
                self._parked.discard(waiter)
            return found


def claim(engine: Engine, controller: Controller, max_jobs: int,
          lease_seconds: float) -> Claimed:
    """Lease up to ``max_jobs`` of this controller's pending jobs, in a transaction."""
    with write_tx(engine) as conn:
        return controller_store.claim_jobs(conn, controller=controller, max_jobs=max_jobs,
                                           lease_seconds=lease_seconds)


def hand_over(engine: Engine, waiters: list[ClaimWaiter], lease_seconds: float) -> int:
    """Claim for each taken poll and hand it the jobs (none, if another controller's claim
    got there first: the poll then looks again itself). Returns the jobs handed over. Never
    raises: the caller's own work is committed, and a poll that is handed nothing claims
    for itself."""
    total = 0
    for waiter in waiters:
        jobs: Claimed = []
        try:
            jobs = claim(engine, waiter.controller, waiter.max_jobs, lease_seconds)
        except Exception:
            log.exception("event=handoff_failed controller=%s", waiter.controller.name)
        finally:
            waiter.hand(jobs)
        total += len(jobs)
    return total


def announce_new_work(engine: Engine, lease_seconds: float, notifier: Any,
                      claimable: frozenset[str | None]) -> None:
    """Claim new jobs for the controllers already waiting in this process to run them, then
    wake the claim polls that were not handed any. ``claimable``: controller ids, None for
    the managed pool; ``notifier``: the app's :class:`~.notify.Notifier`."""
    if not claimable:
        return
    hand_over(engine, notifier.claim_waiters.take(claimable), lease_seconds)
    notifier.jobs_pending.fire()


class Handing:
    """The polls a submission takes and claims for inside its own transaction; they are
    handed their jobs when this context ends, after the transaction's. Use as::

        with Handing(notifier.claim_waiters, lease_seconds) as handing:
            with write_tx(engine) as conn:
                ...  # the submission
                handing.claim(conn, claimable)

    If the transaction fails (or the claim does), the polls are handed nothing: the claim
    was rolled back with the submission, and each poll looks for itself."""

    def __init__(self, waiters: ClaimWaiters, lease_seconds: float) -> None:
        self._waiters, self._lease_seconds = waiters, lease_seconds
        self._claimed: dict[ClaimWaiter, Claimed] = {}

    def claim(self, conn: Connection, claimable: frozenset[str | None]) -> None:
        """Take the polls parked for ``claimable`` (as ``announce_new_work``) and claim for
        each on ``conn``; a poll taken is always handed something when the context ends."""
        if not claimable:
            return
        taken = self._waiters.take(claimable)
        self._claimed.update((waiter, []) for waiter in taken)  # handed even if a claim raises
        for waiter in taken:
            self._claimed[waiter] = controller_store.claim_jobs(
                conn, controller=waiter.controller, max_jobs=waiter.max_jobs,
                lease_seconds=self._lease_seconds)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        committed = kind is None
        for waiter, jobs in self._claimed.items():
            waiter.hand(jobs if committed else [])
