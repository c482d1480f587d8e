"""``atomiverse admin purge``: old finished jobs are archived and deleted in chunks while a
batch runs on the same database; the batch is not held up, loses nothing and runs each job
once. Real server and controller processes (the FAKE instant engine), SQLite and
PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime

import httpx2 as httpx
import pytest
import sqlalchemy as sa
from atomiverse_server import db
from conftest import PY, start_server, stop_process
from pg import pg_cluster  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow  # purges while a batch runs

OLD, RUNNING = 200, 200


def _entries(n: int, prefix: str, name: str | None = None) -> list[dict]:
    return [{"job": {"job_type": "single_point_energy", "name": name or f"{prefix}{i}",
                     "use_cache": False,
                     "atoms": {"numbers": [8, 1, 1],
                               "positions": [[0.0, 0.0, 0.0], [0.96, 0.0, 0.0],
                                             [-0.24, 0.93, 1e-5 * i]]},
                     "level_of_theory": {"method": "gfn2-xtb"}},
             "compute_target": "box"} for i in range(n)]


def _states(engine: sa.Engine, ids: list[str]) -> dict[str, int]:
    with db.read_tx(engine) as conn:
        rows = conn.execute(sa.select(db.jobs.c.state, db.jobs.c.attempts, sa.func.count())
                            .where(db.jobs.c.id.in_(ids))
                            .group_by(db.jobs.c.state, db.jobs.c.attempts)).all()
    return {f"{r[0]}:{r[1]}": r[2] for r in rows}


def _wait_done(engine: sa.Engine, ids: list[str], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while _states(engine, ids).get("done:1", 0) < len(ids):
        assert time.monotonic() < deadline, _states(engine, ids)
        time.sleep(0.1)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_purge_archives_old_jobs_in_chunks_while_a_batch_runs(backend, tmp_path, request):
    url = request.getfixturevalue("pg_cluster").new_database() if backend == "postgresql" \
        else None
    srv = start_server(tmp_path / "srv", database_url=url)
    engine = db.make_engine(srv.database_url)
    key = srv.new_workspace("lab")
    c = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    try:
        srv.start_controller(key, "box", "--engine", "instant", "--slots", "2")
        r = c.post("/api/v1/jobs/submit-batch", json={"jobs": _entries(OLD, "old")})
        assert r.status_code == 200 and r.json()["failed"] == 0, r.text[:300]
        old = [j["job_id"] for j in r.json()["jobs"]]
        _wait_done(engine, old)
        cutoff = datetime.now(UTC).isoformat()
        # The running batch: each job sleeps 0.1 s on one of two slots, 10 s in all.
        r = c.post("/api/v1/jobs/submit-batch",
                   json={"jobs": _entries(RUNNING, "new", name="__sleep_0.1__")})
        assert r.status_code == 200 and r.json()["failed"] == 0, r.text[:300]
        new = [j["job_id"] for j in r.json()["jobs"]]
        archive = tmp_path / "archive.jsonl"
        out = srv.admin("purge", "--state", "done", "--before", cutoff, "--archive",
                        str(archive), "--chunk", "20")
        unfinished_after_purge = RUNNING - _states(engine, new).get("done:1", 0)

        assert out["purged"] == OLD and out["by_state"] == {"done": OLD}
        # The purge ended while the batch was still running: it did not wait for it.
        assert unfinished_after_purge > 0
        lines = [json.loads(line) for line in archive.read_text().splitlines()]
        assert sorted(j["id"] for j in lines) == sorted(old)
        assert all(j["state"] == "done" and j["result"]["energy_hartree"] < 0 for j in lines)
        assert archive.stat().st_mode & 0o077 == 0
        assert c.get(f"/api/v1/jobs/{old[0]}").status_code == 404

        _wait_done(engine, new)  # every job of the batch done, once, none purged
        assert _states(engine, new) == {"done:1": RUNNING}
        assert "event=report_rejected" not in srv.controller_log("box")
        # Nothing finished before the cutoff is left: a second purge finds nothing.
        assert srv.admin("purge", "--state", "done", "--before", cutoff)["purged"] == 0
    finally:
        c.close()
        engine.dispose()
        for p in srv.controllers:
            stop_process(p)
        stop_process(srv.proc)


def test_purge_refuses_unfinished_states_and_bad_dates(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    for args, says in ((["--state", "running", "--before", "2026-01-01"], "--state"),
                       (["--state", "done", "--before", "last week"], "--before")):
        out = subprocess.run([PY, "-m", "atomiverse_server.admin", "--database-url", url,
                              "purge", *args], check=False, capture_output=True,
                             text=True)
        assert out.returncode == 2 and says in out.stderr, out.stderr
