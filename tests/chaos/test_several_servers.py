"""Several servers (issue 30, item 3): two server processes on one PostgreSQL serve the same
workspace; a controller and a user's client are given both URLs. One server is killed
(SIGKILL) mid-batch, while the user keeps submitting: the controller and the client move to
the other server, every job accepted is done exactly once with the engine's energy, and no
user call fails."""

from __future__ import annotations

import json
import subprocess

import atomiverse
import pytest
from conftest import PY, launch_server, stop_process, wait_for_controller, wait_http
from pg import pg_cluster  # noqa: F401  (fixture)
from serverfaults import (
    FAST_LEASES,
    Submitter,
    check_each_done_once,
    start_controller,
    wait_for,
    xtb_jobs,
)

pytestmark = pytest.mark.slow  # the fault suite: real processes broken mid-batch

BATCH = 6


def two_servers_one_database(tmp_path, database_url):
    """Two server processes on ``database_url``, a workspace, its API key."""
    servers = [launch_server(tmp_path / f"server{i}", database_url=database_url,
                             env_extra=FAST_LEASES) for i in range(2)]
    for srv in servers:
        wait_http(f"{srv.url}/healthz", proc=srv.proc)
    out = subprocess.run([PY, "-m", "atomiverse_server.admin", "--database-url", database_url,
                          "create-workspace", "lab"], check=True, capture_output=True,
                         text=True, env=servers[0].env)
    return servers, json.loads(out.stdout)["api_key"]


@pytest.mark.slow  # real xtb jobs around a server's death: a minute under shared load
@pytest.mark.timeout(600)
def test_kill_9_one_of_two_servers_mid_batch_loses_nothing(pg_cluster, tmp_path):  # noqa: F811
    url = pg_cluster.new_database()
    servers, key = two_servers_one_database(tmp_path, url)
    doomed, survivor = servers
    both = f"{doomed.url},{survivor.url}"  # the doomed one first: everyone is on it
    controller = start_controller(tmp_path / "node", both, key, "node")
    client = atomiverse.Client(api_key=key, base_url=both)
    submitter = Submitter(atomiverse.Client(api_key=key, base_url=both), "node", BATCH, "s")
    try:
        wait_for_controller(survivor.url, key, "node", controller)
        first = xtb_jobs(0, 40, "first")
        response = client.submit_batch(first, compute_target="node")
        accepted = {r["job_id"]: job for r, job in zip(response["jobs"], first, strict=True)}
        submitter.start()
        # Mid-batch: some of the first batch done, most not, submissions in flight.
        finished = client.as_completed(list(accepted), timeout=300)
        for _ in range(5):
            next(finished)
        wait_for(lambda: submitter.batches >= 2, "the user's batches to flow")
        assert client.get_job(next(iter(accepted)))["state"] in ("done", "running", "pending")
        assert client.base_url == doomed.url and controller.poll() is None

        doomed.proc.kill()  # SIGKILL: no shutdown, requests cut mid-way
        doomed.proc.wait()
        seen_at_kill = submitter.batches
        # The user carries on: new batches, reads, a list, through the other server.
        wait_for(lambda: submitter.batches >= seen_at_kill + 3, "batches after the kill")
        accepted.update(submitter.finish())
        page = client.list_jobs(limit=10)
        assert len(page.jobs) == 10
        records = client.wait_jobs(list(accepted), timeout=400)
        assert {r["state"] for r in records} == {"done"}
        assert client.base_url == survivor.url

        figures = check_each_done_once(url, accepted)
        assert controller.poll() is None, "the controller died with the server"
        assert survivor.proc.poll() is None
        print(f"several servers: {figures}")
    finally:
        submitter.stop.set()
        client.close()
        submitter.client.close()
        stop_process(controller)
        for srv in servers:
            stop_process(srv.proc)
