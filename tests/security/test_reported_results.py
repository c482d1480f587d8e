"""Finding: results from controllers were not validated. A wrong type in one result made the
job's pages answer 500; a bad item made ``/complete`` answer 500 and roll back the whole batch,
and the reporter retried that forever. Now each result is checked against its job type's
result model: a bad one fails its job naming the field, the rest of the batch is stored, and
the reporter sets a refused report aside and delivers the others. Real server process, real
engine results, the controller's own reporter and HTTP client."""

from __future__ import annotations

import json
import re
import time

import atomiverse
import httpx2 as httpx
import pytest
from atomiverse.levels import GFN2_XTB
from atomiverse_controller.api import ControllerAPI
from atomiverse_controller.engines import available_engines, default_engine_name, get_engine
from atomiverse_controller.reporter import ReportLoop
from atomiverse_controller.spool import Spool
from conftest import xtb_reference

from bench.bad_inputs import BAD_RESULTS

WATER = atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles("O"),
                                     level_of_theory=GFN2_XTB, use_cache=False)


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def claimed(server):
    """A fresh workspace, a controller registered over HTTP, and n of its jobs claimed."""
    key = server.new_workspace(f"results-{time.monotonic_ns()}")
    name = "result-checker"
    r = httpx.post(f"{server.url}/api/v1/controllers/register", headers=_bearer(key),
                   json={"name": name, "slots": 1, "cores_per_job": 1, "capacity": None,
                         "engines": available_engines(), "hostname": "test"})
    r.raise_for_status()
    token = r.json()["token"]

    def claim(n: int) -> list[dict]:
        r = httpx.post(f"{server.url}/api/v1/jobs/submit-batch", headers=_bearer(key),
                       json={"jobs": [{"job": WATER.model_dump(), "compute_target": name}] * n})
        assert r.status_code == 200 and r.json()["submitted"] == n, r.text
        jobs: list[dict] = []
        while len(jobs) < n:
            jobs += httpx.post(f"{server.url}/api/v1/controllers/claim", headers=_bearer(token),
                               json={"max_jobs": n - len(jobs), "wait_seconds": 5},
                               timeout=30).json()["jobs"]
        return jobs

    return key, token, claim


def _real_result(claimed_job: dict) -> dict:
    return get_engine(default_engine_name()).compute(claimed_job["job"])


def _job(server, key: str, job_id: str) -> dict:
    r = httpx.get(f"{server.url}/api/v1/jobs/{job_id}", headers=_bearer(key))
    assert r.status_code == 200, r.text[:300]
    return r.json()


def test_a_bad_result_fails_its_job_alone(server, claimed):
    key, token, claim = claimed
    good, *bad = claim(1 + len(BAD_RESULTS))
    result = _real_result(good)
    reports = [{"job_id": good["job_id"], "lease_id": good["lease_id"], "ok": True,
                "result": result}]
    for job, (changes, _field) in zip(bad, BAD_RESULTS.values(), strict=True):
        changed = {k: v for k, v in {**result, **changes}.items() if v is not None}
        reports.append({"job_id": job["job_id"], "lease_id": job["lease_id"], "ok": True,
                        "result": changed})
    r = httpx.post(f"{server.url}/api/v1/controllers/complete", headers={
        **_bearer(token), "Content-Type": "application/json"},
        content=json.dumps({"reports": reports}, allow_nan=True), timeout=30)
    assert r.status_code == 200, r.text[:300]
    assert sorted(r.json()["accepted"]) == sorted(rep["job_id"] for rep in reports)

    stored = _job(server, key, good["job_id"])
    assert stored["state"] == "done"
    assert stored["result"]["energy_hartree"] == pytest.approx(
        xtb_reference(WATER.atoms.numbers, WATER.atoms.positions), abs=1e-6)
    for job, (name, (_changes, field)) in zip(bad, BAD_RESULTS.items(), strict=True):
        failed = _job(server, key, job["job_id"])
        assert failed["state"] == "failed", (name, failed)
        assert failed["error"].startswith("The controller reported an invalid result: "
                                          f"{field}"), (name, failed["error"])
    wrong_energy = bad[0]

    # The dashboard shows the failed job (it answered 500 for a stored bad result).
    signin = httpx.post(f"{server.url}/signin", data={"api_key": key, "next": "/jobs"})
    cookies = signin.history[0].cookies if signin.history else signin.cookies
    page = httpx.get(f"{server.url}/job", params={"job_id": wrong_energy["job_id"]},
                     cookies=cookies)
    assert page.status_code == 200
    assert re.search("invalid result", page.text)


def test_the_reporter_delivers_the_rest_when_one_report_is_refused(server, claimed, tmp_path):
    key, token, claim = claimed
    good, other = claim(2)
    api = ControllerAPI(server.url)
    api.token = token
    loop = ReportLoop(api, name="result-checker", spool=Spool(tmp_path / "spool"))
    loop.put({"job_id": other["job_id"], "lease_id": other["lease_id"], "ok": False,
              "error": "made up", "error_type": "no such type"})  # the server answers 422
    loop.put({"job_id": good["job_id"], "lease_id": good["lease_id"], "ok": True,
              "result": _real_result(good)})
    loop.start()
    loop.close()  # it ends once both reports are delivered or given up
    try:
        loop.join(timeout=60)
        assert not loop.is_alive(), "the reporter is still trying to send a refused report"
    finally:
        api.close()
    assert loop.delivered == 1
    assert _job(server, key, good["job_id"])["state"] == "done"
    assert _job(server, key, other["job_id"])["state"] == "running"  # its lease will run out
