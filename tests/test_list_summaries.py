"""List pages answered from the remembered unchanging half of each summary (issue 22).

A page read again answers exactly what the routes' own read answers after any change a job
can go through (a rename, a state change, billing, deletion), on both databases; a job number
(``seq``) that comes back for another job is never answered with the old job's half; and the
memory is bounded."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from atomiverse import Atoms, SinglePointEnergy
from atomiverse.levels import GFN2_XTB
from atomiverse_core import jsonio
from atomiverse_server import db
from atomiverse_server.store import jobs as job_store
from atomiverse_server.store.hotreads import hot_reads
from atomiverse_server.store import workspaces as workspace_store
from atomiverse_server.store.summaries import Summaries
from pg import db_url, pg_cluster  # noqa: F401  (fixtures)


def _row(ws_id: str, i: int, smiles: str = "CCO", **extra: Any) -> dict[str, Any]:
    job = SinglePointEnergy(atoms=Atoms.from_smiles(smiles), level_of_theory=GFN2_XTB)
    return dict(id=f"job-{i}-{smiles}", workspace_id=ws_id, name=f"n{i}", state="pending",
                job_type="single_point_energy", payload=job.model_dump(mode="json"),
                preview=job.atoms.preview(), compute_target="local", attempts=0,
                walltime_seconds=60.0, billed_core_seconds=0.0, created_at=1000.0 + i,
                **extra)


def _pages(engine: sa.Engine, ws_id: str, **params: Any) -> tuple[Any, Any]:
    """(the fast read, the routes' read) of one page, as JSON a client receives."""
    fast = hot_reads(engine).list_jobs(workspace_id=ws_id, **params)
    with db.read_tx(engine) as conn:
        slow = job_store.list_jobs(conn, workspace_id=ws_id, **params)
    return jsonio.loads(jsonio.dumps(fast)), jsonio.loads(jsonio.dumps(slow))


@pytest.fixture
def filled(db_url):  # noqa: F811
    engine = db.make_engine(db_url)
    db.migrate(engine)
    with db.write_tx(engine) as conn:
        ws = workspace_store.create_workspace(conn, name="summaries")
        conn.execute(db.jobs.insert(), [_row(ws.id, i) for i in range(6)])
    yield engine, ws.id
    engine.dispose()


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_a_page_read_again_follows_every_change(filled):
    engine, ws_id = filled
    first, _ = _pages(engine, ws_id, limit=4)  # remembers the page's jobs
    with db.write_tx(engine) as conn:
        job_store.rename_job(conn, workspace_id=ws_id, job_id="job-5-CCO", name="renamed")
        conn.execute(db.jobs.update().where(db.jobs.c.id == "job-4-CCO").values(
            state="done", attempts=1, billed_core_seconds=2.5))
        assert job_store.cancel_job(conn, workspace_id=ws_id, job_id="job-3-CCO")
        assert job_store.delete_job(conn, workspace_id=ws_id, job_id="job-3-CCO") == "cancelled"
    for params in ({"limit": 4}, {"limit": 2}, {"limit": 4, "state": "done"}):
        fast, slow = _pages(engine, ws_id, **params)
        assert fast == slow, params
    fast, _ = _pages(engine, ws_id, limit=4)
    assert [j["name"] for j in fast["jobs"]] == ["renamed", "n4", "n2", "n1"]
    assert fast["jobs"][1]["state"] == "done" and fast["jobs"][1]["billed_core_seconds"] == 2.5
    assert first["jobs"][0]["molecule_preview"] == fast["jobs"][0]["molecule_preview"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_job_number_given_again_is_not_answered_with_the_old_job(filled):
    """SQLite gives a new row the number of a deleted newest row again."""
    engine, ws_id = filled
    _pages(engine, ws_id, limit=3)
    with db.write_tx(engine) as conn:
        (seq,) = conn.execute(sa.select(db.jobs.c.seq).where(db.jobs.c.id == "job-5-CCO")).one()
        conn.execute(db.jobs.delete().where(db.jobs.c.id == "job-5-CCO"))
        conn.execute(db.jobs.insert(), [{**_row(ws_id, 5, smiles="c1ccccc1O"),
                                         "job_type": "geometry_optimization"}])
        (again,) = conn.execute(sa.select(db.jobs.c.seq).where(
            db.jobs.c.id == "job-5-c1ccccc1O")).one()
    assert again == seq  # the premise: the number came back
    fast, slow = _pages(engine, ws_id, limit=3)
    assert fast == slow
    newest = fast["jobs"][0]
    assert newest["job_type"] == "geometry_optimization"
    assert newest["molecule_preview"]["formula"] == "C6H6O"


def test_the_memory_is_bounded():
    class Row:
        def __init__(self, seq: int) -> None:
            self.seq, self.id, self.job_type = seq, f"j{seq}", "single_point_energy"
            self.created_at, self.preview = 1.0, None

    summaries = Summaries(max_remembered=4)
    summaries.remember([Row(i) for i in range(3)])
    assert summaries.known([Row(0), Row(2)]) is not None
    summaries.remember([Row(i) for i in range(3, 6)])  # past the bound: starts again
    assert summaries.known([Row(0)]) is None
    assert summaries.known([Row(5)]) is not None
    assert summaries.known([Row(6)]) is None
