"""Batch rules from sdk-batch-submission.txt: size limit, result cache, BYOC capacity,
managed compute and billing. Real server processes, real controller processes."""

from __future__ import annotations

import json
import time

import atomiverse
import pytest
from atomiverse.levels import GFN1_XTB, GFN2_XTB
from conftest import start_server, stop_process


def _sp(smiles="O", **kw):
    return atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles(smiles),
                                        level_of_theory=GFN2_XTB, **kw)


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    """A server whose administrator set a batch limit of 5."""
    srv = start_server(tmp_path_factory.mktemp("small"),
                       env_extra={"ATOMIVERSE_MAX_BATCH_SIZE": "5"})
    key = srv.new_workspace("small")
    yield srv, key
    stop_process(srv.proc)


def test_oversized_batch_is_413_and_nothing_is_stored(small_server):
    srv, key = small_server
    client = atomiverse.Client(api_key=key, base_url=srv.url)
    try:
        with pytest.raises(atomiverse.PayloadTooLargeError) as exc:
            client.submit_batch([_sp().model_dump()] * 6, compute_target="anything")
        assert exc.value.status_code == 413 and "maximum batch size of 5" in exc.value.message
        assert client.list_jobs().jobs == []
        assert client.account()["limits"]["max_batch_size"] == 5
    finally:
        client.close()


def test_cache_hit_for_done_job_names_its_source(client, alpha_controller):
    first = client.submit_batch([_sp("CCCO").model_dump()], compute_target=alpha_controller)
    (rec,) = client.wait_jobs([first["jobs"][0]["job_id"]], timeout=120)
    assert rec["state"] == "done"
    again = client.submit_batch([_sp("CCCO", name="again").model_dump()],
                                compute_target=alpha_controller)
    assert again["cache_hits"] == 1 and again["submitted"] == 1
    entry = again["jobs"][0]
    assert entry["status"] == "cache_hit" and entry["state"] == "done"
    assert entry["cached_from"] == rec["job_id"] and entry["job_id"] != rec["job_id"]
    hit = client.get_job(entry["job_id"])
    assert hit["result"] == rec["result"] and hit["billed_core_seconds"] == 0
    assert hit["cached_from"] == rec["job_id"] and hit["name"] == "again"


def test_cache_distinguishes_level_geometry_and_opt_out(client, alpha_controller):
    base = _sp("CCCCO")
    client.wait_jobs([client.submit_batch([base.model_dump()], compute_target=alpha_controller)
                      ["jobs"][0]["job_id"]], timeout=120)
    moved = base.atoms.model_copy(update={"positions": [
        (x + 1e-3, y, z) for x, y, z in base.atoms.positions]})
    nudged = base.atoms.model_copy(update={"positions": [
        (x + 1e-7, y, z) for x, y, z in base.atoms.positions]})
    res = client.submit_batch([
        atomiverse.SinglePointEnergy(atoms=base.atoms, level_of_theory=GFN1_XTB).model_dump(),
        atomiverse.SinglePointEnergy(atoms=moved, level_of_theory=GFN2_XTB).model_dump(),
        atomiverse.SinglePointEnergy(atoms=nudged, level_of_theory=GFN2_XTB).model_dump(),
        atomiverse.SinglePointEnergy(atoms=base.atoms, level_of_theory=GFN2_XTB,
                                     use_cache=False).model_dump(),
    ], compute_target=alpha_controller)
    assert [j["status"] for j in res["jobs"]] == ["submitted", "submitted", "cache_hit",
                                                  "submitted"]
    client.wait_jobs([j["job_id"] for j in res["jobs"]], timeout=120)


def test_identical_jobs_in_flight_are_computed_once(client, server, workspace_key):
    server.start_controller(workspace_key, "dedupe-box", "--slots", "1")
    job = _sp("CCCCCCO").model_dump()
    res = client.submit_batch([job, job, job], compute_target="dedupe-box")
    assert [j["status"] for j in res["jobs"]] == ["submitted", "cache_hit", "cache_hit"]
    leader = res["jobs"][0]["job_id"]
    assert all(j["cached_from"] == leader for j in res["jobs"][1:])
    records = client.wait_jobs([j["job_id"] for j in res["jobs"]], timeout=120)
    assert all(r["state"] == "done" for r in records)
    assert records[1]["result"] == records[0]["result"] == records[2]["result"]
    log = server.controller_log("dedupe-box")
    assert log.count("event=claimed") == 1


