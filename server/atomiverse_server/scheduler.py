"""Periodic server work: take back expired leases (:class:`LeaseSweeper`, a thread that
sleeps until the first lease can run out), and on APScheduler re-check pending work, forget
old idempotency keys, keep the local controller alive (SQLite's log is checkpointed by
``walcheckpoint``, after writes)."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.engine import Engine

from .db import read_tx, write_tx
from .dberrors import CONNECTION_ERRORS
from .notify import Notifier
from .settings import Settings
from .store import controllers as controller_store
from .store import jobs as job_store
from .store import limits

log = logging.getLogger("atomiverse.server.scheduler")


def sweep_leases(engine: Engine, settings: Settings, notifier: Notifier,
                 started_at: float = 0.0) -> int:
    # While this server was down nobody could renew a lease: give controllers one lease
    # period after start-up to heartbeat (and deliver results) before taking jobs back.
    if time.time() - started_at < settings.lease_seconds:
        return 0
    with read_tx(engine) as conn:  # most sweeps find nothing: no write lock for that
        if not controller_store.any_expired_lease(conn):
            return 0
    with write_tx(engine) as conn:
        n = controller_store.sweep_expired_leases(conn, max_attempts=settings.max_attempts)
    if n:
        log.info("event=lease_expired jobs=%d", n)
        notifier.jobs_pending.fire()
        notifier.finished(None)
        notifier.children_finished()
    return n


class LeaseSweeper:
    """:func:`sweep_leases` when a lease may have run out, not every ``sweep_seconds``: the
    thread sleeps until the earliest lease held expires (heartbeats push it on), or a whole
    lease period when no job runs, since a lease taken later runs out later. A lease is
    still taken back within ``sweep_seconds`` of running out. An idle server used to read
    the database every 5 s for this (issue 22)."""

    def __init__(self, engine: Engine, settings: Settings, notifier: Notifier) -> None:
        self.engine, self.settings, self.notifier = engine, settings, notifier
        self.started_at = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lease-sweep", daemon=True)

    def start(self) -> LeaseSweeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _loop(self) -> None:
        # Nothing can expire before the start-up grace (sweep_leases) is over.
        wait = self.settings.lease_seconds
        while not self._stop.wait(wait):
            wait = self.settings.sweep_seconds  # if this pass fails: try again soon
            try:
                sweep_leases(self.engine, self.settings, self.notifier, self.started_at)
                wait = self.seconds_to_next()
            except CONNECTION_ERRORS as e:
                log.warning("event=database_unavailable job=sweep_leases error=%s",
                            type(getattr(e, "orig", None) or e).__name__)
            except Exception:  # the next pass tries again
                log.exception("event=lease_sweep_failed")

    def seconds_to_next(self) -> float:
        """Until the earliest lease runs out, at least ``sweep_seconds`` (a lease that has
        run out but could not be taken yet is not looked at in a busy loop), at most
        ``lease_seconds``."""
        with read_tx(self.engine) as conn:
            earliest = controller_store.earliest_lease_expiry(conn)
        until = self.settings.lease_seconds if earliest is None else earliest - time.time()
        return min(max(until, self.settings.sweep_seconds), self.settings.lease_seconds)


class PendingWatch:
    """Claim polls parked in this process wake on the pending signal. Work that another
    server process on the same database queued (or took back) fires nothing here: one
    query per ``recheck_seconds`` for the whole process, however many polls are parked,
    sees the pending jobs change and fires it. (Each poll re-claiming every second instead
    cost 200 idle controllers a fifth of a core.)

    The query counts the pending jobs, so it costs in proportion to the queue (150,000
    queued: a fifth of a busy server's time): it runs only while a poll is parked here. The
    first look after none was parked fires at once, as a change since the poll's own claim
    cannot be told from the state before it."""

    def __init__(self, engine: Engine, notifier: Notifier) -> None:
        self.engine, self.notifier = engine, notifier
        self._seen: tuple[int, int | None] | None = None

    def __call__(self) -> None:
        if not self.notifier.claim_waiters.parked():
            self._seen = None
            return
        with read_tx(self.engine) as conn:
            now = job_store.pending_signature(conn)
        if now != self._seen:
            self.notifier.jobs_pending.fire_here()  # the others read the database too
        self._seen = now


def forget_old_idempotency_keys(engine: Engine) -> None:
    with write_tx(engine) as conn:
        limits.forget_old_responses(conn)


def _through_outages(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``fn``, saying in one line (not a traceback a second) that it could not reach the
    database: while the database restarts every periodic job fails; the next run retries."""
    @functools.wraps(fn)
    def run(*args: Any) -> Any:
        try:
            return fn(*args)
        except CONNECTION_ERRORS as e:
            log.warning("event=database_unavailable job=%s error=%s", name,
                        type(getattr(e, "orig", None) or e).__name__)
            return None
    return run


def start_scheduler(engine: Engine, settings: Settings, notifier: Notifier,
                    extra: list[tuple[Callable[[], object], float]] = ()) -> BackgroundScheduler:
    sched = BackgroundScheduler(daemon=True)
    if not settings.embedded:
        # Embedded, no other server process writes to the database (the launch lock): every
        # change to the pending jobs is made, and signalled, here.
        sched.add_job(_through_outages(PendingWatch(engine, notifier), "pending_watch"),
                      "interval", seconds=settings.resolved_recheck_seconds(),
                      id="pending_watch", max_instances=1, coalesce=True)
    sched.add_job(_through_outages(forget_old_idempotency_keys, "forget_idempotency_keys"),
                  "interval", hours=1, args=(engine,),
                  id="forget_idempotency_keys", max_instances=1, coalesce=True)
    for i, (fn, seconds) in enumerate(extra):
        sched.add_job(fn, "interval", seconds=seconds, id=f"extra_{i}", max_instances=1,
                      coalesce=True)
    sched.start()
    return sched
