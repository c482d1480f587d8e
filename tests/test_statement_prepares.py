"""A calculation's statements are prepared once per connection, not on every run.

SQLite decides whether a partial index (``ix_jobs_pending``: state = 'pending') can serve a
query from the *bound value* of ``jobs.state = ?``, so it prepared such a statement again on
every run, cached or not: the claim query cost about 230 us a run, of which about 210 were
that preparation (issue 28: a claim, the hand-off's lease and a report's checks, on every
calculation of the ASE calculator). The states are now written into those statements.

SQLite calls a connection's authorizer while it prepares a statement and never while it runs
one: counting its calls over repeated claims and reports counts the preparations. Against a
real SQLite store, in this process."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from atomiverse_server import db
from atomiverse_server.store import controllers as controller_store
from atomiverse_server.store import jobs as job_store
from storedb import workspace_with_controller

ROUNDS = 6


@pytest.fixture(params=[False, True], ids=["own-jobs", "serves-managed"])
def store(tmp_path: Path, request: pytest.FixtureRequest):
    engine, ws, ctl = workspace_with_controller(tmp_path / "store.db", name="local",
                                                serves_managed=request.param)
    engine.dispose()  # the connections made from here on carry the counting authorizer
    prepares = _count_prepares(engine)
    yield engine, ws, ctl, prepares
    engine.dispose()


def _count_prepares(engine: sa.Engine) -> list[int]:
    """A one-item list: how many authorizer calls (made only while preparing) so far. Set on
    each new connection: setting an authorizer expires that connection's statements."""
    count = [0]

    def authorize(action: int, *_: object) -> int:
        # Python's sqlite3 prepares its own BEGIN and COMMIT each time: not ours to count.
        if action != sqlite3.SQLITE_TRANSACTION:
            count[0] += 1
        return sqlite3.SQLITE_OK

    sa.event.listen(engine, "connect",
                    lambda dbapi_conn, _record: dbapi_conn.set_authorizer(authorize))
    return count


def _one_calculation(engine: sa.Engine, ws, ctl, n: int) -> None:
    """What the server stores for one calculation: the job, its claim, its report."""
    with db.write_tx(engine) as conn:
        job_store.insert_jobs(conn, [{
            "id": f"job{n}", "workspace_id": ws.id, "name": f"job-{n}",
            "job_type": "single_point_energy", "state": "pending", "payload": {},
            "compute_target": ctl.name, "controller_id": ctl.id, "attempts": 0,
            "walltime_seconds": 60.0, "created_at": time.time(), "billed_core_seconds": 0.0}])
        claimed = controller_store.claim_jobs(conn, controller=ctl, max_jobs=1,
                                              lease_seconds=60.0)
    assert [c["job_id"] for c in claimed] == [f"job{n}"]
    with db.write_tx(engine) as conn:
        out = controller_store.complete_jobs(
            conn, controller=ctl, reports=[{
                "job_id": f"job{n}", "lease_id": claimed[0]["lease_id"], "ok": True,
                "result": {"energy_hartree": -5.0, "gradient_hartree_per_bohr": [],
                           "engine": "none", "engine_version": "0",
                           "wall_time_seconds": 0.1, "core_seconds": 0.1}}],
            max_attempts=3, managed_rate_per_core_hour=0.0)
    assert out["accepted"] == [f"job{n}"], out


def test_a_calculations_statements_are_not_prepared_again_on_every_run(store):
    engine, ws, ctl, prepares = store
    _one_calculation(engine, ws, ctl, 0)  # each statement prepared once, here
    _one_calculation(engine, ws, ctl, 1)  # and on the pool's second connection, if any
    before = prepares[0]
    assert before > 0  # the authorizer does see preparations
    for n in range(2, 2 + ROUNDS):
        _one_calculation(engine, ws, ctl, n)
    assert prepares[0] == before, f"{prepares[0] - before} authorizer calls in {ROUNDS} rounds"