def test_failed_or_cancelled_jobs_are_never_served(client, server, workspace_key):
    # Parked: registered, nobody claims, so we can cancel the leader while it waits.
    import httpx2 as httpx

    httpx.post(f"{server.url}/api/v1/controllers/register",
               headers={"Authorization": f"Bearer {workspace_key}"},
               json={"name": "parked-cache", "slots": 1, "engines": {"xtb": "22.1"}})
    job = _sp("CCOCC").model_dump()
    res = client.submit_batch([job, job], compute_target="parked-cache")
    leader, follower = (j["job_id"] for j in res["jobs"])
    client.cancel_job(leader)
    # The follower no longer waits for a cancelled job: it is back to computing itself.
    assert client.get_job(follower)["cached_from"] is None
    again = client.submit_batch([job], compute_target="parked-cache")["jobs"][0]
    assert again["cached_from"] == follower  # in flight, never the cancelled one


def test_byoc_capacity_is_cumulative_across_a_batch(client, server, workspace_key):
    server.start_controller(workspace_key, "five-box", "--slots", "1", "--capacity", "5")
    payloads = [_sp(use_cache=False, name=f"cap-{i}").model_dump() for i in range(8)]
    res = client.submit_batch(payloads, compute_target="five-box")
    statuses = [j["status"] for j in res["jobs"]]
    assert statuses == ["submitted"] * 5 + ["failed"] * 3
    assert all(j["error"].startswith("BYOC controller at capacity")
               for j in res["jobs"][5:])
    assert res["submitted"] == 5 and res["failed"] == 3
    client.wait_jobs([j["job_id"] for j in res["jobs"][:5]], timeout=120)
    # Done jobs no longer count against capacity.
    assert client.submit_batch([payloads[0]], compute_target="five-box")["submitted"] == 1


@pytest.fixture(scope="module")
def managed_server(tmp_path_factory):
    """Managed compute enabled at 10 per core-hour, one managed controller an admin
    registered, serving every workspace."""
    srv = start_server(tmp_path_factory.mktemp("managed"), env_extra={
        "ATOMIVERSE_MANAGED_ENABLED": "true", "ATOMIVERSE_MANAGED_RATE_PER_CORE_HOUR": "10"})
    rich = srv.admin("create-workspace", "rich", "--balance", "100")["api_key"]
    poor = srv.admin("create-workspace", "poor", "--balance", "5")["api_key"]
    token = srv.admin("register-managed-controller", "pool-1", "--token-file",
                      str(srv.home / "pool-1.token"))["token"]
    assert token.startswith("avc_")
    yield srv, rich, poor
    for c in srv.controllers:
        stop_process(c)
    stop_process(srv.proc)


def test_managed_billing_and_balance_preflight(managed_server):
    srv, rich_key, poor_key = managed_server
    proc = srv.start_controller(None, "pool-1", "--slots", "2", wait=False)
    rich = atomiverse.Client(api_key=rich_key, base_url=srv.url)
    poor = atomiverse.Client(api_key=poor_key, base_url=srv.url)
    try:
        deadline = time.monotonic() + 60
        while "event=registered" not in srv.controller_log("pool-1"):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        # 1 job x 1 hour x 1 core x 10 = 10 > 5: refused whole, nothing stored.
        with pytest.raises(atomiverse.PaymentRequiredError) as exc:
            poor.submit_batch([_sp(use_cache=False).model_dump()])
        assert exc.value.status_code == 402 and "balance" in exc.value.message
        assert poor.list_jobs().jobs == []
        res = rich.submit_batch([_sp("CCO", use_cache=False).model_dump(),
                                 _sp("CCN", use_cache=False).model_dump()],
                                compute_target="managed")
        assert res["submitted"] == 2
        records = rich.wait_jobs([j["job_id"] for j in res["jobs"]], timeout=120)
        billed = 0.0
        for rec in records:
            assert rec["state"] == "done"
            assert rec["billed_core_seconds"] == pytest.approx(rec["result"]["core_seconds"])
            billed += rec["billed_core_seconds"]
        account = rich.account()
        assert account["balance"] == pytest.approx(100 - billed / 3600 * 10, abs=1e-9)
        assert account["balance"] < 100
        listed = json.loads(json.dumps(srv.admin("list-controllers", "managed-pool")))
        assert listed[0]["name"] == "pool-1" and listed[0]["serves_managed"]
    finally:
        rich.close()
        poor.close()


