"""Every server process on a shared PostgreSQL runs the lease sweep (scheduler.sweep_leases).
Two sweeps at once take each expired lease back once: the rows are locked as they are read
(``FOR UPDATE SKIP LOCKED``), so the second sweep skips what the first holds, and together
they report each job once and write one "lost" entry into its history, not two."""

from __future__ import annotations

import threading
import time
import uuid

import sqlalchemy as sa
from atomiverse_server import db
from atomiverse_server.store import controllers as controller_store
from pg import pg_cluster  # noqa: F401  (fixture)

N_JOBS = 400


def _running_jobs_with_expired_leases(engine: sa.engine.Engine) -> list[str]:
    t = time.time()
    ids = [uuid.uuid4().hex for _ in range(N_JOBS)]
    with db.write_tx(engine) as conn:
        conn.execute(db.workspaces.insert().values(id="ws", name="lab", balance=0.0,
                                                   created_at=t))
        conn.execute(db.jobs.insert(), [
            {"id": job_id, "workspace_id": "ws", "job_type": "single_point_energy",
             "state": "running", "payload": {}, "compute_target": "node",
             "claimed_by": "gone", "lease_id": uuid.uuid4().hex, "lease_expires_at": t - 10,
             "attempts": 1, "walltime_seconds": 60.0, "created_at": t} for job_id in ids])
    return ids


def test_two_sweeps_at_once_take_each_lease_back_once(pg_cluster):  # noqa: F811
    url = pg_cluster.new_database()
    engine = db.make_engine(url)
    try:
        db.migrate(engine)
        ids = _running_jobs_with_expired_leases(engine)
        start = threading.Barrier(2)
        counts: list[int] = []

        def sweep() -> None:
            start.wait()
            with db.write_tx(engine) as conn:
                counts.append(controller_store.sweep_expired_leases(conn, max_attempts=3))

        sweepers = [threading.Thread(target=sweep) for _ in range(2)]
        for s in sweepers:
            s.start()
        for s in sweepers:
            s.join(60)
        assert sum(counts) == N_JOBS, counts
        with db.read_tx(engine) as conn:
            rows = conn.execute(sa.select(db.jobs.c.id, db.jobs.c.state,
                                          db.jobs.c.attempt_errors)).all()
        assert {r.id for r in rows} == set(ids)
        assert {r.state for r in rows} == {"pending"}
        assert all(len(r.attempt_errors) == 1 for r in rows)
    finally:
        engine.dispose()
