"""QCSchema in and out (issue 28, item 1): qcelemental's models both ways, AtomicInputs in a
batch, results checked against the engine called directly and against QCEngine's xtb harness."""

from __future__ import annotations

import json

import atomiverse
import httpx2 as httpx
import numpy as np
import pytest
from atomiverse import qcschema
from atomiverse.levels import GFN2_XTB
from conftest import xtb_reference

ETHANOL = atomiverse.Atoms.from_smiles("CCO")


def _job(**kw):
    return atomiverse.SinglePointEnergy(atoms=ETHANOL, level_of_theory=GFN2_XTB,
                                        use_cache=False, **kw)


def test_a_job_goes_to_qcschema_and_back():
    job = atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles("CC(=O)[O-]"),
                                       level_of_theory=GFN2_XTB.with_solvent("water"))
    inp = qcschema.to_atomic_input(job)
    assert inp.driver == "gradient" and inp.model.method == "gfn2-xtb"
    assert inp.keywords == {"solvent": "water", "solvation_model": "alpb"}
    assert inp.molecule.molecular_charge == -1
    # QCSchema geometries are Bohr
    assert np.allclose(inp.molecule.geometry * qcschema.BOHR_ANGSTROM, job.atoms.positions,
                       atol=1e-10)
    back = qcschema.from_atomic_input(inp)
    assert back.atoms.numbers == job.atoms.numbers
    assert np.allclose(back.atoms.positions, job.atoms.positions, atol=1e-10)
    assert back.level_of_theory == job.level_of_theory and back.atoms.charge == -1


def test_atomic_inputs_run_in_a_batch_with_native_jobs(client, server, alpha_controller):
    inp = qcschema.to_atomic_input(_job(), driver="energy")
    res = client.submit_batch([inp.dict(), _job().model_dump(), inp],
                              compute_target=alpha_controller)
    assert res["submitted"] == 3, res
    waited = client.wait_jobs([e["job_id"] for e in res["jobs"]], timeout=120)
    assert [r["state"] for r in waited] == ["done"] * 3
    records = [client.get_job(r["job_id"]) for r in waited]
    # wait_jobs' short records (no input) are read again in full
    assert qcschema.to_atomic_result(waited[2], client=client).json() == \
        qcschema.to_atomic_result(records[2]).json()
    atomiverse.configure(api_key=server.new_workspace("qcschema-other"), base_url=server.url)
    try:  # the default client, of another workspace: the record is not its to read
        with pytest.raises(atomiverse.NotFoundError, match="pass client="):
            qcschema.to_atomic_result(waited[0])
    finally:
        atomiverse.configure()
    reference = xtb_reference(ETHANOL.numbers, ETHANOL.positions)
    out = qcschema.to_atomic_result(records[0], driver="energy")
    assert out.success and out.return_result == pytest.approx(reference, abs=1e-6)
    # Through Bohr and back the geometry moves by ~1e-16 Angstrom: the same energy to 1e-8
    assert out.properties.return_energy == pytest.approx(
        records[1]["result"]["energy_hartree"], abs=1e-8)
    assert out.properties.calcinfo_natom == len(ETHANOL)
    grad = qcschema.to_atomic_result(records[2])
    assert np.array_equal(grad.return_result,
                          np.array(records[2]["result"]["gradient_hartree_per_bohr"]))
    assert grad.extras["atomiverse"]["job_id"] == records[2]["job_id"]
    assert grad.extras["atomiverse"]["homo_lumo_gap_ev"] > 0


@pytest.mark.xtb_python
def test_the_numbers_are_qcengines_for_the_same_input(client, alpha_controller):
    import qcengine

    inp = qcschema.to_atomic_input(_job())
    theirs = qcengine.compute(inp, "xtb")
    assert theirs.success, theirs.error
    res = client.submit_batch([inp], compute_target=alpha_controller)
    client.wait_jobs([res["jobs"][0]["job_id"]], timeout=120)
    ours = qcschema.to_atomic_result(client.get_job(res["jobs"][0]["job_id"]))
    assert ours.properties.return_energy == pytest.approx(theirs.properties.return_energy,
                                                          abs=1e-8)
    assert np.abs(ours.return_result - theirs.return_result).max() < 1e-7


