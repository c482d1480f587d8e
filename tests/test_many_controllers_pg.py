"""The shared server of a lab or HPC site: two server processes on one PostgreSQL, eight
controller processes (the test-only instant engine) split between them, all serving the same
managed queue, 20,000 jobs. Every job is done exactly once: claimed once, run once, reported
once, recorded done on its first attempt."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import sqlalchemy as sa
from atomiverse_server import db
from conftest import (
    PY,
    launch_server,
    stop_process,
    wait_for_controller,
    wait_http,
    wait_parked,
)
from pg import pg_cluster  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow  # scale tests: many controllers on PostgreSQL

N_JOBS = 20_000
BATCH = 1000
N_SERVERS = 2
N_CONTROLLERS = 8
SLOTS = 2

SERVER_ENV = {
    "ATOMIVERSE_MANAGED_ENABLED": "true",
    "ATOMIVERSE_MANAGED_RATE_PER_CORE_HOUR": "0",
    "ATOMIVERSE_BATCH_RATE_PER_MINUTE": "1000",
    "ATOMIVERSE_JOB_RATE_PER_MINUTE": "1000000",
}


def _payload(i: int) -> dict[str, Any]:
    # Every molecule distinct and the cache off: each job must really be claimed and run.
    return {"job_type": "single_point_energy", "name": f"m{i}", "use_cache": False,
            "atoms": {"numbers": [8, 1, 1],
                      "positions": [[0.0, 0.0, 0.0], [0.96, 0.0, 0.0],
                                    [-0.24, 0.93, 1e-5 * i]]},
            "level_of_theory": {"method": "gfn2-xtb"}}


@pytest.mark.slow  # a scale test: 49 s of the fast selection's 10 min under shared load
@pytest.mark.timeout(600)
def test_two_servers_eight_controllers_20000_jobs_each_done_once(pg_cluster, tmp_path):  # noqa: F811
    url = pg_cluster.new_database()
    engine = db.make_engine(url)
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []
    try:
        # Both servers start at once on an empty database: they race to run the migrations.
        servers = [launch_server(tmp_path / f"server{i}", database_url=url, env_extra=SERVER_ENV)
                   for i in range(N_SERVERS)]
        procs += [srv.proc for srv in servers]
        for srv in servers:
            wait_http(f"{srv.url}/healthz", proc=srv.proc)
        out = subprocess.run([PY, "-m", "atomiverse_server.admin", "--database-url", url,
                              "create-workspace", "lab", "--balance", "1000000"],
                             check=True, capture_output=True, text=True)
        key = json.loads(out.stdout)["api_key"]
        auth = {"Authorization": f"Bearer {key}"}

        env = {**os.environ, "ATOMIVERSE_HOME": str(tmp_path)}
        env.pop("ATOMIVERSE_BASE_URL", None)
        controllers = []
        for i in range(N_CONTROLLERS):
            base = servers[i % N_SERVERS].url
            name = f"node{i}"
            log_path = tmp_path / f"{name}.log"
            logs.append(log_path)
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(
                    [PY, "-m", "atomiverse_controller", "--server", base, "--name", name,
                     "--api-key", key, "--engine", "instant", "--slots", str(SLOTS),
                     "--token-file", str(tmp_path / f"{name}.token"),
                     "--spool-dir", str(tmp_path / f"spool-{name}")],
                    stdout=log, stderr=log, env=env)
            procs.append(proc)
            controllers.append((base, name, proc))
        for base, name, proc in controllers:
            wait_for_controller(base, key, name, proc)
        # The site admin puts the eight nodes in the managed pool: one queue, eight claimers,
        # two server processes handing out its rows.
        with db.write_tx(engine) as conn:
            conn.execute(db.controllers.update().values(serves_managed=True))

        t0 = time.monotonic()

        def submit(b: int) -> int:
            base = servers[b % N_SERVERS].url
            entries = [{"job": _payload(i), "compute_target": "managed"}
                       for i in range(b * BATCH, (b + 1) * BATCH)]
            r = httpx.post(f"{base}/api/v1/jobs/submit-batch", json={"jobs": entries},
                           headers=auth, timeout=120)
            assert r.status_code == 200, r.text[:500]
            body = r.json()
            assert body["failed"] == 0, body["jobs"][:3]
            return body["submitted"]

        with ThreadPoolExecutor(N_SERVERS) as pool:
            assert sum(pool.map(submit, range(N_JOBS // BATCH))) == N_JOBS
        submitted_s = time.monotonic() - t0

        deadline = time.monotonic() + 400
        while True:
            with db.read_tx(engine) as conn:
                states = dict(conn.execute(sa.select(db.jobs.c.state, sa.func.count())
                                           .group_by(db.jobs.c.state)).all())
            if states.get("done", 0) == N_JOBS:
                break
            for _, name, proc in controllers:
                assert proc.poll() is None, f"controller {name} exited"
            for srv in servers:
                assert srv.proc.poll() is None, f"server {srv.url} exited"
            assert time.monotonic() < deadline, f"not all done in time: {states}"
            time.sleep(1.0)
        elapsed = time.monotonic() - t0
        print(f"\n{N_JOBS} jobs: submitted in {submitted_s:.1f} s, all done in {elapsed:.1f} s "
              f"({N_JOBS / elapsed:.0f} jobs/s) on {N_SERVERS} servers, {N_CONTROLLERS} "
              f"controllers x {SLOTS} slots")

        # The database: each job done, on its first attempt, never lost or retried.
        with db.read_tx(engine) as conn:
            rows = conn.execute(sa.select(
                db.jobs.c.state, db.jobs.c.attempts,
                db.jobs.c.attempt_errors.is_(None) | (sa.cast(db.jobs.c.attempt_errors,
                                                              sa.Text) == "null"),
                db.jobs.c.finished_at.isnot(None), db.jobs.c.lease_id.is_(None),
                sa.func.count()).group_by(sa.text("1, 2, 3, 4, 5"))).all()
            per_controller = dict(conn.execute(
                sa.select(db.controllers.c.name, sa.func.count())
                .join(db.jobs, db.jobs.c.claimed_by == db.controllers.c.id)
                .group_by(db.controllers.c.name)).all())
        assert [tuple(r) for r in rows] == [("done", 1, True, True, True, N_JOBS)]
        assert sum(per_controller.values()) == N_JOBS
        # All eight took part, through both servers.
        assert len(per_controller) == N_CONTROLLERS, per_controller

        # The controllers: each job claimed once and run once, over all eight; no report was
        # turned away (a rejected report would mean a second claim of a leased job).
        text = "".join(p.read_text() for p in logs)
        claimed = Counter(re.findall(r"event=claimed controller=\S+ job=(\S+)", text))
        finished = Counter(re.findall(r"event=finished controller=\S+ job=(\S+)", text))
        assert len(claimed) == N_JOBS and set(claimed.values()) == {1}
        assert len(finished) == N_JOBS and set(finished.values()) == {1}
        assert "event=report_rejected" not in text
        assert "event=claim_failed" not in text

        # And the API agrees, from either server.
        for srv in servers:
            r = httpx.get(f"{srv.url}/api/v1/jobs", params={"limit": 200, "state": "done"},
                          headers=auth, timeout=30)
            assert r.status_code == 200 and len(r.json()["jobs"]) == 200
    finally:
        for p in reversed(procs):
            stop_process(p)
        engine.dispose()
        for p in logs + [tmp_path / f"server{i}" / "server.log" for i in range(N_SERVERS)]:
            if p.exists() and ("Traceback" in (t := p.read_text())):
                print(f"--- {p.name} ---\n{t[-3000:]}")


@pytest.mark.timeout(180)
def test_a_wait_on_one_server_sees_a_job_finished_through_the_other(pg_cluster, tmp_path):  # noqa: F811
    """Server B learns that a job was cancelled through server A only from the database. Its
    own finish signal keeps firing meanwhile, for other jobs cancelled through B ten times a
    second until the answer comes: the waiter must still go back to the database once its
    fallback period (1 s) has passed, and answer then, not once the signal falls quiet. The
    churn (200 cancels, 20 s at least) is the clock: the answer must come before it ends."""
    url = pg_cluster.new_database()
    servers = [launch_server(tmp_path / f"server{i}", database_url=url, env_extra=SERVER_ENV)
               for i in range(2)]
    clients: list[httpx.Client] = []
    try:
        for srv in servers:
            wait_http(f"{srv.url}/healthz", proc=srv.proc)
        out = subprocess.run([PY, "-m", "atomiverse_server.admin", "--database-url", url,
                              "create-workspace", "lab", "--balance", "1000"],
                             check=True, capture_output=True, text=True)
        auth = {"Authorization": f"Bearer {json.loads(out.stdout)['api_key']}"}
        a, b = (httpx.Client(base_url=srv.url, headers=auth, timeout=60) for srv in servers)
        clients += [a, b]
        # No controller serves the managed pool: the jobs stay pending until cancelled.
        r = a.post("/api/v1/jobs/submit-batch", json={"jobs": [
            {"job": _payload(i), "compute_target": "managed"} for i in range(201)]})
        assert r.status_code == 200 and r.json()["failed"] == 0, r.text[:500]
        target, *others = [j["job_id"] for j in r.json()["jobs"]]

        answered, churning = threading.Event(), threading.Event()

        def churn_on_b() -> bool:
            """Cancel the others through B until the answer comes; True if they ran out
            first."""
            for n, job_id in enumerate(others):
                if answered.wait(0.1):
                    return False
                assert b.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
                if n == 4:
                    churning.set()
            return True

        def cancel_target_on_a() -> None:
            assert churning.wait(60), "the churn never started"
            assert a.post(f"/api/v1/jobs/{target}/cancel").status_code == 200

        with ThreadPoolExecutor(3) as pool:
            waited = pool.submit(b.post, "/api/v1/jobs/wait",
                                 json={"job_ids": [target], "timeout_seconds": 60})
            # Parked past its first read (target pending), before anything is cancelled.
            wait_parked(servers[1].url, "atomiverse_parked_waits")
            churn = pool.submit(churn_on_b)
            cancel = pool.submit(cancel_target_on_a)
            r = waited.result()
            answered.set()
            ran_out = churn.result()
            cancel.result()
        assert r.status_code == 200, r.text
        assert r.json()["jobs"] == [{"job_id": target, "state": "cancelled"}]
        assert not ran_out, "answered only once the churn had ended: the busy signal hid the change"
    finally:
        for c in clients:
            c.close()
        for srv in servers:
            stop_process(srv.proc)
