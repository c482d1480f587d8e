"""Job chains (issue 27): ``GeometryOptimization(...).then(Frequencies)`` runs its steps on the
server one after another, without the client, across a server restart; a failed step fails
the chain naming it; cancelling the chain cancels its step. Real server, controller and xtb."""

from __future__ import annotations

import signal

import atomiverse
import httpx2 as httpx
import pytest
from atomiverse.levels import GFN2_XTB
from conftest import own_server, restart_server, start_server, stop_process, xtb_reference

ETHANOL = atomiverse.Atoms.from_smiles("CCO")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with own_server(tmp_path_factory.mktemp("chains"), "chains", "chain-box", "--slots", "2") as both:
        yield both


@pytest.fixture
def client(srv):
    server, key = srv
    c = atomiverse.Client(api_key=key, base_url=server.url)
    yield c
    c.close()


def _opt_then_freq(**chain_fields):
    return atomiverse.GeometryOptimization(
        atoms=ETHANOL, level_of_theory=GFN2_XTB, use_cache=False,
        **chain_fields).then(atomiverse.Frequencies, temperature_kelvin=350.0)


def _children(client, chain_id):
    return client.job_children(chain_id)


def test_a_chain_runs_its_steps_on_the_server(client):
    chain = _opt_then_freq(name="ethanol chain")
    assert isinstance(chain, atomiverse.Chain)
    submitted = client.submit_batch([chain.model_dump(mode="json")],
                                    compute_target="chain-box")["jobs"][0]
    (record,) = client.wait_jobs([submitted["job_id"]], timeout=300)
    assert record["state"] == "done", record
    result = record["result"]
    opt_id, freq_id = result["step_job_ids"]
    assert result["step_job_types"] == ["opt", "frequencies"]
    opt, freq = client.get_job(opt_id), client.get_job(freq_id)
    assert opt["parent_id"] == freq["parent_id"] == record["job_id"]
    assert opt["state"] == freq["state"] == "done"
    # The second step ran on the geometry the first one left, with its own options.
    final = opt["result"]["final_positions_angstrom"]
    assert freq["job"]["atoms"]["positions"] == final
    assert freq["job"]["temperature_kelvin"] == 350.0
    assert freq["job"]["level_of_theory"] == opt["job"]["level_of_theory"]
    # The chain's result is the last step's: checked against the engine called directly.
    assert abs(result["energy_hartree"] - xtb_reference(ETHANOL.numbers, final)) < 1e-6
    assert result["gibbs_energy_hartree"] == freq["result"]["gibbs_energy_hartree"]


def test_a_failed_step_fails_the_chain_naming_it(client):
    atoms = atomiverse.Atoms.from_smiles("CCCCCCCCCCCC")  # an optimisation of many seconds
    chain = atomiverse.GeometryOptimization(
        atoms=atoms, level_of_theory=GFN2_XTB, use_cache=False, walltime_seconds=0.05,
    ).then(atomiverse.SinglePointEnergy)
    job_id = client.submit_batch([chain.model_dump(mode="json")],
                                 compute_target="chain-box")["jobs"][0]["job_id"]
    (record,) = client.wait_jobs([job_id], timeout=300)
    assert record["state"] == "failed"
    assert record["error"].startswith("step 1 (opt) failed: "), record["error"]
    steps = _children(client, job_id)
    assert [s["state"] for s in steps] == ["failed"]  # the second step never started


def test_a_step_that_does_not_fit_is_refused_at_submission(srv, client):
    bad_option = _opt_then_freq().model_dump(mode="json")
    bad_option["steps"][1]["options"]["temperature_kelvin"] = -1
    not_a_step = _opt_then_freq().model_dump(mode="json")
    not_a_step["steps"][1] = {"job_type": "chain"}
    owned = _opt_then_freq().model_dump(mode="json")
    owned["steps"][1]["options"]["atoms"] = {}
    res = client.submit_batch([bad_option, not_a_step, owned], compute_target="chain-box")
    errors = [e["error"] for e in res["jobs"]]
    assert res["failed"] == 3, res
    assert "steps.1.temperature_kelvin: Input should be greater than 0" in errors[0]
    assert "steps.1.job_type: must be one of" in errors[1] and "'chain'" in errors[1]
    assert "steps.1.options.atoms: set by the chain" in errors[2]
    server, key = srv
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as http:
        r = http.post("/api/v1/jobs", json={"job": bad_option, "compute_target": "chain-box"})
    assert r.status_code == 422 and "steps.1.temperature_kelvin" in r.text


