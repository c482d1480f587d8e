"""A single submission (``POST /api/v1/jobs``, ``/run``: each calculation of the ASE
calculator) answers with the record of the row it has just stored, built from that row, not
read back from the database: one statement less, and the payload's JSON not decoded again,
on every calculation. The record must be the one ``get_job`` reads, field for field: a new
job, a cache hit, a job following an identical one in flight. Against a real SQLite store,
in this process."""

from __future__ import annotations

from pathlib import Path

import atomiverse
import pytest
import sqlalchemy as sa
from atomiverse.levels import GFN2_XTB
from atomiverse_core.schema import JobSubmitRequest
from atomiverse_server import db
from atomiverse_server.notify import Notifier
from atomiverse_server.routes.jobs import submit_job
from atomiverse_server.settings import Settings
from atomiverse_server.store import controllers as controller_store
from atomiverse_server.store import jobs as job_store
from storedb import workspace_with_controller


@pytest.fixture
def store(tmp_path: Path):
    engine, ws, ctl = workspace_with_controller(tmp_path / "store.db")
    yield engine, ws, ctl, Settings(home=tmp_path / "home")
    engine.dispose()


def _request(smiles: str, use_cache: bool = True) -> JobSubmitRequest:
    job = atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles(smiles),
                                       level_of_theory=GFN2_XTB, use_cache=use_cache)
    return JobSubmitRequest(job=job.model_dump(), compute_target="poller")


def _as_read(engine: sa.Engine, ws, record: dict) -> dict:  # type: ignore[no-untyped-def]
    with db.read_tx(engine) as conn:
        return job_store.get_job(conn, workspace_id=ws.id, job_id=record["job_id"])


def _finish(engine: sa.Engine, ctl, job_id: str) -> None:  # type: ignore[no-untyped-def]
    with db.write_tx(engine) as conn:
        (claimed,) = controller_store.claim_jobs(conn, controller=ctl, max_jobs=1,
                                                 lease_seconds=60.0)
        assert claimed["job_id"] == job_id
        out = controller_store.complete_jobs(conn, controller=ctl, reports=[{
            "job_id": job_id, "lease_id": claimed["lease_id"], "ok": True,
            "result": {"energy_hartree": -5.07, "gradient_hartree_per_bohr": [[0.0] * 3] * 3,
                       "engine": "xtb", "engine_version": "6.7.1",
                       "wall_time_seconds": 0.1, "core_seconds": 0.1}}],
            max_attempts=3, managed_rate_per_core_hour=0.0)
    assert out["accepted"] == [job_id], out


def test_the_records_of_new_followed_and_cached_jobs_are_those_stored(store):
    engine, ws, ctl, settings = store
    notifier = Notifier()
    submit = lambda smiles: submit_job(_request(smiles), ws, engine, settings,  # noqa: E731
                                       notifier)
    new = submit("O")
    assert (new["state"], new["controller"], new["cached_from"]) == ("pending", "poller", None)
    assert new == _as_read(engine, ws, new)
    follower = submit("O")  # the same calculation while the first is in flight
    assert follower["cached_from"] == new["job_id"]
    assert follower == _as_read(engine, ws, follower)
    _finish(engine, ctl, new["job_id"])
    hit = submit("O")
    assert (hit["state"], hit["cached_from"]) == ("done", new["job_id"])
    assert hit["result"] == _as_read(engine, ws, new)["result"]
    assert hit == _as_read(engine, ws, hit)


def test_a_submission_does_not_read_back_the_job_it_stored(store):
    engine, ws, _, settings = store
    selects: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(" ".join(statement.split()))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        record_ = submit_job(_request("CCO", use_cache=False), ws, engine, settings, Notifier())
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert record_["state"] == "pending"
    read_back = [s for s in selects if "LEFT OUTER JOIN controllers" in s]
    assert read_back == [], read_back
