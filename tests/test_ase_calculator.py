"""atomiverse.ase.AtomiverseCalculator (issue 28, item 2): ASE's optimisers and dynamics run
against it unchanged, every energy a real job, checked against the engine called directly."""

from __future__ import annotations

import ase
import atomiverse
import numpy as np
import pytest
from ase.calculators.calculator import CalculatorError
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS
from ase.units import Hartree, fs
from atomiverse.levels import GFN2_XTB
from conftest import reference_ase_calculator, xtb_reference

pytestmark = pytest.mark.usefixtures("embedded_home")


def _ethanol() -> ase.Atoms:
    a = atomiverse.Atoms.from_smiles("CCO")
    return ase.Atoms(numbers=a.numbers, positions=a.positions)


def test_energy_and_forces_are_the_engines_in_ase_units():
    from atomiverse.ase import AtomiverseCalculator

    molecule = _ethanol()
    molecule.calc = AtomiverseCalculator(GFN2_XTB, use_cache=False)
    energy, forces = molecule.get_potential_energy(), molecule.get_forces()
    assert energy / Hartree == pytest.approx(
        xtb_reference(molecule.numbers, molecule.positions), abs=1e-6)
    direct = molecule.copy()
    direct.calc = reference_ase_calculator()
    assert np.abs(forces - direct.get_forces()).max() < 1e-4  # eV/Angstrom


def test_bfgs_through_the_calculator_reaches_the_platforms_own_minimum():
    from atomiverse.ase import AtomiverseCalculator

    molecule = _ethanol()
    start = molecule.positions.tolist()
    molecule.calc = AtomiverseCalculator(GFN2_XTB)
    BFGS(molecule, logfile=None).run(fmax=0.001, steps=500)
    opt = atomiverse.GeometryOptimization(
        atoms=atomiverse.Atoms(numbers=molecule.numbers.tolist(), positions=start),
        level_of_theory=GFN2_XTB).submit(wait=True, compute_target="local")
    assert opt.result["converged"]
    assert molecule.get_potential_energy() / Hartree == pytest.approx(
        opt.result["energy_hartree"], abs=1e-5)


def test_a_repeated_geometry_is_answered_from_the_cache():
    from atomiverse.ase import AtomiverseCalculator

    molecule = _ethanol()
    molecule.calc = first = AtomiverseCalculator(GFN2_XTB)
    energy = molecule.get_potential_energy()
    again = _ethanol()
    again.calc = second = AtomiverseCalculator(GFN2_XTB)
    assert again.get_potential_energy() == energy
    assert second.last_record["cached_from"] in (first.last_record["job_id"],
                                                 first.last_record["cached_from"])


def test_molecular_dynamics_runs_unchanged():
    from atomiverse.ase import AtomiverseCalculator

    molecule = _ethanol()
    molecule.calc = AtomiverseCalculator(GFN2_XTB, use_cache=False)
    VelocityVerlet(molecule, timestep=0.5 * fs, logfile=None).run(3)
    assert molecule.get_potential_energy() / Hartree == pytest.approx(
        xtb_reference(molecule.numbers, molecule.positions), abs=1e-6)


def test_periodic_structures_and_bad_options_are_refused():
    from atomiverse.ase import AtomiverseCalculator

    crystal = _ethanol()
    crystal.set_cell([10, 10, 10])
    crystal.pbc = True
    crystal.calc = AtomiverseCalculator(GFN2_XTB)
    with pytest.raises(CalculatorError, match="molecules only.*periodic"):
        crystal.get_potential_energy()
    with pytest.raises(ValueError, match="walltime_seconds"):
        AtomiverseCalculator(GFN2_XTB, walltime_seconds=-1)


def test_a_named_controller_works_the_same(server, workspace_key, alpha_controller):
    from atomiverse.ase import AtomiverseCalculator

    client = atomiverse.Client(api_key=workspace_key, base_url=server.url)
    try:
        molecule = _ethanol()
        molecule.calc = AtomiverseCalculator(GFN2_XTB, alpha_controller, client=client,
                                             use_cache=False)
        assert molecule.get_potential_energy() / Hartree == pytest.approx(
            xtb_reference(molecule.numbers, molecule.positions), abs=1e-6)
        assert molecule.calc.last_record["controller"] == alpha_controller
    finally:
        client.close()
