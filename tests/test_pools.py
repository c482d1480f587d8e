"""Controller pools on the server (issue 29): a member joins a pool of its own workspace,
claims the jobs routed to the pool, never more at once than its free slots; the pool's token
reads pending work and members; a deregistered member's parked poll takes nothing. Raw HTTP
against a real server process of the module's own."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from conftest import Server, start_server, stop_process, wait_parked


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("pools"))
    yield server
    stop_process(server.proc)


def register(srv: Server, credential: str, name: str, slots: int,
             pool: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"name": name, "slots": slots, "engines": {}}
    if pool is not None:
        body["pool"] = pool
    return httpx.post(f"{srv.url}/api/v1/controllers/register", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {credential}"})


def token(srv: Server, key: str, name: str, slots: int, pool: str | None = None) -> str:
    r = register(srv, key, name, slots, pool)
    assert r.status_code == 200, r.text
    return r.json()["token"]


def submit(srv: Server, key: str, target: str, n: int) -> list[str]:
    r = httpx.post(f"{srv.url}/api/v1/jobs/submit-batch", timeout=30,
                   headers={"Authorization": f"Bearer {key}"}, json={"jobs": [
                       {"compute_target": target, "job": {
                           "job_type": "single_point_energy", "use_cache": False,
                           "atoms": {"numbers": [1, 1],
                                     "positions": [[0, 0, 0], [0, 0, 0.74 + 0.001 * i]]},
                           "level_of_theory": {"method": "gfn2-xtb"}}} for i in range(n)]})
    assert r.status_code == 200 and r.json()["failed"] == 0, r.text
    return [j["job_id"] for j in r.json()["jobs"]]


def claim(srv: Server, tok: str, max_jobs: int, wait: float = 0) -> list[dict[str, Any]]:
    r = httpx.post(f"{srv.url}/api/v1/controllers/claim", timeout=wait + 30,
                   headers={"Authorization": f"Bearer {tok}"},
                   json={"max_jobs": max_jobs, "wait_seconds": wait})
    assert r.status_code == 200, r.text
    return r.json()["jobs"]


def pool_state(srv: Server, tok: str) -> dict[str, Any]:
    r = httpx.get(f"{srv.url}/api/v1/controllers/pool", timeout=30,
                  headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_member_claims_the_pools_jobs_never_more_than_its_free_slots(srv: Server) -> None:
    key = srv.new_workspace("pools-claim")
    pool = token(srv, key, "gpu", slots=4)
    member = token(srv, key, "gpu.1", slots=2, pool="gpu")
    outsider = token(srv, key, "desk", slots=8)
    submit(srv, key, "gpu", 5)

    assert claim(srv, outsider, 50) == []  # routed to the pool, not to any controller
    first = claim(srv, member, 50)
    assert len(first) == 2  # asked for 50: the server gives its 2 free slots
    assert claim(srv, member, 50) == []  # no free slot until one is reported or released
    state = pool_state(srv, pool)
    assert state["pending"] == 3
    assert [(m["name"], m["slots"], m["running"]) for m in state["members"]] == \
        [("gpu.1", 2, 2)]

    r = httpx.post(f"{srv.url}/api/v1/controllers/release", timeout=30,
                   headers={"Authorization": f"Bearer {member}"},
                   json=[{"job_id": first[0]["job_id"], "lease_id": first[0]["lease_id"]}])
    assert r.json() == {"released": 1}
    assert len(claim(srv, member, 50)) == 1
    assert pool_state(srv, pool)["pending"] == 3


def test_joining_a_pool_is_checked_and_named(srv: Server) -> None:
    key = srv.new_workspace("pools-join")
    other_key = srv.new_workspace("pools-other")
    token(srv, key, "hpc", slots=4)
    token(srv, key, "hpc.1", slots=1, pool="hpc")

    cases = [(key, "x.1", "nosuch", "pool: no controller named 'nosuch' in this workspace"),
             (key, "hpc", "hpc", "pool: a controller cannot be a member of its own pool"),
             (key, "x.2", "hpc.1", "pool: 'hpc.1' is itself a member of a pool"),
             (other_key, "y.1", "hpc", "pool: no controller named 'hpc' in this workspace")]
    for credential, name, pool, message in cases:
        r = register(srv, credential, name, 1, pool)
        assert r.status_code == 422 and message in r.text, (name, pool, r.text)


def test_a_deregistered_members_parked_poll_takes_nothing(srv: Server) -> None:
    key = srv.new_workspace("pools-exit")
    pool = token(srv, key, "batch", slots=4)
    member = token(srv, key, "batch.7", slots=1, pool="batch")
    assert [m["name"] for m in pool_state(srv, pool)["members"]] == ["batch.7"]
    answer: list[list[dict[str, Any]]] = []
    poll = threading.Thread(target=lambda: answer.append(claim(srv, member, 1, wait=20)))
    poll.start()
    wait_parked(srv.url, "atomiverse_parked_claims")
    r = httpx.post(f"{srv.url}/api/v1/controllers/deregister", timeout=30,
                   headers={"Authorization": f"Bearer {member}"})
    assert r.status_code == 200
    assert pool_state(srv, pool)["members"] == []  # gone: listed no more
    job_id = submit(srv, key, "batch", 1)[0]
    poll.join(30)
    assert answer == [[]]  # the exiting process is handed nothing to lose
    job = httpx.get(f"{srv.url}/api/v1/jobs/{job_id}", timeout=30,
                    headers={"Authorization": f"Bearer {key}"}).json()
    assert job["state"] == "pending"


def test_the_pool_endpoint_needs_a_controller_token(srv: Server, tmp_path: Path) -> None:
    key = srv.new_workspace("pools-auth")
    r = httpx.get(f"{srv.url}/api/v1/controllers/pool", timeout=30,
                  headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 401


def test_a_submission_to_a_pool_is_handed_to_its_members_parked_polls_only() -> None:
    import asyncio

    from atomiverse_server.handoff import ClaimWaiter, ClaimWaiters
    from atomiverse_server.store.controllers import Controller

    def ctl(cid: str, pool_id: str | None = None, managed: bool = False) -> Controller:
        return Controller(cid, "ws", f"n-{cid}", 1, 1, 100, {}, managed, "online", pool_id)

    async def check() -> None:
        loop = asyncio.get_running_loop()
        member = ClaimWaiter(ctl("m1", pool_id="p1"), 1, loop)
        plain = ClaimWaiter(ctl("c2"), 1, loop)
        managed = ClaimWaiter(ctl("c3", managed=True), 1, loop)
        waiters = ClaimWaiters()
        for w in (member, plain, managed):
            waiters.park(w)
        assert waiters.take(frozenset({None})) == [managed]  # no pool is the managed pool
        assert waiters.take(frozenset({"p1"})) == [member]
        assert waiters.take(frozenset({"p1", "m1", None})) == []

    asyncio.run(check())


def test_a_slot_freed_between_a_polls_look_and_its_park_is_not_missed() -> None:
    """The report that frees the slot may commit after the poll's look found none free and
    before it parks: the wake finds nothing parked, so the park must notice it instead."""
    import asyncio

    from atomiverse_server.handoff import ClaimWaiter, ClaimWaiters
    from atomiverse_server.store.controllers import Controller

    async def check() -> None:
        loop = asyncio.get_running_loop()
        member = Controller("m1", "ws", "n-m1", 1, 1, 100, {}, False, "online", "p1")
        waiters = ClaimWaiters()
        seen = waiters.freed("m1")  # before the look
        waiters.wake("m1")  # the report commits: nobody is parked yet
        late = ClaimWaiter(member, 1, loop)
        assert not waiters.park(late, seen) and waiters.parked() == 0
        poll = ClaimWaiter(member, 1, loop)
        assert waiters.park(poll, waiters.freed("m1"))
        waiters.wake("m1")  # the next report: the parked poll looks again
        assert await asyncio.wait_for(poll.handed, 5) == [] and waiters.parked() == 0

    asyncio.run(check())


def test_a_members_parked_poll_is_handed_the_pools_new_jobs(srv: Server) -> None:
    key = srv.new_workspace("pools-handoff")
    token(srv, key, "farm", slots=2)
    member = token(srv, key, "farm.3", slots=1, pool="farm")
    answer: list[list[dict[str, Any]]] = []
    poll = threading.Thread(target=lambda: answer.append(claim(srv, member, 1, wait=20)))
    poll.start()
    wait_parked(srv.url, "atomiverse_parked_claims")
    job_id = submit(srv, key, "farm", 1)[0]
    poll.join(30)
    assert [j["job_id"] for j in answer[0]] == [job_id]


@pytest.fixture
def quiet_srv(tmp_path: Path) -> Iterator[Server]:
    """A server whose periodic look for other processes' work (``recheck_seconds``) does not
    come during a test: only the signals of its own requests wake a parked poll."""
    server = start_server(tmp_path, env_extra={"ATOMIVERSE_RECHECK_SECONDS": "600"})
    yield server
    stop_process(server.proc)


def test_a_members_poll_parked_on_a_busy_slot_claims_when_the_slot_is_reported_free(
        quiet_srv: Server) -> None:
    """The member's claim for its next job comes before the report of the last one (its
    claimer and reporter are separate threads): the server has no free slot for it and parks
    it. The report must wake it; nothing else would until the poll ran out (``wait``), and a
    one-slot member of a SLURM pool sat idle between jobs."""
    srv = quiet_srv
    key = srv.new_workspace("pools-freed")
    token(srv, key, "mill", slots=2)
    member = token(srv, key, "mill.1", slots=1, pool="mill")
    first_id, second_id = submit(srv, key, "mill", 2)
    (held,) = claim(srv, member, 1)
    answer: list[list[dict[str, Any]]] = []
    # Parked for up to 60 s; the poll's own last look at its end would find the slot free.
    poll = threading.Thread(target=lambda: answer.append(claim(srv, member, 1, wait=60)),
                            daemon=True)
    poll.start()
    wait_parked(srv.url, "atomiverse_parked_claims")
    r = httpx.post(f"{srv.url}/api/v1/controllers/complete", timeout=30,
                   headers={"Authorization": f"Bearer {member}"}, json={"reports": [
                       {"job_id": held["job_id"], "lease_id": held["lease_id"], "ok": True,
                        "result": {"energy_hartree": -1.0}}]})
    assert r.status_code == 200 and r.json()["accepted"] == [first_id], r.text
    poll.join(40)  # the report wakes it at once; without, it stayed parked to its end
    assert not poll.is_alive(), "the report of its only job did not wake the member's poll"
    assert [j["job_id"] for j in answer[0]] == [second_id]
