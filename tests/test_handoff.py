"""New work handed to a controller already waiting in a claim long-poll: the registry's
rules (who may be handed what, and a poll is never both handed jobs and told there are
none), the claim made for it against a real database, and the whole path through a real
server process."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import atomiverse
import httpx2 as httpx
import pytest
import sqlalchemy as sa
from atomiverse.levels import GFN2_XTB
from atomiverse_server import db
from atomiverse_server.handoff import ClaimWaiter, ClaimWaiters, hand_over
from atomiverse_server.store import controllers as controller_store
from atomiverse_server.store import jobs as job_store
from atomiverse_server.store import workspaces as workspace_store
from atomiverse_server.store.controllers import Controller
from conftest import metric_value, start_server, stop_process, wait_parked

LEASE_SECONDS = 60.0


def _controller(cid: str, workspace_id: str, serves_managed: bool = False) -> Controller:
    return Controller(cid, workspace_id, f"name-{cid}", 2, 1, 100, {"instant": "0"},
                      serves_managed, "online")


def _on_a_loop(check):
    async def main():
        await check(asyncio.get_running_loop())
    asyncio.run(main())


def test_a_submission_takes_the_polls_of_the_controllers_its_jobs_went_to():
    async def check(loop):
        waiters = ClaimWaiters()
        routed = ClaimWaiter(_controller("c1", "ws-a"), 8, loop)
        managed = ClaimWaiter(_controller("c2", "ws-b", serves_managed=True), 8, loop)
        other = ClaimWaiter(_controller("c3", "ws-a"), 8, loop)
        for w in (routed, managed, other):
            waiters.park(w)
        assert waiters.take(frozenset({"c1"})) == [routed]
        assert waiters.take(frozenset({"c1", None})) == [managed]  # each poll taken once
        assert waiters.leave(routed) is False  # taken: its jobs are on their way
        assert waiters.leave(other) is True  # not taken: it looks for itself
        assert waiters.take(frozenset({"c3", None})) == []  # and is no longer parked
    _on_a_loop(check)


def test_jobs_handed_from_another_thread_reach_the_waiting_poll():
    async def check(loop):
        waiter = ClaimWaiter(_controller("c1", "ws"), 8, loop)
        threading.Thread(target=waiter.hand, args=([{"job_id": "j1"}],)).start()
        assert await asyncio.wait_for(waiter.handed, 10) == [{"job_id": "j1"}]
        waiter.hand([{"job_id": "j2"}])  # a second hand-off cannot overwrite the first
        delivered = loop.create_future()  # the loop runs its callbacks in order: after j2's
        loop.call_soon_threadsafe(delivered.set_result, None)
        await delivered
        assert waiter.handed.result() == [{"job_id": "j1"}]
    _on_a_loop(check)


def _store_with_pending_jobs(path: Path, n: int) -> tuple[sa.Engine, Controller, Controller]:
    engine = db.make_engine(f"sqlite:///{path}")
    db.migrate(engine)
    with db.write_tx(engine) as conn:
        ws = workspace_store.create_workspace(conn, name="ws", balance=0.0)
        ctls = [controller_store.register_controller(
            conn, workspace_id=ws.id, name=name, slots=2, cores_per_job=1, capacity=1000,
            engines={"instant": "0"}, hostname="h", serves_managed=False)[0]
            for name in ("busy", "idle")]
        t = time.time()
        job_store.insert_jobs(conn, [
            {"id": f"j{i}", "workspace_id": ws.id, "name": f"job-{i}",
             "job_type": "single_point_energy", "state": "pending", "payload": {"i": i},
             "compute_target": ctls[0].name, "controller_id": ctls[0].id, "attempts": 0,
             "walltime_seconds": 60.0, "created_at": t, "billed_core_seconds": 0.0}
            for i in range(n)])
    return engine, ctls[0], ctls[1]


def test_hand_over_claims_for_each_poll_what_is_routed_to_it(tmp_path):
    engine, routed, unrelated = _store_with_pending_jobs(tmp_path / "store.db", 5)

    async def check(loop):
        first = ClaimWaiter(routed, 3, loop)
        second = ClaimWaiter(unrelated, 3, loop)
        assert hand_over(engine, [first, second], LEASE_SECONDS) == 3
        handed = await asyncio.wait_for(first.handed, 10)
        assert len(handed) == 3 and all(j["lease_id"] for j in handed)
        assert await asyncio.wait_for(second.handed, 10) == []  # nothing of its own
        with db.read_tx(engine) as conn:
            rows = conn.execute(sa.select(db.jobs.c.id, db.jobs.c.state, db.jobs.c.claimed_by,
                                          db.jobs.c.lease_id)).all()
        running = {r.id: r for r in rows if r.state == "running"}
        assert set(running) == {j["job_id"] for j in handed}
        assert all(r.claimed_by == routed.id for r in running.values())
        assert {r.lease_id for r in running.values()} == {j["lease_id"] for j in handed}
    _on_a_loop(check)
    engine.dispose()


def test_a_failed_hand_over_hands_nothing_and_does_not_raise(tmp_path, caplog):
    broken = db.make_engine(f"sqlite:///{tmp_path / 'no-tables.db'}")  # never migrated

    async def check(loop):
        waiter = ClaimWaiter(_controller("c1", "ws"), 4, loop)
        assert hand_over(broken, [waiter], LEASE_SECONDS) == 0
        assert await asyncio.wait_for(waiter.handed, 10) == []  # the poll looks for itself
    _on_a_loop(check)
    assert "event=handoff_failed" in caplog.text
    broken.dispose()


# ----- through a real server ------------------------------------------------------------------
@pytest.fixture
def managed_server(tmp_path):
    srv = start_server(tmp_path / "srv", env_extra={"ATOMIVERSE_MANAGED_ENABLED": "true"})
    key = srv.new_workspace("handoff")
    srv.admin("register-managed-controller", "poller", "--token-file",
              str(srv.home / "poller.token"))
    token = (srv.home / "poller.token").read_text().strip()
    yield srv, key, token
    stop_process(srv.proc)


def _handed_off_total(url: str) -> float:
    value = metric_value(f"{url}/metrics", "atomiverse_jobs_handed_off_total")
    assert value is not None, "atomiverse_jobs_handed_off_total is not exported"
    return value


def test_a_submission_hands_its_jobs_to_the_waiting_claim_poll(managed_server):
    srv, key, token = managed_server
    job = atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles("O"),
                                       level_of_theory=GFN2_XTB, use_cache=False).model_dump()
    answers: list[dict] = []
    # A poll re-checks the database once a second and is not parked for those few
    # milliseconds; of three submissions made while it waits, one lands in such a gap at
    # worst.
    for attempt in range(3):
        poll = threading.Thread(target=lambda: answers.append(httpx.post(
            f"{srv.url}/api/v1/controllers/claim", headers={"Authorization": f"Bearer {token}"},
            json={"max_jobs": 10, "wait_seconds": 30}, timeout=60).json()))
        poll.start()
        wait_parked(srv.url, "atomiverse_parked_claims")  # its first look found nothing
        r = httpx.post(f"{srv.url}/api/v1/jobs/submit-batch",
                       headers={"Authorization": f"Bearer {key}"},
                       json={"jobs": [{"job": job, "compute_target": "managed"}] * 2})
        assert r.status_code == 200 and r.json()["submitted"] == 2, r.text
        poll.join(30)
        assert not poll.is_alive()
        submitted = {e["job_id"] for e in r.json()["jobs"]}
        assert {j["job_id"] for j in answers[-1]["jobs"]} == submitted
        if _handed_off_total(srv.url) > 0:
            break
    assert _handed_off_total(srv.url) == 2.0  # the jobs of one submission, claimed by it


def test_handing_to_a_poll_whose_server_loop_has_closed_is_harmless():
    loop = asyncio.new_event_loop()
    waiter = ClaimWaiter(_controller("c1", "ws"), 4, loop)
    loop.close()
    waiter.hand([{"job_id": "j1"}])  # the server is stopping: nobody is left to answer
