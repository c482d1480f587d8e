"""Records as DataFrames and files (issue 28, item 3): what is exported and read back by ASE or
pandas equals what the API returned. Real jobs on the session's server and controller."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import ase.db
import ase.io
import atomiverse
import numpy as np
import pandas as pd
import pytest
from ase.units import Bohr, Hartree
from atomiverse.levels import GFN2_XTB


@pytest.fixture(scope="module")
def records(server, workspace_key, alpha_controller):
    jobs = [atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles("CO"),
                                         level_of_theory=GFN2_XTB, name="methanol"),
            atomiverse.GeometryOptimization(atoms=atomiverse.Atoms.from_smiles("O"),
                                            level_of_theory=GFN2_XTB, name="water opt"),
            atomiverse.GeometryOptimization(atoms=atomiverse.Atoms.from_smiles("CCCCCCCC"),
                                            level_of_theory=GFN2_XTB, use_cache=False,
                                            walltime_seconds=0.05, name="too slow")]
    with atomiverse.Client(api_key=workspace_key, base_url=server.url) as c:
        res = c.submit_batch([j.model_dump() for j in jobs], compute_target=alpha_controller)
        ids = [e["job_id"] for e in res["jobs"]]
        c.wait_jobs(ids, timeout=120)
        return [c.get_job(i) for i in ids]


def test_a_dataframe_row_per_job_with_the_apis_values(records):
    df = atomiverse.to_dataframe(records)
    assert list(df["job_id"]) == [r["job_id"] for r in records]
    assert list(df["state"]) == ["done", "done", "failed"]
    assert df.loc[0, "energy_hartree"] == records[0]["result"]["energy_hartree"]
    assert df.loc[0, "homo_lumo_gap_ev"] == records[0]["result"]["homo_lumo_gap_ev"]
    dipole = np.array(records[0]["result"]["dipole_au"])
    assert df.loc[0, "dipole_debye"] == pytest.approx(np.linalg.norm(dipole) * 2.541746473)
    assert df.loc[1, "n_steps"] == records[1]["result"]["n_steps"]
    assert bool(df.loc[1, "converged"]) is True
    assert df.loc[2, "error"] == records[2]["error"] and pd.isna(df.loc[2, "energy_hartree"])
    assert str(df["finished_at"].dt.tz) == "UTC"


def test_the_short_records_of_wait_jobs_and_list_jobs_give_the_same_table(records, server,
                                                                         workspace_key):
    """What a script has in hand after following its batch is the short records: they are
    read again in full, so the table is the one get_job's records give."""
    ids = [r["job_id"] for r in records]
    with atomiverse.Client(api_key=workspace_key, base_url=server.url) as c:
        waited = c.wait_jobs(ids, timeout=60)
        listed = [j for j in c.iter_jobs(limit=100) if j["job_id"] in ids]
        assert "job" not in waited[0] and "job" not in listed[0]
        from_wait = atomiverse.to_dataframe(waited, client=c)
        from_list = atomiverse.to_dataframe(sorted(listed, key=lambda j: ids.index(j["job_id"])),
                                            client=c)
    full = atomiverse.to_dataframe(records)
    pd.testing.assert_frame_equal(from_wait, full)
    pd.testing.assert_frame_equal(from_list, full)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_tables_read_back_equal(records, tmp_path, suffix):
    path = atomiverse.export(records, tmp_path / f"jobs{suffix}")
    back = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    assert list(back["job_id"]) == [r["job_id"] for r in records]
    assert list(back["energy_hartree"][:2]) == [r["result"]["energy_hartree"]
                                                for r in records[:2]]


def test_jsonl_is_the_records_as_returned(records, tmp_path):
    path = atomiverse.export(records, tmp_path / "jobs.jsonl")
    assert [json.loads(line) for line in path.read_text().splitlines()] == records


def test_extxyz_and_xyz_and_an_ase_database_hold_the_structures(records, tmp_path):
    done = records[:2]
    frames = ase.io.read(atomiverse.export(records, tmp_path / "jobs.extxyz"), index=":")
    assert len(frames) == 2  # the failed job has no structure
    for frame, record in zip(frames, done, strict=True):
        result = record["result"]
        assert frame.get_potential_energy() == pytest.approx(
            result["energy_hartree"] * Hartree, rel=1e-12)
        assert np.allclose(frame.get_forces(),
                           -np.array(result["gradient_hartree_per_bohr"]) * Hartree / Bohr)
    final = np.array(done[1]["result"]["final_positions_angstrom"])
    assert np.allclose(frames[1].positions, final)
    xyz = ase.io.read(atomiverse.export(records, tmp_path / "jobs.xyz"), index=":")
    assert np.allclose(xyz[1].positions, final, atol=1e-8)
    with ase.db.connect(str(atomiverse.export(records, tmp_path / "jobs.db"))) as db:
        rows = list(db.select())
    assert [r.job_id for r in rows] == [r["job_id"] for r in done]
    assert rows[1].energy_hartree == done[1]["result"]["energy_hartree"]
    assert np.allclose(rows[1].toatoms().positions, final)


def test_an_unknown_extension_names_the_supported_ones(records, tmp_path):
    with pytest.raises(ValueError, match=r"unknown extension '\.pdb'.*\.extxyz, \.xyz, \.csv"):
        atomiverse.export(records, tmp_path / "jobs.pdb")


def test_the_cli_exports_the_workspaces_finished_jobs(records, server, workspace_key, tmp_path):
    out = tmp_path / "done.jsonl"
    env = {**os.environ, "ATOMIVERSE_BASE_URL": server.url, "ATOMIVERSE_API_KEY": workspace_key}
    proc = subprocess.run([sys.executable, "-m", "atomiverse.cli", "export", "--state", "done",
                           "--since", records[0]["created_at"][:10], "-o", str(out)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["state"] == "done" for r in exported)
    assert {r["job_id"] for r in records[:2]} <= {r["job_id"] for r in exported}
    assert records[2]["job_id"] not in {r["job_id"] for r in exported}
    future = subprocess.run([sys.executable, "-m", "atomiverse.cli", "export", "--since",
                             "2999-01-01", "-o", str(tmp_path / "none.csv")],
                            capture_output=True, text=True, env=env, timeout=120, check=False)
    assert future.returncode == 0 and "0 jobs written" in future.stdout
