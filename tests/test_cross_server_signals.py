"""Two server processes on one PostgreSQL pass their signals to each other (pgnotify:
LISTEN/NOTIFY): work submitted through one wakes a controller's claim poll parked on the
other, and a result reported through that one wakes a client's wait parked on the first. Both
servers re-check the database only every 600 s here, and the controller's poll lasts 60 s:
without the notifications the wait below ends at its 45 s timeout with the job pending."""

from __future__ import annotations

import json
import subprocess

import httpx2 as httpx
import pytest
from atomiverse import Atoms
from conftest import (
    PY,
    launch_server,
    stop_process,
    wait_http,
    wait_parked,
    xtb_reference,
)
from pg import pg_cluster  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow  # several servers on one PostgreSQL

# The servers' re-check and the controller's claim poll (its environment is the servers').
SLOW_FALLBACKS = {"ATOMIVERSE_RECHECK_SECONDS": "600",
                  "ATOMIVERSE_CONTROLLER_CLAIM_WAIT_SECONDS": "60"}


def test_a_signal_on_one_server_wakes_a_long_poll_on_the_other(pg_cluster, tmp_path):  # noqa: F811
    url = pg_cluster.new_database()
    servers = [launch_server(tmp_path / f"server{i}", database_url=url, env_extra=SLOW_FALLBACKS)
               for i in range(2)]
    try:
        for srv in servers:
            wait_http(f"{srv.url}/healthz", proc=srv.proc)
        front, back = servers
        out = subprocess.run([PY, "-m", "atomiverse_server.admin", "--database-url", url,
                              "create-workspace", "lab"], check=True, capture_output=True,
                             text=True, env=front.env)
        key = json.loads(out.stdout)["api_key"]
        auth = {"Authorization": f"Bearer {key}"}
        back.start_controller(key, "node", "--slots", "1")
        wait_parked(back.url, "atomiverse_parked_claims")

        water = Atoms.from_smiles("O")
        jobs = [{"job_type": "single_point_energy", "use_cache": False,
                 "atoms": {"numbers": list(water.numbers),
                           "positions": [[x, y, z + 1e-3 * i] for x, y, z in water.positions]},
                 "level_of_theory": {"method": "gfn2-xtb"}} for i in range(1)]
        r = httpx.post(f"{front.url}/api/v1/jobs/submit-batch", headers=auth, timeout=60,
                       json={"jobs": [{"job": j, "compute_target": "node"} for j in jobs]})
        assert r.status_code == 200, r.text
        ids = [j["job_id"] for j in r.json()["jobs"]]
        r = httpx.post(f"{front.url}/api/v1/jobs/wait", headers=auth, timeout=120,
                       json={"job_ids": ids, "timeout_seconds": 45, "include_result": True})
        assert r.status_code == 200, r.text
        states = r.json()["jobs"]
        # One job: the wait answers when it finishes (or, unwoken, at its timeout with the
        # state it read first).
        assert [s["state"] for s in states] == ["done"], states
        for state, job in zip(states, jobs, strict=True):
            expected = xtb_reference(job["atoms"]["numbers"], job["atoms"]["positions"])
            assert abs(state["result"]["energy_hartree"] - expected) < 1e-6
    finally:
        for srv in servers:
            for c in srv.controllers:
                stop_process(c)
            stop_process(srv.proc)
