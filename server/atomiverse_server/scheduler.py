"""Periodic server work on APScheduler: take back expired leases, keep the local
controller alive."""

from __future__ import annotations

import logging
from collections.abc import Callable

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.engine import Engine

from .db import write_tx
from .notify import Notifier
from .settings import Settings
from .store import controllers as controller_store

log = logging.getLogger("atomiverse.server.scheduler")


def sweep_leases(engine: Engine, settings: Settings, notifier: Notifier) -> int:
    with write_tx(engine) as conn:
        n = controller_store.sweep_expired_leases(conn, max_attempts=settings.max_attempts)
    if n:
        log.info("event=lease_expired jobs=%d", n)
        notifier.jobs_pending.fire()
        notifier.jobs_finished.fire()
    return n


def start_scheduler(engine: Engine, settings: Settings, notifier: Notifier,
                    extra: list[tuple[Callable[[], object], float]] = ()) -> BackgroundScheduler:
    sched = BackgroundScheduler(daemon=True)
    sched.add_job(sweep_leases, "interval", seconds=settings.sweep_seconds,
                  args=(engine, settings, notifier), id="sweep_leases", max_instances=1,
                  coalesce=True)
    for i, (fn, seconds) in enumerate(extra):
        sched.add_job(fn, "interval", seconds=seconds, id=f"extra_{i}", max_instances=1,
                      coalesce=True)
    sched.start()
    return sched
