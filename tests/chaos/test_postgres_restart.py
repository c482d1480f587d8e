"""PostgreSQL restarted mid-batch (issue 30, item 4c): ``pg_ctl stop -m fast`` (every session
cut), then started again. While it is down the servers answer 503 with Retry-After (not 500);
a user's call made meanwhile is retried until the database is back and succeeds; the
servers reconnect (the pool's pre-ping) without a restart of their own; every job accepted
is done exactly once with the engine's energy.

The test starts a PostgreSQL cluster of its own: stopping the session's would pull it from
under the other tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import atomiverse
import httpx2 as httpx
import pytest
from conftest import stop_process, wait_for_controller
from pg import PostgresCluster, PostgresUnavailable, start_cluster
from serverfaults import Submitter, check_each_done_once, start_controller, wait_for, xtb_jobs
from test_several_servers import BATCH, two_servers_one_database

pytestmark = pytest.mark.slow  # the fault suite: real processes broken mid-batch


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[PostgresCluster]:
    try:
        cluster = start_cluster()
    except PostgresUnavailable as e:
        pytest.fail(f"PostgreSQL is required (bash scripts/install-test-deps installs it): {e}",
                    pytrace=False)
    yield cluster
    cluster.stop()


def _unavailable_logged(servers, path: str) -> int:
    return sum((srv.home / "server.log").read_text().count(
        f"event=database_unavailable request='{path}") for srv in servers)


@pytest.mark.slow  # real xtb jobs around a database restart: a minute under shared load
@pytest.mark.timeout(600)
def test_postgres_fast_restart_mid_batch_loses_nothing(own_cluster, tmp_path):
    url = own_cluster.new_database()
    servers, key = two_servers_one_database(tmp_path, url)
    both = ",".join(srv.url for srv in servers)
    controller = start_controller(tmp_path / "node", both, key, "node")
    client = atomiverse.Client(api_key=key, base_url=both)
    submitter = Submitter(atomiverse.Client(api_key=key, base_url=both), "node", BATCH, "s")
    try:
        wait_for_controller(servers[0].url, key, "node", controller)
        first = xtb_jobs(0, 40, "first")
        response = client.submit_batch(first, compute_target="node")
        accepted = {r["job_id"]: job for r, job in zip(response["jobs"], first, strict=True)}
        submitter.start()
        finished = client.as_completed(list(accepted), timeout=300)
        for _ in range(5):  # mid-batch
            next(finished)
        wait_for(lambda: submitter.batches >= 2, "the user's batches to flow")

        own_cluster.stop_fast()
        # The fault is in place, and a server says so the way clients retry: 503, not 500.
        probe = httpx.get(f"{servers[0].url}/api/v1/jobs/{next(iter(accepted))}",
                          headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert probe.status_code == 503, probe.text
        assert float(probe.headers["Retry-After"]) > 0
        assert "database" in probe.json()["detail"]
        # A user's call made while the database is down: refused, retried, then answered.
        got: dict = {}
        calls = threading.Thread(target=lambda: got.update(
            batch=client.submit_batch(xtb_jobs(0, 4, "during"), compute_target="node"),
            job=client.get_job(next(iter(accepted)))), daemon=True)
        calls.start()
        wait_for(lambda: _unavailable_logged(servers, "POST /api/v1/jobs/submit-batch"),
                 "a submission refused while the database is down")
        own_cluster.start_again()
        calls.join(120)
        assert not calls.is_alive() and set(got) == {"batch", "job"}, \
            "a retried user call failed while the database restarted"
        accepted.update((r["job_id"], job) for r, job in
                        zip(got["batch"]["jobs"], xtb_jobs(0, 4, "during"), strict=True))
        seen = submitter.batches
        wait_for(lambda: submitter.batches >= seen + 3, "batches after the restart")
        accepted.update(submitter.finish())  # every one of its calls succeeded

        records = client.wait_jobs(list(accepted), timeout=400)
        assert {r["state"] for r in records} == {"done"}
        figures = check_each_done_once(url, accepted)
        assert controller.poll() is None
        assert all(srv.proc.poll() is None for srv in servers), "a server died with the database"
        print(f"postgres restart: {figures}")
    finally:
        submitter.stop.set()
        client.close()
        submitter.client.close()
        stop_process(controller)
        for srv in servers:
            stop_process(srv.proc)
