"""The Hessian job type (added as one registry module, issue 26): the engine's finite-difference
Hessian, checked against the engine's own ASE calculator through ASE's Vibrations."""

from __future__ import annotations

import tempfile
from pathlib import Path

import ase
import atomiverse
import numpy as np
from ase.units import Bohr, Hartree
from ase.vibrations import Vibrations
from atomiverse.levels import GFN2_XTB
from conftest import reference_ase_calculator


def test_the_hessian_is_the_engines_second_derivative(client, alpha_controller):
    # Not water: three atoms lie in a plane through the origin's axes, and libxtb 6.5.1's
    # out-of-plane gradients are wrong there (xtb#986; the engine turns such molecules, the
    # library called directly does not), so the reference itself would be off.
    methanol = atomiverse.Atoms.from_smiles("CO")
    job = atomiverse.Hessian(atoms=methanol, level_of_theory=GFN2_XTB, use_cache=False)
    res = client.submit_batch([job.model_dump()], compute_target=alpha_controller)
    (record,) = client.wait_jobs([res["jobs"][0]["job_id"]], timeout=120)
    assert record["state"] == "done", record
    ours = np.array(client.get_job(record["job_id"])["result"]["hessian_hartree_per_bohr2"])
    assert ours.shape == (18, 18) and np.allclose(ours, ours.T)
    direct = ase.Atoms(numbers=methanol.numbers, positions=methanol.positions)
    direct.calc = reference_ase_calculator()
    with tempfile.TemporaryDirectory() as tmp:
        vib = Vibrations(direct, name=str(Path(tmp) / "vib"), delta=0.01, nfree=2)
        vib.run()
        theirs = vib.get_vibrations().get_hessian_2d()
    theirs = 0.5 * (theirs + theirs.T) / (Hartree / Bohr**2)
    assert np.abs(ours - theirs).max() < 1e-5  # Hartree/Bohr^2; finite differences of SCFs
    # three translations and three rotations: six near-zero eigenvalues, the rest positive
    eigenvalues = np.linalg.eigvalsh(ours)
    assert (np.abs(eigenvalues[:6]) < 5e-3).all() and (eigenvalues[6:] > 5e-3).all()
