"""End to end on the embedded default: SDK -> embedded server -> local controller -> xtb,
energies checked against xtb-python called directly on the same geometry."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import atomiverse
import numpy as np
import pytest
from atomiverse.levels import GFN2_XTB
from conftest import ROOT, xtb_reference
from embeddedhome import embedded_env

TOL_HARTREE = 1e-6


def test_spec_batch_example_as_written(embedded_home, capsys):
    # Verbatim from sdk-batch-submission.txt, including the placeholder key, which the
    # embedded default does not need.
    atomiverse.configure(api_key="av_...")
    molecules = [atomiverse.Atoms.from_smiles(s) for s in ["O", "CCO", "CCN"]]
    jobs = [atomiverse.SinglePointEnergy(atoms=mol, level_of_theory=GFN2_XTB)
            for mol in molecules]
    payloads = [job.model_dump() for job in jobs]
    result = atomiverse.submit_batch(payloads)
    print(f"{result['submitted']}/{result['total']} submitted, "
          f"{result['failed']} failed, {result['cache_hits']} cache hits")
    for jr in result["jobs"]:
        if jr["status"] == "submitted":
            print(f"Job {jr['job_id']}: {jr['state']}")
        else:
            print(f"Failed: {jr['error']}")
    # Another test in the session may have computed one of these: then it is a cache hit.
    out = capsys.readouterr().out
    assert f"3/3 submitted, 0 failed, {result['cache_hits']} cache hits" in out
    assert out.count("Job ") == 3 - result["cache_hits"]
    assert set(result) == {"total", "submitted", "failed", "cache_hits", "jobs"}

    from atomiverse.state import State  # noqa: F401  (as the spec's polling loop does)

    job_ids = [j["job_id"] for j in result["jobs"] if j["job_id"]]
    records = atomiverse.wait_jobs(job_ids, timeout=120)
    for mol, rec in zip(molecules, records):
        assert rec["state"] == "done", rec
        status = atomiverse._client_jobs.status(rec["job_id"])
        assert status["state"] == "done"
        assert status["compute_target"] == "managed"
        expected = xtb_reference(mol.numbers, mol.positions)
        assert abs(status["result"]["energy_hartree"] - expected) < TOL_HARTREE


def test_a_fresh_homes_first_batch_is_stored_for_its_engine(tmp_path):
    """A script's first batch on a home whose server has only just started: the SDK waits
    for the local controller to say its engines, so the jobs get their cache keys (the same
    job sent again is a cache hit) and a conformer search its screen setting."""
    with embedded_env(tmp_path / "home"):
        client = atomiverse.get_default_client()
        ethanol = atomiverse.Atoms.from_smiles("CCO")
        point = atomiverse.SinglePointEnergy(atoms=ethanol, level_of_theory=GFN2_XTB)
        search = atomiverse.ConformerSearch(atoms=ethanol, level_of_theory=GFN2_XTB,
                                            n_candidates=4)
        first = client.submit_batch([point, search])
        assert first["submitted"] == 2 and first["cache_hits"] == 0, first
        point_id, search_id = (j["job_id"] for j in first["jobs"])
        client.cancel_job(search_id)
        assert client.get_job(search_id)["job"]["screen"] is not None  # settled
        (done,) = client.wait_jobs([point_id], timeout=120)
        assert done["state"] == "done", done
        again = client.submit_batch([point])
        assert again["jobs"][0]["status"] == "cache_hit", again
        assert again["jobs"][0]["cached_from"] == point_id


def test_local_target_single_point_fields(embedded_home):
    atomiverse.configure()
    mol = atomiverse.Atoms.from_smiles("CC(=O)Nc1ccc(O)cc1")
    job = atomiverse.SinglePointEnergy(atoms=mol, level_of_theory=GFN2_XTB, name="paracetamol")
    job.submit(wait=True, compute_target="local", timeout=120)
    assert job.state == atomiverse.State.DONE
    r = job.result
    assert abs(r["energy_hartree"] - xtb_reference(mol.numbers, mol.positions)) < TOL_HARTREE
    assert len(r["gradient_hartree_per_bohr"]) == len(mol)
    assert len(r["partial_charges_e"]) == len(mol)
    assert abs(sum(r["partial_charges_e"])) < 1e-6
    assert 0 < r["homo_lumo_gap_ev"] < 20
    assert len(r["dipole_au"]) == 3
    assert r["engine"] and r["engine_version"]
    assert r["wall_time_seconds"] > 0 and r["core_seconds"] > 0
    record = job.record
    assert record["compute_target"].startswith("local-")
    assert record["controller"] == record["compute_target"]


def test_optimisation_goes_downhill_to_a_converged_minimum(embedded_home):
    from ase.units import Bohr, Hartree

    atomiverse.configure()
    mol = atomiverse.Atoms.from_smiles("CCO")
    job = atomiverse.GeometryOptimization(atoms=mol, level_of_theory=GFN2_XTB)
    job.submit(wait=True, compute_target="local", timeout=120)
    r = job.result
    assert job.state == atomiverse.State.DONE and r["converged"] is True
    start = xtb_reference(mol.numbers, mol.positions)
    final = xtb_reference(mol.numbers, r["final_positions_angstrom"])
    assert r["energy_hartree"] < start
    assert abs(r["energy_hartree"] - final) < TOL_HARTREE
    assert r["energies_hartree"][-1] == pytest.approx(r["energy_hartree"], abs=TOL_HARTREE)
    assert r["n_steps"] >= 1 and len(r["energies_hartree"]) >= 1
    forces = -np.array(r["gradient_hartree_per_bohr"]) * Hartree / Bohr
    assert np.linalg.norm(forces, axis=1).max() < job.fmax
    assert r["fmax_ev_per_angstrom"] < job.fmax


def test_bad_entries_fail_alone(embedded_home):
    atomiverse.configure()
    good = atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles("O"),
                                        level_of_theory=GFN2_XTB,
                                        use_cache=False).model_dump(mode="json")
    bad_type = {**good, "job_type": "frequencies_please"}
    no_atoms = {k: v for k, v in good.items() if k != "atoms"}
    bad_level = {**good, "level_of_theory": {"method": "b3lyp"}}
    result = atomiverse.submit_batch([good, bad_type, no_atoms, bad_level, good],
                                     compute_target="local")
    statuses = [j["status"] for j in result["jobs"]]
    assert statuses == ["submitted", "failed", "failed", "failed", "submitted"]
    errors = [j["error"] for j in result["jobs"] if j["status"] == "failed"]
    assert errors[0].startswith("Invalid job payload: job_type:")
    assert errors[1].startswith("Invalid job payload: atoms:")
    assert errors[2].startswith("Invalid job payload: level_of_theory.method:")
    assert result["submitted"] == 2 and result["failed"] == 3
    records = atomiverse.wait_jobs([j["job_id"] for j in result["jobs"] if j["job_id"]],
                                   timeout=120)
    assert [r["state"] for r in records] == ["done", "done"]


def test_cli_run_on_the_shipped_example(embedded_home, tmp_path):
    out = tmp_path / "results.jsonl"
    env = {**os.environ, "ATOMIVERSE_HOME": str(embedded_home)}
    proc = subprocess.run([sys.executable, "-m", "atomiverse.cli", "run",
                           str(ROOT / "examples" / "molecules.smi"), "-o", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "ethanol" in proc.stdout and "Hartree" in proc.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and all(r["state"] == "done" for r in rows)
    for row in rows:
        mol = atomiverse.Atoms.from_smiles(row["input"])
        assert abs(row["energy_hartree"] - xtb_reference(mol.numbers, mol.positions)) < 1e-6


def test_cli_run_opt_writes_geometries(embedded_home, tmp_path):
    smi = tmp_path / "two.smi"
    smi.write_text("O water\nnot_a_smiles broken\nCO methanol\n")
    out = tmp_path / "two.csv"
    env = {**os.environ, "ATOMIVERSE_HOME": str(embedded_home)}
    proc = subprocess.run([sys.executable, "-m", "atomiverse.cli", "run", str(smi), "--job",
                           "opt", "-o", str(out)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 1  # one molecule could not be read
    assert "invalid SMILES: 'not_a_smiles'" in proc.stdout
    lines = out.read_text().splitlines()
    assert lines[0].startswith("name,input,formula") and len(lines) == 4
    frames = atomiverse.atoms.read_xyz_frames(out.with_suffix(".xyz"))
    assert [f.formula for f in frames] == ["H2O", "CH4O"]
