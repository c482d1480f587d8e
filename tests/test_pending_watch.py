"""The pending watch (a claim poll parked on one server process learns of work another process
queued) counts the pending jobs, a query whose cost grows with the queue. It runs only while a
poll is parked, and never misses a change made while none was: its first look then wakes the
polls at once. In-process, on a real migrated SQLite database."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from atomiverse_server.db import write_tx
from atomiverse_server.handoff import ClaimWaiter
from atomiverse_server.notify import Notifier
from atomiverse_server.scheduler import PendingWatch
from atomiverse_server.store import jobs as job_store
from storedb import workspace_with_controller


@pytest.fixture
def setup(tmp_path):
    engine, ws, ctl = workspace_with_controller(tmp_path / "watch.db")
    loop = asyncio.new_event_loop()
    notifier = Notifier()
    notifier.bind(loop)
    yield engine, ws, ctl, loop, notifier
    loop.close()
    engine.dispose()


def _queue(engine, ws, ctl, job_id: str) -> None:
    with write_tx(engine) as conn:
        job_store.insert_jobs(conn, [{
            "id": job_id, "workspace_id": ws.id, "name": job_id,
            "job_type": "single_point_energy", "state": "pending", "payload": {},
            "compute_target": ctl.name, "controller_id": ctl.id, "attempts": 0,
            "walltime_seconds": 60.0, "created_at": 1.0e9, "billed_core_seconds": 0.0}])


def _look(watch, engine, loop, notifier) -> tuple[bool, int]:
    """One pass of the watch: whether it woke the parked polls, and the queries it sent."""
    sent: list[str] = []
    event = notifier.jobs_pending.snapshot()
    listener = lambda *args: sent.append(args[2])  # noqa: E731
    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        watch()
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)
    loop.run_until_complete(asyncio.sleep(0))  # let a fire from this thread land
    return event.is_set(), len([s for s in sent if "jobs" in s])


def test_the_watch_reads_nothing_while_no_poll_is_parked_and_misses_nothing(setup):
    engine, ws, ctl, loop, notifier = setup
    watch = PendingWatch(engine, notifier)
    _queue(engine, ws, ctl, "before")
    assert _look(watch, engine, loop, notifier) == (False, 0)  # nobody to wake: no query

    poll = ClaimWaiter(ctl, 8, loop)
    notifier.claim_waiters.park(poll)
    _queue(engine, ws, ctl, "while-parking")  # queued by "another process": no signal here
    # The first look since a poll parked cannot tell this change from the state before it.
    assert _look(watch, engine, loop, notifier) == (True, 1)
    assert _look(watch, engine, loop, notifier) == (False, 1)  # nothing changed since
    _queue(engine, ws, ctl, "later")
    assert _look(watch, engine, loop, notifier) == (True, 1)

    assert notifier.claim_waiters.leave(poll)
    assert _look(watch, engine, loop, notifier) == (False, 0)