@pytest.fixture(scope="module")
def limited_servers(tmp_path_factory):
    """Two server processes on one database with the default limits: 2 batches a minute."""
    limits = {"ATOMIVERSE_BATCH_RATE_PER_MINUTE": "2", "ATOMIVERSE_JOB_RATE_PER_MINUTE": "600"}
    home = tmp_path_factory.mktemp("limited")
    first = start_server(home, env_extra=limits)
    second = start_server(home, "--database-url", first.database_url, env_extra=limits)
    key = first.new_workspace("limited")
    first.admin("create-workspace", "neighbour")
    yield first, second, key
    stop_process(second.proc)
    stop_process(first.proc)


@pytest.mark.slow  # several servers: two server processes started for it
def test_batch_rate_limit_holds_across_server_processes(limited_servers):
    first, second, key = limited_servers
    a = atomiverse.Client(api_key=key, base_url=first.url)
    b = atomiverse.Client(api_key=key, base_url=second.url)
    job = _sp(use_cache=False).model_dump()
    try:
        a.submit_batch([job], compute_target="nowhere")
        b.submit_batch([job], compute_target="nowhere")
        for client in (a, b):
            with pytest.raises(atomiverse.RateLimitError) as exc:
                client.submit_batch([job], compute_target="nowhere")
            assert exc.value.status_code == 429 and "2 batch submissions per minute" in \
                exc.value.message
            assert 20 <= exc.value.retry_after_seconds <= 60
        # Single jobs have their own, higher limit.
        with pytest.raises(atomiverse.UnprocessableEntityError):
            a.submit_job(job, compute_target="nowhere")  # routed nowhere, but not limited
    finally:
        a.close()
        b.close()


def test_idempotent_batch_retry_returns_the_first_response(limited_servers):
    first, _second, _ = limited_servers
    key = first.admin("issue-key", "neighbour")["api_key"]
    client = atomiverse.Client(api_key=key, base_url=first.url)
    try:
        import httpx2 as httpx

        httpx.post(f"{first.url}/api/v1/controllers/register", headers={
            "Authorization": f"Bearer {key}"}, json={"name": "idem", "slots": 1,
                                                     "engines": {"xtb": "22.1"}})
        payloads = [_sp("CCO", use_cache=False).model_dump(), {"job_type": "nonsense"}]
        once = client.submit_batch(payloads, compute_target="idem", idempotency_key="batch-42")
        again = client.submit_batch(payloads, compute_target="idem",
                                    idempotency_key="batch-42")
        assert again == once and once["submitted"] == 1
        assert len(client.list_jobs().jobs) == 1  # nothing new stored
        with pytest.raises(atomiverse.UnprocessableEntityError) as exc:
            client.submit_batch(payloads[:1], compute_target="idem",
                                idempotency_key="batch-42")
        assert "Idempotency-Key" in exc.value.message
    finally:
        client.close()


def test_spec_example_2500_jobs_in_3_batches(tmp_path, capsys):
    srv = start_server(tmp_path / "big", env_extra={"ATOMIVERSE_MANAGED_ENABLED": "true"})
    try:
        key = srv.new_workspace("big")
        srv.admin("register-managed-controller", "pool")
        atomiverse.configure(api_key=key, base_url=srv.url)
        payloads = [_sp(use_cache=False, name=f"mol-{i}").model_dump() for i in range(2500)]
        # Submit 2500 jobs in 3 batches (verbatim from sdk-batch-submission.txt)
        chunk_size = 1000
        for i in range(0, len(payloads), chunk_size):
            chunk = payloads[i:i + chunk_size]
            result = atomiverse.submit_batch(chunk)
            print(f"Batch {i // chunk_size + 1}: {result['submitted']} submitted")
        assert capsys.readouterr().out.splitlines() == [
            "Batch 1: 1000 submitted", "Batch 2: 1000 submitted", "Batch 3: 500 submitted"]
        assert sum(1 for _ in atomiverse.iter_jobs(limit=200)) == 2500
    finally:
        atomiverse.configure()
        stop_process(srv.proc)
