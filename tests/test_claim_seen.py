"""A claim records that its controller was seen, at most once a second per controller: the
write was one statement in ten of every calculation, and what reads it (offline controllers,
a pool's members, metrics) works in heartbeats of many seconds. A real SQLite store, in this
process."""

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
from storedb import workspace_with_controller


@pytest.fixture
def store(tmp_path: Path):
    engine, ws, ctl = workspace_with_controller(tmp_path / "store.db")
    yield engine, ws, ctl, Settings(home=tmp_path / "home")
    engine.dispose()


def _last_seen(engine, ctl) -> float:  # type: ignore[no-untyped-def]
    with db.read_tx(engine) as conn:
        return conn.execute(sa.select(db.controllers.c.last_seen_at)
                            .where(db.controllers.c.id == ctl.id)).scalar_one()


def test_claims_within_a_second_write_the_controllers_last_seen_once(store, monkeypatch):
    engine, ws, ctl, settings = store
    for smiles in ("O", "CO", "CCO", "CCCO"):
        job = atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles(smiles),
                                           level_of_theory=GFN2_XTB)
        submit_job(JobSubmitRequest(job=job.model_dump(), compute_target="poller"), ws,
                   engine, settings, Notifier())
    clock = [1_000_000.0]
    monkeypatch.setattr(controller_store, "now", lambda: clock[0])
    monkeypatch.setattr(controller_store, "_seen_written", {})
    writes: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("UPDATE CONTROLLERS"):
            writes.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        for step in (0.0, 0.4, 0.5, 0.2):  # at 0, 0.4, 0.9 and 1.1 s
            clock[0] += step
            with db.write_tx(engine) as conn:
                (claimed,) = controller_store.claim_jobs(conn, controller=ctl, max_jobs=1,
                                                         lease_seconds=60.0)
            assert claimed["job_id"]
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert len(writes) == 2, writes  # at 0 s and at 1.1 s
    assert _last_seen(engine, ctl) == clock[0]
