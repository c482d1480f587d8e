"""``POST /api/v1/jobs/run`` (submit one job and wait for it in the same request) and
``Client.run_job``, which the ASE calculator calls: one request a calculation (issue 28,
item 2's overhead), the record as it is when the wait runs out, and the submission's own rules
(authentication, validation, body limit)."""

from __future__ import annotations

from typing import Any

import atomiverse
import httpx2 as httpx
import pytest
from ase.units import Hartree
from atomiverse.levels import GFN2_XTB
from conftest import xtb_reference

pytestmark = pytest.mark.timeout(180)


def _payload(smiles: str = "CCO", **kw: Any) -> dict[str, Any]:
    return atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles(smiles),
                                        level_of_theory=GFN2_XTB, **kw).model_dump(mode="json")


def test_the_calculator_makes_one_request_a_calculation(server, workspace_key,
                                                        alpha_controller):
    import ase
    from atomiverse.ase import AtomiverseCalculator

    client = atomiverse.Client(api_key=workspace_key, base_url=server.url)
    try:
        client.request("GET", "/api/v1/account")  # opens the connection to hook into
        sent: list[str] = []
        client._http.event_hooks["request"].append(
            lambda r: sent.append(f"{r.method} {r.url.path}"))
        a = atomiverse.Atoms.from_smiles("CCO")
        molecule = ase.Atoms(numbers=a.numbers, positions=a.positions)
        molecule.calc = AtomiverseCalculator(GFN2_XTB, alpha_controller, client=client,
                                             use_cache=False)
        energy = molecule.get_potential_energy()
        assert sent == ["POST /api/v1/jobs/run"]
        assert energy / Hartree == pytest.approx(
            xtb_reference(molecule.numbers, molecule.positions), abs=1e-6)
        assert molecule.calc.last_record["state"] == "done"
    finally:
        client.close()


def test_run_answers_when_its_wait_runs_out_and_the_client_waits_on(server, workspace_key):
    headers = {"Authorization": f"Bearer {workspace_key}"}
    r = httpx.post(f"{server.url}/api/v1/controllers/register", headers=headers,
                   json={"name": "run-parked", "slots": 1, "engines": {"xtb": "22.1"}})
    assert r.status_code == 200, r.text  # a controller with no process: its jobs wait
    r = httpx.post(f"{server.url}/api/v1/jobs/run", headers=headers,
                   params={"timeout_seconds": 0.3},
                   json={"job": _payload(name="parked run", use_cache=False),
                         "compute_target": "run-parked"})
    assert r.status_code == 201, r.text
    record = r.json()
    assert record["state"] == "pending" and record["name"] == "parked run"
    client = atomiverse.Client(api_key=workspace_key, base_url=server.url)
    try:
        with pytest.raises(TimeoutError, match="not finished"):
            client.run_job(_payload(name="parked run 2", use_cache=False),
                           compute_target="run-parked", timeout=0.5)
        parked = client.list_jobs(name="parked run", state="pending").jobs
        assert {j["name"] for j in parked} == {"parked run", "parked run 2"}
        assert record["job_id"] in {j["job_id"] for j in parked}
        for job in parked:
            client.cancel_job(job["job_id"])
    finally:
        client.close()


def test_run_keeps_the_submissions_rules(server, workspace_key):
    url = f"{server.url}/api/v1/jobs/run"
    job = {"job": _payload(), "compute_target": "local"}
    assert httpx.post(url, json=job).status_code == 401
    headers = {"Authorization": f"Bearer {workspace_key}"}
    bad = {"job": {**_payload(), "atoms": {"numbers": [1], "positions": [[0, 0]]}}}
    r = httpx.post(url, headers=headers, json=bad)
    assert r.status_code == 422 and "positions" in r.text
    r = httpx.post(url, headers=headers, params={"timeout_seconds": 61}, json=job)
    assert r.status_code == 422 and "timeout_seconds" in r.text
    huge = b'{"job": {"atoms": {"numbers": [' + b"1," * 5_000_000 + b'1]}}}'
    r = httpx.post(url, headers={**headers, "Content-Type": "application/json"}, content=huge)
    assert r.status_code == 413
