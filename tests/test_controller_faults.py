"""The controller under the faults a real machine inflicts: kill -9, native crashes, a
server that goes away, SIGTERM while busy, drains, walltimes. Real server and controller
processes; the instant engine (a named test fake with fault hooks) stands in for xtb where
the test is about the platform, not the chemistry."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time

import atomiverse
import httpx2 as httpx
import pytest
from atomiverse.levels import GFN2_XTB
from conftest import (
    free_port,
    metric_value,
    restart_server,
    start_server,
    stop_process,
    wait_parked,
)

pytestmark = pytest.mark.slow  # fault tests: controllers killed, paused, drained mid-batch

FAST_LEASES = {"ATOMIVERSE_LEASE_SECONDS": "4", "ATOMIVERSE_HEARTBEAT_SECONDS": "1",
               "ATOMIVERSE_SWEEP_SECONDS": "1", "ATOMIVERSE_MANAGED_ENABLED": "true"}


def _job(name, **kw):
    kw.setdefault("use_cache", False)
    return atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles("O"),
                                        level_of_theory=GFN2_XTB, name=name, **kw).model_dump()


def _wait_for(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def fleet(tmp_path):
    """A server with 4-second leases and managed compute on, its own workspace."""
    srv = start_server(tmp_path / "srv", env_extra=FAST_LEASES)
    key = srv.new_workspace("fleet")
    client = atomiverse.Client(api_key=key, base_url=srv.url)
    yield srv, key, client
    client.close()
    for c in srv.controllers:
        if c.poll() is None:
            c.kill()
            c.wait()
    stop_process(srv.proc)


def _managed(srv, name, *extra, wait=True):
    srv.admin("register-managed-controller", name, "--token-file", str(srv.home /
                                                                       f"{name}.token"))
    proc = srv.start_controller(None, name, "--engine", "instant", *extra, wait=False)
    if wait:
        _wait_for(lambda: "event=registered" in srv.controller_log(name), what=f"{name} up")
    return proc


def _states(client, ids):
    return [client.get_job(j)["state"] for j in ids]


def test_kill_9_controller_and_another_finishes_each_job_exactly_once(fleet):
    srv, _key, client = fleet
    first = _managed(srv, "node-a", "--slots", "2")
    res = client.submit_batch([_job("__sleep_2__") for _ in range(4)], compute_target="managed")
    ids = [j["job_id"] for j in res["jobs"]]
    _wait_for(lambda: _states(client, ids).count("running") == 4, what="jobs claimed")
    first.kill()  # kill -9: no goodbye, no release
    first.wait()
    _managed(srv, "node-b", "--slots", "2")
    records = client.wait_jobs(ids, timeout=120)
    assert all(r["state"] == "done" for r in records)
    for job_id in ids:
        job = client.get_job(job_id)
        assert job["attempts"] == 2 and job["controller"] == "node-b"
        assert [e["error_type"] for e in job["attempt_errors"]] == ["lost"]
    assert srv.controller_log("node-b").count("event=finished") == 4


def test_a_restarted_controller_ends_its_predecessors_leases_at_once(tmp_path):
    """kill -9, then the same controller (same name and token) starts again: its registration
    holds no lease, so the dead process's jobs go back to the queue at once. The lease here is
    ten minutes: without that, wait_jobs would time out long before it ran out."""
    srv = start_server(tmp_path / "srv", env_extra={**FAST_LEASES,
                                                    "ATOMIVERSE_LEASE_SECONDS": "600"})
    client = atomiverse.Client(api_key=srv.new_workspace("w"), base_url=srv.url)
    try:
        first = _managed(srv, "node-a", "--slots", "2")
        res = client.submit_batch([_job("__sleep_2__") for _ in range(4)],
                                  compute_target="managed")
        ids = [j["job_id"] for j in res["jobs"]]
        _wait_for(lambda: _states(client, ids).count("running") == 4, what="jobs claimed")
        first.kill()
        first.wait()
        srv.start_controller(None, "node-a", "--engine", "instant", "--slots", "2",
                             wait=False)
        records = client.wait_jobs(ids, timeout=60)
        assert [r["state"] for r in records] == ["done"] * 4
        for job_id in ids:
            job = client.get_job(job_id)
            assert job["attempts"] == 2
            (lost,) = job["attempt_errors"]
            assert lost["error_type"] == "lost" and "restarted" in lost["error"], lost
    finally:
        client.close()
        for c in srv.controllers:
            if c.poll() is None:
                c.kill()
                c.wait()
        stop_process(srv.proc)


def test_lost_too_many_times_fails_with_a_message_saying_so(tmp_path):
    srv = start_server(tmp_path / "srv", env_extra={**FAST_LEASES,
                                                    "ATOMIVERSE_MAX_ATTEMPTS": "1"})
    client = atomiverse.Client(api_key=srv.new_workspace("w"), base_url=srv.url)
    try:
        proc = _managed(srv, "doomed")
        (entry,) = client.submit_batch([_job("__sleep_30__")], compute_target="managed")["jobs"]
        _wait_for(lambda: client.get_job(entry["job_id"])["state"] == "running")
        proc.kill()
        proc.wait()
        (rec,) = client.wait_jobs([entry["job_id"]], timeout=60)
        assert rec["state"] == "failed"
        assert "lost 1 times" in rec["error"] and "max attempts 1" in rec["error"]
    finally:
        client.close()
        stop_process(srv.proc)


def test_native_crash_fails_only_that_job_and_the_controller_goes_on(fleet):
    srv, _key, client = fleet
    proc = _managed(srv, "crashy", "--slots", "1")
    res = client.submit_batch([_job("__crash_segfault__"), _job("__crash_abort__"),
                               _job("fine")], compute_target="managed")
    recs = client.wait_jobs([j["job_id"] for j in res["jobs"]], timeout=60)
    assert [r["state"] for r in recs] == ["failed", "failed", "done"]
    assert "SIGSEGV" in recs[0]["error"] and "SIGABRT" in recs[1]["error"]
    assert client.get_job(recs[0]["job_id"])["attempts"] == 1  # a crash is not retried
    assert proc.poll() is None


def test_walltime_kills_the_worker(fleet):
    srv, _key, client = fleet
    _managed(srv, "timed", "--slots", "1")
    res = client.submit_batch([_job("__sleep_20__", walltime_seconds=1), _job("after")],
                              compute_target="managed")
    recs = client.wait_jobs([j["job_id"] for j in res["jobs"]], timeout=60)
    assert recs[0]["state"] == "failed" and "exceeded walltime of 1 s" in recs[0]["error"]
    assert recs[1]["state"] == "done"


def test_server_down_mid_batch_every_result_delivered_once(fleet):
    srv, _key, client = fleet
    _managed(srv, "patient", "--slots", "2")
    res = client.submit_batch([_job("__sleep_1__") for _ in range(6)], compute_target="managed")
    ids = [j["job_id"] for j in res["jobs"]]
    _wait_for(lambda: "running" in _states(client, ids), what="work started")
    srv.proc.kill()  # the server dies; the controller keeps computing into its spool
    srv.proc.wait()
    _wait_for(lambda: srv.controller_log("patient").count("event=finished") == 6,
              what="all computed while the server was down")
    assert list((srv.home / "spool-patient").glob("*.json"))  # results wait on disk
    restart_server(srv)
    records = client.wait_jobs(ids, timeout=60)
    assert all(r["state"] == "done" for r in records)
    # The results went through the spool's files intact: the instant engine's water.
    assert all(r["result"]["energy_hartree"] == -0.5 * (8 + 1 + 1) and
               r["result"]["gradient_hartree_per_bohr"] == [[0.0] * 3] * 3 for r in records)
    assert all(client.get_job(j)["attempts"] == 1 for j in ids)  # none computed twice
    _wait_for(lambda: not list((srv.home / "spool-patient").glob("*.json")),
              what="spool emptied")


def test_sigterm_busy_controller_finishes_running_hands_back_the_rest(fleet):
    srv, _key, client = fleet
    port = free_port()
    metrics = f"http://127.0.0.1:{port}/metrics"
    proc = _managed(srv, "worker-1", "--slots", "2", "--grace-seconds", "30",
                    "--metrics-port", str(port))
    res = client.submit_batch([_job("__sleep_2__") for _ in range(6)], compute_target="managed")
    ids = [j["job_id"] for j in res["jobs"]]
    _wait_for(lambda: srv.controller_log("worker-1").count("event=claimed") >= 6,
              what="claims")
    # Claimed is not started: a signal between the two rightly hands all six back, so wait
    # until the controller itself says two are running in workers.
    _wait_for(lambda: metric_value(metrics, "atomiverse_controller_running") == 2,
              what="two jobs running")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    log = srv.controller_log("worker-1")
    assert "shutdown=warm" in log and "event=released" in log
    finished_by_first = log.count("event=finished")
    assert finished_by_first >= 2
    states = _states(client, ids)
    assert states.count("done") == finished_by_first and "running" not in states
    _managed(srv, "worker-2", "--slots", "2")
    records = client.wait_jobs(ids, timeout=60)
    assert all(r["state"] == "done" for r in records)
    assert all(client.get_job(j)["attempts"] == 1 for j in ids)


def test_second_signal_hands_everything_back_at_once(fleet):
    srv, _key, client = fleet
    port = free_port()
    metrics = f"http://127.0.0.1:{port}/metrics"
    proc = _managed(srv, "impatient", "--slots", "1", "--grace-seconds", "120",
                    "--metrics-port", str(port))
    (entry,) = client.submit_batch([_job("__sleep_60__")], compute_target="managed")["jobs"]
    _wait_for(lambda: client.get_job(entry["job_id"])["state"] == "running")
    # Running in a worker, as the controller itself says (claimed is not started).
    _wait_for(lambda: metric_value(metrics, "atomiverse_controller_running") == 1,
              what="the job running in a worker")
    proc.send_signal(signal.SIGTERM)
    _wait_for(lambda: "shutdown=warm" in srv.controller_log("impatient"),
              what="the first signal handled (warm)")
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    assert "shutdown=cold" in srv.controller_log("impatient")
    job = client.get_job(entry["job_id"])
    assert job["state"] == "pending" and job["attempts"] == 0


def test_drain_from_outside(fleet):
    srv, key, _client = fleet
    proc = srv.start_controller(key, "lab-box", "--engine", "instant", "--slots", "1")
    out = subprocess.run([sys.executable, "-m", "atomiverse_controller", "drain", "lab-box",
                          "--server", srv.url, "--api-key", key], capture_output=True,
                         text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert proc.wait(30) == 0
    listed = {c["name"]: c for c in httpx.get(f"{srv.url}/api/v1/controllers", headers={
        "Authorization": f"Bearer {key}"}).json()["controllers"]}
    assert listed["lab-box"]["status"] == "offline"


def test_late_report_after_lease_expiry_changes_nothing(fleet):
    srv, key, client = fleet
    h = {"Authorization": f"Bearer {key}"}
    reg = httpx.post(f"{srv.url}/api/v1/controllers/register", headers=h, json={
        "name": "slowpoke", "slots": 1, "engines": {"instant": "0"}}).json()
    th = {"Authorization": f"Bearer {reg['token']}"}
    (entry,) = client.submit_batch([_job("late")], compute_target="slowpoke")["jobs"]
    (claimed,) = httpx.post(f"{srv.url}/api/v1/controllers/claim", headers=th,
                            json={"max_jobs": 1, "wait_seconds": 0}).json()["jobs"]
    # No heartbeat: after the lease (4 s) the sweep takes the job back.
    _wait_for(lambda: client.get_job(entry["job_id"])["state"] == "pending", timeout=30)
    report = {"job_id": claimed["job_id"], "lease_id": claimed["lease_id"], "ok": True,
              "result": {"energy_hartree": -1.0}}
    out = httpx.post(f"{srv.url}/api/v1/controllers/complete", headers=th,
                     json={"reports": [report]}).json()
    assert out == {"accepted": [], "rejected": [entry["job_id"]]}
    assert client.get_job(entry["job_id"])["state"] == "pending"
    # A fresh claim gets a new lease; reporting twice is accepted once.
    (again,) = httpx.post(f"{srv.url}/api/v1/controllers/claim", headers=th,
                          json={"max_jobs": 1, "wait_seconds": 0}).json()["jobs"]
    report = {**report, "lease_id": again["lease_id"]}
    first = httpx.post(f"{srv.url}/api/v1/controllers/complete", headers=th,
                       json={"reports": [report, report]}).json()
    assert first["accepted"] == [entry["job_id"]] and first["rejected"] == [entry["job_id"]]


def test_metrics_endpoints(fleet):
    srv, _key, client = fleet
    _managed(srv, "metered", "--slots", "1", "--metrics-port", "0")
    client.wait_jobs([client.submit_batch([_job("m")], compute_target="managed")["jobs"][0]
                      ["job_id"]], timeout=60)
    text = httpx.get(f"{srv.url}/metrics").text
    assert 'atomiverse_jobs{state="done"}' in text
    assert "atomiverse_jobs_claimed_total" in text and "atomiverse_claim_seconds" in text
    assert 'atomiverse_controller_slots_total{kind="slots"}' in text
    # Controller names are tenant data: only for a credential that may see them
    # (tests/security/test_metrics_scope.py).
    assert 'controller="metered"' not in text


def test_short_jobs_are_staged_and_each_runs_once(fleet):
    """Instant jobs are short: once one has finished, the next go to a worker's socket behind
    its running one. Every job still runs exactly once, in its first attempt."""
    srv, _key, client = fleet
    port = free_port()
    _managed(srv, "stager", "--slots", "2", "--metrics-port", str(port))
    res = client.submit_batch([_job(f"s{i}") for i in range(60)], compute_target="managed")
    ids = [j["job_id"] for j in res["jobs"]]
    records = client.wait_jobs(ids, timeout=60)
    assert all(r["state"] == "done" for r in records)
    assert all(client.get_job(j)["attempts"] == 1 for j in ids)
    log = srv.controller_log("stager")
    assert sorted(re.findall(r"event=finished controller=\S+ job=(\S+)", log)) == sorted(ids)
    assert metric_value(f"http://127.0.0.1:{port}/metrics",
                  "atomiverse_controller_jobs_staged_total") > 0


def test_wait_coalesces_a_wave_but_answers_when_its_last_job_is_done(fleet):
    """coalesce_seconds holds the answer for the rest of the wave, not for the whole window.
    Two waits are parked: "wave" on jobs A and B (a 5-second window), "window" on A and a job
    that never finishes (a 4-second window). A finishing opens both windows; B finishes just
    after, and "wave" answers then, before "window" answers at the end of its window. Had
    "wave" waited out its own window, which opened at the same moment and is 1 s longer, it
    would answer second. (The server's own windows are the clock: no wall time asserted.)"""
    srv, key, client = fleet
    # No controller serves the managed pool: the jobs stay pending until cancelled.
    res = client.submit_batch([_job(f"w{i}") for i in range(3)], compute_target="managed")
    a, b, never = (j["job_id"] for j in res["jobs"])
    answers: list[tuple[str, httpx.Response]] = []

    def wait(which: str, job_ids: list[str], coalesce_seconds: float) -> None:
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"},
                          timeout=60) as http:
            answers.append((which, http.post("/api/v1/jobs/wait", json={
                "job_ids": job_ids, "timeout_seconds": 30,
                "coalesce_seconds": coalesce_seconds})))

    threads = [threading.Thread(target=wait, args=("wave", [a, b], 5)),
               threading.Thread(target=wait, args=("window", [a, never], 4))]
    for t in threads:
        t.start()
    wait_parked(srv.url, "atomiverse_parked_waits", 2)
    client.cancel_job(a)
    # Both woke for A and are parked again, holding their windows; only then B finishes (in
    # one wake-up with A, "wave" would have nothing left to hold for).
    wait_parked(srv.url, "atomiverse_parked_waits", 2)
    client.cancel_job(b)
    for t in threads:
        t.join(60)
    assert [which for which, _ in answers] == ["wave", "window"], \
        "the answer waited out its window instead of answering when its last job was done"
    wave, window = ({j["job_id"]: j["state"] for j in r.json()["jobs"]} for _, r in answers)
    assert wave == {a: "cancelled", b: "cancelled"}  # one answer, both
    assert window == {a: "cancelled", never: "pending"}