def test_what_the_platform_does_not_run_is_refused_naming_the_field(client, server,
                                                                    workspace_key,
                                                                    alpha_controller):
    good = json.loads(qcschema.to_atomic_input(_job()).json())
    cases = {"model.method": {**good, "model": {"method": "b3lyp", "basis": "def2-svp"}},
             "driver": {**good, "driver": "properties"},
             "keywords.accuracy": {**good, "keywords": {"accuracy": 0.1}}}
    res = client.submit_batch(list(cases.values()), compute_target=alpha_controller)
    assert res["failed"] == 3
    for field, entry in zip(cases, res["jobs"], strict=True):
        assert entry["error"].startswith(f"Invalid job payload: {field}: "), entry
    with httpx.Client(base_url=server.url,
                      headers={"Authorization": f"Bearer {workspace_key}"}) as http:
        r = http.post("/api/v1/jobs", json={"job": cases["driver"],
                                            "compute_target": alpha_controller})
    assert r.status_code == 422 and "driver: 'properties' is not supported" in r.text
    with pytest.raises(qcschema.QCSchemaError, match="^model.method: "):
        qcschema.from_atomic_input(cases["model.method"])


def test_a_failed_job_is_a_failed_operation(client, alpha_controller):
    slow = atomiverse.GeometryOptimization(atoms=atomiverse.Atoms.from_smiles("CCCCCCCCCC"),
                                           level_of_theory=GFN2_XTB, use_cache=False,
                                           walltime_seconds=0.05)
    res = client.submit_batch([slow.model_dump()], compute_target=alpha_controller)
    client.wait_jobs([res["jobs"][0]["job_id"]], timeout=120)
    record = client.get_job(res["jobs"][0]["job_id"])
    assert record["state"] == "failed"
    failed = qcschema.to_atomic_result(record)
    assert failed.success is False and failed.error.error_message == record["error"]


def test_an_optimisation_is_an_optimization_result(client, alpha_controller):
    opt = atomiverse.GeometryOptimization(atoms=ETHANOL, level_of_theory=GFN2_XTB,
                                          use_cache=False)
    res = client.submit_batch([opt.model_dump()], compute_target=alpha_controller)
    client.wait_jobs([res["jobs"][0]["job_id"]], timeout=120)
    record = client.get_job(res["jobs"][0]["job_id"])
    out = qcschema.to_optimization_result(record)
    assert out.success and out.energies == record["result"]["energies_hartree"]
    final = out.final_molecule.geometry * qcschema.BOHR_ANGSTROM
    assert np.allclose(final, record["result"]["final_positions_angstrom"], atol=1e-10)
    assert out.energies[-1] == pytest.approx(
        xtb_reference(ETHANOL.numbers, record["result"]["final_positions_angstrom"]), abs=1e-6)
    assert len(out.trajectory) == len(record["result"]["trajectory_steps"])
    assert out.keywords["optimizer"] == "ANC-RFO"


def test_the_hessian_driver_runs_a_hessian_job(client, alpha_controller):
    methanol = atomiverse.Atoms.from_smiles("CO")
    job = atomiverse.SinglePointEnergy(atoms=methanol, level_of_theory=GFN2_XTB,
                                       use_cache=False)
    inp = qcschema.to_atomic_input(job, driver="hessian")
    assert isinstance(qcschema.from_atomic_input(inp), atomiverse.Hessian)
    res = client.submit_batch([inp], compute_target=alpha_controller)
    client.wait_jobs([res["jobs"][0]["job_id"]], timeout=120)
    record = client.get_job(res["jobs"][0]["job_id"])
    assert record["job_type"] == "hessian"
    out = qcschema.to_atomic_result(record)
    assert out.driver == "hessian" and out.return_result.shape == (18, 18)
    assert np.array_equal(out.return_result, record["result"]["hessian_hartree_per_bohr2"])
    assert np.array_equal(out.properties.return_hessian, out.return_result)
