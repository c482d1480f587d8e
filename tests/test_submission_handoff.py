"""A single submission (``POST /api/v1/jobs``, ``/run``: each calculation of the ASE
calculator) hands its job to the claim poll already waiting for it by a claim made inside
the submission's own transaction: one commit on the call's path instead of two, and the
poll handed the job only once it is committed (nothing, if it is not). Against a real
SQLite store, in this process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import atomiverse
import pytest
import sqlalchemy as sa
from atomiverse.levels import GFN2_XTB
from atomiverse_core.schema import JobSubmitRequest
from atomiverse_server import db
from atomiverse_server.handoff import ClaimWaiter, Handing
from atomiverse_server.notify import Notifier
from atomiverse_server.routes.jobs import submit_job
from atomiverse_server.settings import Settings
from atomiverse_server.store import controllers as controller_store
from atomiverse_server.store import jobs as job_store
from storedb import workspace_with_controller

LEASE_SECONDS = 60.0


@pytest.fixture
def store(tmp_path: Path):
    engine, ws, ctl = workspace_with_controller(tmp_path / "store.db")
    yield engine, ws, ctl
    engine.dispose()


def _request() -> JobSubmitRequest:
    job = atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles("O"),
                                       level_of_theory=GFN2_XTB, use_cache=False)
    return JobSubmitRequest(job=job.model_dump(), compute_target="poller")


def _commits(engine: sa.Engine) -> list[None]:
    seen: list[None] = []
    sa.event.listen(engine, "commit", lambda conn: seen.append(None))
    return seen


def _row(engine: sa.Engine, job_id: str):
    with db.read_tx(engine) as conn:
        return conn.execute(sa.select(db.jobs.c.state, db.jobs.c.lease_id,
                                      db.jobs.c.claimed_by)
                            .where(db.jobs.c.id == job_id)).one()


def test_a_submission_claims_for_the_waiting_poll_in_its_own_transaction(store, tmp_path):
    engine, ws, ctl = store
    settings = Settings(home=tmp_path / "home", lease_seconds=LEASE_SECONDS)
    notifier = Notifier()

    async def check() -> None:
        poll = ClaimWaiter(ctl, 4, asyncio.get_running_loop())
        notifier.claim_waiters.park(poll)
        commits = _commits(engine)
        record = await asyncio.to_thread(submit_job, _request(), ws, engine, settings,
                                         notifier)
        handed = await asyncio.wait_for(poll.handed, 10)
        assert len(commits) == 1  # the submission and the hand-off's claim: one transaction
        assert [j["job_id"] for j in handed] == [record["job_id"]]
        assert record["state"] == "pending"  # the answer as stored by the submission
        row = _row(engine, record["job_id"])
        assert (row.state, row.lease_id, row.claimed_by) == \
            ("running", handed[0]["lease_id"], ctl.id)
        assert notifier.claim_waiters.parked() == 0
    asyncio.run(check())


def test_a_poll_is_handed_nothing_when_the_submission_does_not_commit(store):
    engine, ws, ctl = store

    async def check() -> None:
        notifier = Notifier()
        poll = ClaimWaiter(ctl, 4, asyncio.get_running_loop())
        notifier.claim_waiters.park(poll)
        with pytest.raises(RuntimeError, match="after the claim"), \
                Handing(notifier.claim_waiters, LEASE_SECONDS) as handing, \
                db.write_tx(engine) as conn:
            job_store.insert_jobs(conn, [{
                "id": "j1", "workspace_id": ws.id, "name": "job-1",
                "job_type": "single_point_energy", "state": "pending", "payload": {},
                "compute_target": ctl.name, "controller_id": ctl.id, "attempts": 0,
                "walltime_seconds": 60.0, "created_at": time.time(),
                "billed_core_seconds": 0.0}])
            handing.claim(conn, frozenset({ctl.id}))
            raise RuntimeError("the submission failed after the claim")
        assert await asyncio.wait_for(poll.handed, 10) == []  # it looks for itself
        with db.read_tx(engine) as conn:  # the claim went with the rolled-back submission
            assert conn.execute(sa.select(sa.func.count()).select_from(db.jobs)).scalar() == 0
    asyncio.run(check())


def test_a_poll_not_parked_for_the_job_is_not_taken(store, tmp_path):
    engine, ws, _ = store
    settings = Settings(home=tmp_path / "home", lease_seconds=LEASE_SECONDS)
    with db.write_tx(engine) as conn:
        other, _ = controller_store.register_controller(
            conn, workspace_id=ws.id, name="other", slots=1, cores_per_job=1, capacity=100,
            engines={"xtb": "6.7.1"}, hostname="h", serves_managed=False)

    async def check() -> None:
        notifier = Notifier()
        poll = ClaimWaiter(other, 4, asyncio.get_running_loop())
        notifier.claim_waiters.park(poll)
        record = await asyncio.to_thread(submit_job, _request(), ws, engine, settings,
                                         notifier)
        assert notifier.claim_waiters.parked() == 1 and not poll.handed.done()
        assert _row(engine, record["job_id"]).state == "pending"
    asyncio.run(check())
