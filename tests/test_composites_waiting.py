"""Composites sent to a target that has no engines yet (the embedded local controller before
it registers, a managed pool with no controller online) wait for them without costing the
composite pass: each is looked at once, then left out of later passes until a controller
registers, so that waiting ones neither cost every pass a look apiece nor keep others out of
a pass's bounded list. A real SQLite store, in this process."""

from __future__ import annotations

from pathlib import Path

import atomiverse
import pytest
from atomiverse.levels import GFN2_XTB
from atomiverse_core.schema import JobSubmitRequest
from atomiverse_server import db, workflows
from atomiverse_server.notify import Notifier
from atomiverse_server.routes.jobs import submit_job
from atomiverse_server.settings import Settings
from atomiverse_server.store import composites
from atomiverse_server.store import controllers as controller_store
from storedb import workspace_with_controller


def _register_late(engine, ws, engines):  # type: ignore[no-untyped-def]
    with db.write_tx(engine) as conn:
        controller_store.register_controller(
            conn, workspace_id=ws.id, name="late", slots=1, cores_per_job=1, capacity=100,
            engines=engines, hostname="h", serves_managed=False)


@pytest.fixture
def store(tmp_path: Path):
    engine, ws, _ = workspace_with_controller(tmp_path / "store.db")
    _register_late(engine, ws, {})
    yield engine, ws, Settings(home=tmp_path / "home", embedded=True)
    engine.dispose()


def _search(smiles: str) -> JobSubmitRequest:
    search = atomiverse.ConformerSearch(atoms=atomiverse.Atoms.from_smiles(smiles),
                                        level_of_theory=GFN2_XTB, n_candidates=4)
    return JobSubmitRequest(job=search.model_dump(mode="json"), compute_target="late")


def _children(engine, job_id):  # type: ignore[no-untyped-def]
    with db.read_tx(engine) as conn:
        return composites.children(conn, job_id)


def test_searches_waiting_for_engines_are_looked_at_once_each_until_a_controller_registers(
        store, monkeypatch):
    engine, ws, settings = store
    notifier = Notifier()
    advancer = workflows.Advancer(engine, settings, notifier)
    first, second = (submit_job(_search(s), ws, engine, settings, notifier)["job_id"]
                     for s in ("CCCC", "CCCO"))
    assert _children(engine, first) == _children(engine, second) == []
    looked: list[str] = []
    advance = workflows.advance
    monkeypatch.setattr(workflows, "advance", lambda conn, parent_id, *rest: (
        looked.append(parent_id), advance(conn, parent_id, *rest))[1])
    monkeypatch.setattr(composites, "_MAX_PARENTS_PER_PASS", 1)  # a pass's bound, made small
    for _ in range(3):
        assert advancer.run_once() == 0  # nothing moves: both wait
    assert looked == [first, second]  # the first waiting keeps the second out of no pass
    assert advancer.waiting_for_engines == {first, second}

    _register_late(engine, ws, {"xtb": "6.7.1"})
    notifier.controller_registered()
    assert advancer.run_once() == 1 and advancer.run_once() == 1
    assert looked == [first, second, first, second]
    assert _children(engine, first) and _children(engine, second)
    assert advancer.waiting_for_engines == set()
