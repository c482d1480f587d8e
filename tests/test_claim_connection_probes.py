"""A claim poll and ``/run``'s wait look at their client's connection only when it matters.

Starlette's ``Request.is_disconnected`` enters and cancels an anyio cancel scope, which
formats the whole task's repr each time. A calculation of the ASE calculator paid it on the
controller's claim poll before it parked (the park itself watches the connection) and on
``/run``'s wait after its job had finished (the answer was due anyway). Neither asks now; a
poll whose client goes away while parked still ends at once, without parking again.
Against a real SQLite store and the routes' own functions, in this process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import atomiverse
import pytest
from atomiverse.levels import GFN2_XTB
from atomiverse_core import jsonio
from atomiverse_core.schema import ClaimRequest, CompleteRequest, JobSubmitRequest
from atomiverse_server.notify import Notifier
from atomiverse_server.routes import controllers as claim_route
from atomiverse_server.routes import run as run_route
from atomiverse_server.routes.jobs import submit_job
from atomiverse_server.settings import Settings
from storedb import workspace_with_controller
from starlette.requests import Request

WAIT_SECONDS = 30.0  # a poll that parked again would end only after this


@pytest.fixture
def store(tmp_path: Path):
    engine, ws, ctl = workspace_with_controller(tmp_path / "store.db")
    yield engine, ws, ctl, Settings(home=tmp_path / "home")
    engine.dispose()


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """One item per ``Request.is_disconnected`` call."""
    calls: list[None] = []
    original = Request.is_disconnected

    async def counted(self: Request) -> bool:
        calls.append(None)
        return await original(self)

    monkeypatch.setattr(Request, "is_disconnected", counted)
    return calls


class Client:
    """An ASGI request's ``receive``: the body was read; then silence until ``leave``."""

    def __init__(self) -> None:
        self._gone = asyncio.Event()

    def leave(self) -> None:
        self._gone.set()

    async def receive(self) -> dict:
        await self._gone.wait()
        return {"type": "http.disconnect"}

    def request(self) -> Request:
        return Request({"type": "http", "method": "POST", "path": "/", "headers": [],
                        "query_string": b""}, self.receive)


def _job_request() -> JobSubmitRequest:
    job = atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles("O"),
                                       level_of_theory=GFN2_XTB, use_cache=False)
    return JobSubmitRequest(job=job.model_dump(), compute_target="poller")


async def _submit(engine, ws, settings, notifier) -> dict:  # type: ignore[no-untyped-def]
    return await asyncio.to_thread(submit_job, _job_request(), ws, engine, settings, notifier)


async def _parked(notifier: Notifier, count: int = 1) -> None:
    while notifier.claim_waiters.parked() < count:
        await asyncio.sleep(0.005)


def test_a_claim_poll_handed_a_job_does_not_probe_its_connection(store, probes):
    engine, ws, ctl, settings = store
    notifier = Notifier()

    async def check() -> None:
        notifier.bind(asyncio.get_running_loop())
        poll = asyncio.ensure_future(claim_route.answer_claim(
            ClaimRequest(max_jobs=1, wait_seconds=WAIT_SECONDS), ctl, engine, settings,
            notifier, Client().request()))
        await asyncio.wait_for(_parked(notifier), 10)
        record = await _submit(engine, ws, settings, notifier)
        answer = jsonio.loads((await asyncio.wait_for(poll, 10)).body)
        assert [j["job_id"] for j in answer["jobs"]] == [record["job_id"]]
    asyncio.run(check())
    assert probes == []  # old code: one, before the poll parked


def test_a_claim_poll_whose_client_leaves_ends_without_parking_again(store, probes):
    engine, _, ctl, settings = store
    notifier = Notifier()

    async def check() -> None:
        notifier.bind(asyncio.get_running_loop())
        client = Client()
        poll = asyncio.ensure_future(claim_route.answer_claim(
            ClaimRequest(max_jobs=1, wait_seconds=WAIT_SECONDS), ctl, engine, settings,
            notifier, client.request()))
        await asyncio.wait_for(_parked(notifier), 10)
        client.leave()
        answer = await asyncio.wait_for(poll, WAIT_SECONDS / 3)  # not the poll's end
        assert jsonio.loads(answer.body) == {"jobs": []}
        assert notifier.claim_waiters.parked() == 0
    asyncio.run(check())


def test_run_answers_a_finished_job_without_probing_the_connection_again(store, probes):
    """``/run``'s wait: one look at the connection before it waits (none after the job has
    finished; old code: two)."""
    engine, ws, ctl, settings = store
    notifier = Notifier()

    async def check() -> None:
        notifier.bind(asyncio.get_running_loop())  # finishes wake the wait, as in the app
        poll = asyncio.ensure_future(claim_route.answer_claim(
            ClaimRequest(max_jobs=1, wait_seconds=WAIT_SECONDS), ctl, engine, settings,
            notifier, Client().request()))
        await asyncio.wait_for(_parked(notifier), 10)
        run = asyncio.ensure_future(run_route.submit_and_wait(
            _job_request(), ws, engine, settings, notifier, Client().request(), 20.0, None))
        claimed = jsonio.loads((await asyncio.wait_for(poll, 10)).body)["jobs"]
        report = {"job_id": claimed[0]["job_id"], "lease_id": claimed[0]["lease_id"],
                  "ok": True, "result": {
                      "energy_hartree": -5.0, "gradient_hartree_per_bohr": [],
                      "engine": "none", "engine_version": "0", "wall_time_seconds": 0.1,
                      "core_seconds": 0.1}}
        await asyncio.to_thread(claim_route.record_reports, CompleteRequest(reports=[report]),
                                ctl, engine, settings, notifier)
        record = jsonio.loads((await asyncio.wait_for(run, 10)).body)
        assert record["state"] in ("done", "failed")
    asyncio.run(check())
    assert len(probes) == 1
