"""The job API against a real server process (not embedded) and real controller processes."""

from __future__ import annotations

import signal
import threading
from typing import Any

import atomiverse
import httpx2 as httpx
import pytest
from atomiverse.levels import GFN2_XTB
from conftest import start_server, stop_process, wait_parked, xtb_reference


def _water(name=None):
    return atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles("O"),
                                        level_of_theory=GFN2_XTB, name=name, use_cache=False)


def test_missing_or_wrong_key_is_401(server):
    r = httpx.post(f"{server.url}/api/v1/jobs/submit-batch", json={"jobs": []})
    assert r.status_code == 401 and "API key" in r.json()["detail"]
    bad = atomiverse.Client(api_key="av_wrong", base_url=server.url)
    with pytest.raises(atomiverse.AuthenticationError) as exc:
        bad.submit_batch([_water().model_dump()], compute_target="x")
    assert exc.value.status_code == 401 and "Invalid" in exc.value.message
    bad.close()


def test_named_controller_runs_real_xtb(client, alpha_controller):
    mols = [atomiverse.Atoms.from_smiles(s) for s in ["O", "CCO", "CCN", "c1ccccc1"]]
    payloads = [atomiverse.SinglePointEnergy(atoms=m, level_of_theory=GFN2_XTB,
                                             use_cache=False).model_dump()
                for m in mols]
    res = client.submit_batch(payloads, compute_target=alpha_controller)
    assert res["submitted"] == 4
    records = client.wait_jobs([j["job_id"] for j in res["jobs"]], timeout=120)
    for m, rec in zip(mols, records):
        assert rec["state"] == "done"
        assert abs(rec["result"]["energy_hartree"] - xtb_reference(m.numbers, m.positions)) \
            < 1e-6
    full = client.get_job(records[0]["job_id"])
    assert full["controller"] == alpha_controller and full["attempts"] == 1
    assert full["started_at"] and full["finished_at"]


def test_per_entry_targets_and_routing_errors(client, alpha_controller):
    job = _water().model_dump()
    res = client.submit_batch([
        {"job": job, "compute_target": alpha_controller},
        {"job": job, "compute_target": "no-such-box"},
        {"job": job},  # managed: disabled on a self-hosted server by default
        {"job": job, "compute_target": "managed"},
    ])
    assert [j["status"] for j in res["jobs"]] == ["submitted", "failed", "failed", "failed"]
    assert "no-such-box" in res["jobs"][1]["error"]
    assert res["jobs"][2]["error"].startswith("Managed compute disabled")
    assert res["jobs"][3]["error"].startswith("Managed compute disabled")


def test_single_job_submit_and_bad_payload(client, alpha_controller):
    rec = client.submit_job(_water("one").model_dump(), compute_target=alpha_controller)
    assert rec["state"] in ("pending", "running", "done") and rec["name"] == "one"
    with pytest.raises(atomiverse.UnprocessableEntityError) as exc:
        client.submit_job({"job_type": "opt"}, compute_target=alpha_controller)
    assert exc.value.status_code == 422 and "atoms" in exc.value.message


def test_malformed_requests_are_4xx(server, workspace_key):
    h = {"Authorization": f"Bearer {workspace_key}"}
    r = httpx.post(f"{server.url}/api/v1/jobs/submit-batch", content=b"{not json", headers={
        **h, "Content-Type": "application/json"})
    assert r.status_code == 422
    r = httpx.post(f"{server.url}/api/v1/jobs/submit-batch", json={"jobs": "nope"}, headers=h)
    assert r.status_code == 422 and r.json()["detail"].startswith("jobs:")
    r = httpx.get(f"{server.url}/api/v1/jobs/not-a-job", headers=h)
    assert r.status_code == 404


def test_controller_token_cannot_be_used_as_api_key(server, workspace_key, alpha_controller):
    token = (server.home / f"{alpha_controller}.token").read_text()
    r = httpx.get(f"{server.url}/api/v1/jobs", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    r = httpx.post(f"{server.url}/api/v1/controllers/claim", json={"max_jobs": 1},
                   headers={"Authorization": f"Bearer {workspace_key}"})
    assert r.status_code == 401
    assert oct((server.home / f"{alpha_controller}.token").stat().st_mode & 0o777) == "0o600"


def _register(url, key, name):
    return httpx.post(f"{url}/api/v1/controllers/register",
                      headers={"Authorization": f"Bearer {key}"},
                      json={"name": name, "slots": 1, "cores_per_job": 1, "capacity": None,
                            "engines": {"xtb": "6.5.1"}, "hostname": "test"}).json()


def test_shutdown_answers_parked_long_polls(tmp_path):
    """SIGTERM with a claim and a wait long-poll parked: both get their answer, the server
    exits cleanly, and nothing is cancelled mid-request. (Before, the polls held shutdown for
    its grace period and uvicorn then cancelled them with a traceback.)"""
    srv = start_server(tmp_path / "srv")
    try:
        key = srv.new_workspace("w")
        _register(srv.url, key, "offline-box")  # the job's controller: never claims
        idle = _register(srv.url, key, "idle-box")  # parks in a claim: nothing for it
        with atomiverse.Client(api_key=key, base_url=srv.url) as client:
            (entry,) = client.submit_batch([_water().model_dump()],
                                           compute_target="offline-box")["jobs"]
        answers: dict[str, Any] = {}

        def poll(name, path, token, body):
            try:
                answers[name] = httpx.post(f"{srv.url}{path}", json=body, timeout=120,
                                           headers={"Authorization": f"Bearer {token}"})
            except httpx.HTTPError as e:
                answers[name] = e

        threads = [threading.Thread(target=poll, args=(
                       "wait", "/api/v1/jobs/wait", key,
                       {"job_ids": [entry["job_id"]], "timeout_seconds": 60})),
                   threading.Thread(target=poll, args=(
                       "claim", "/api/v1/controllers/claim", idle["token"],
                       {"max_jobs": 1, "wait_seconds": 60}))]
        for t in threads:
            t.start()
        wait_parked(srv.url, "atomiverse_parked_waits")
        wait_parked(srv.url, "atomiverse_parked_claims")  # both parked, nothing to answer yet
        assert not answers, answers
        srv.proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal it handled once it has shut down cleanly
        assert srv.proc.wait(60) == -signal.SIGTERM
        for t in threads:
            t.join(60)
    finally:
        stop_process(srv.proc)
    assert answers["wait"].status_code == 200, answers["wait"]
    assert answers["wait"].json()["jobs"] == [{"job_id": entry["job_id"], "state": "pending"}]
    assert answers["claim"].status_code == 200, answers["claim"]
    assert answers["claim"].json()["jobs"] == []
    log = (srv.home / "server.log").read_text()
    assert "CancelledError" not in log and "Cancel " not in log, log[-2000:]