def test_cancelling_a_chain_cancels_its_step(srv, client):
    server, key = srv
    parked = "parked-box"  # registered, never running: its jobs stay pending
    proc = server.start_controller(key, parked)
    stop_process(proc)
    job_id = client.submit_batch([_opt_then_freq().model_dump(mode="json")],
                                 compute_target=parked)["jobs"][0]["job_id"]
    (step,) = _children(client, job_id)
    assert step["state"] == "pending"
    assert client.cancel_job(job_id)["state"] == "cancelled"
    assert client.get_job(step["job_id"])["state"] == "cancelled"


def test_a_batch_holds_chains_and_plain_jobs(client):
    water = atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles("O"),
                                         level_of_theory=GFN2_XTB, use_cache=False)
    chain = water.then(atomiverse.GeometryOptimization)
    res = client.submit_batch([chain.model_dump(mode="json"), water.model_dump(mode="json")],
                              compute_target="chain-box")
    assert res["submitted"] == 2, res
    records = client.wait_jobs([e["job_id"] for e in res["jobs"]], timeout=300)
    assert [r["state"] for r in records] == ["done", "done"]
    # A single point gives the next step its own input geometry.
    sp, opt = (client.get_job(i) for i in records[0]["result"]["step_job_ids"])
    assert opt["job"]["atoms"]["positions"] == sp["job"]["atoms"]["positions"]


@pytest.mark.slow  # a fault test: the server restarted mid-chain
def test_a_chain_survives_a_server_restart(tmp_path):
    server = start_server(tmp_path / "restart")
    key = server.new_workspace("restart")
    try:
        # The controller is down: the first step waits, pending, while the server dies.
        proc = server.start_controller(key, "late-box")
        stop_process(proc)
        with atomiverse.Client(api_key=key, base_url=server.url) as c:
            job_id = c.submit_batch([_opt_then_freq().model_dump(mode="json")],
                                    compute_target="late-box")["jobs"][0]["job_id"]
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(30)
        restart_server(server)
        server.start_controller(key, "late-box", "--slots", "2")
        with atomiverse.Client(api_key=key, base_url=server.url) as c:
            (record,) = c.wait_jobs([job_id], timeout=300)
            assert record["state"] == "done", record
            # The second step was started by the new server process, after the restart.
            assert [c.get_job(i)["state"] for i in record["result"]["step_job_ids"]] == \
                ["done", "done"]
    finally:
        for p in server.controllers:
            stop_process(p)
        stop_process(server.proc)


def test_the_dashboard_shows_a_chains_steps(srv, client):
    """The chain's page lists its steps, their states and energies; each step links back."""
    import re

    from browser import chromium

    server, key = srv
    chain = atomiverse.SinglePointEnergy(
        atoms=atomiverse.Atoms.from_smiles("CO"), level_of_theory=GFN2_XTB,
        use_cache=False).then(atomiverse.GeometryOptimization)
    job_id = client.submit_batch([chain.model_dump(mode="json")],
                                 compute_target="chain-box")["jobs"][0]["job_id"]
    (record,) = client.wait_jobs([job_id], timeout=300)
    step_ids = record["result"]["step_job_ids"]
    with chromium() as browser:
        page = browser.new_context().new_page()
        page.goto(f"{server.url}/signin")
        page.fill("#api_key", key)
        page.click("form.stack button[type=submit]")
        page.wait_for_url(re.compile(r".*/jobs$"))
        page.goto(f"{server.url}/job?job_id={job_id}")
        rows = page.locator("#steps tbody tr")
        assert rows.count() == 2
        assert [rows.nth(i).get_attribute("data-job-id") for i in range(2)] == step_ids
        assert "Single point" in rows.nth(0).inner_text()
        assert "Geometry optimisation" in rows.nth(1).inner_text()
        energy = float(rows.nth(1).locator("td.num").inner_text())
        assert abs(energy - record["result"]["energy_hartree"]) < 1e-7
        rows.nth(1).locator("a").click()
        page.wait_for_url(re.compile(rf".*job_id={step_ids[1]}$"))
        assert page.locator("#job-fields a", has_text=job_id[:12]).count() == 1
