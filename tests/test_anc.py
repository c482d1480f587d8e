"""ANC-RFO, the default optimiser: its coordinates, its step, its update, and whole runs with
the default engine library's own ASE calculator (xtb-python's where it is installed, else
tblite's; energies checked against that library called directly)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.units import Bohr
from atomiverse.atoms import Atoms as SdkAtoms
from atomiverse_core.drivers import anc
from atomiverse_core.drivers.model_hessian import rigid_motions
from conftest import reference_ase_calculator, xtb_python_installed, xtb_reference


def _ethanol_bohr() -> tuple[np.ndarray, np.ndarray]:
    mol = molecule("CH3CH2OH")
    return mol.numbers, mol.positions / Bohr


def test_internal_basis_spans_what_is_not_rigid() -> None:
    numbers, pos = _ethanol_bohr()
    basis = anc.internal_basis(pos)
    assert basis.shape == (3 * len(numbers), 3 * len(numbers) - 6)
    assert np.allclose(basis.T @ basis, np.eye(basis.shape[1]), atol=1e-12)
    assert np.abs(rigid_motions(pos).T @ basis).max() < 1e-10
    co2 = np.array([[0.0, 0.0, -2.2], [0.0, 0.0, 0.0], [0.0, 0.0, 2.2]])
    assert anc.internal_basis(co2).shape == (9, 4)  # linear: two rotations, not three


def test_coordinates_start_diagonal_and_within_the_curvature_window() -> None:
    numbers, pos = _ethanol_bohr()
    coords = anc.Coordinates.at(numbers, pos)
    curvature = np.diag(coords.hessian)
    assert np.array_equal(coords.hessian, np.diag(curvature))
    assert curvature.min() == pytest.approx(anc.H_LOW)  # the softest, shifted up to H_LOW
    assert curvature.max() <= anc.H_HIGH and np.all(np.diff(curvature) >= 0)
    assert np.allclose(coords.basis.T @ coords.basis, np.eye(len(curvature)), atol=1e-12)
    assert np.array_equal(coords.positions_bohr(), pos.ravel())


def test_rfo_step_solves_the_shifted_newton_equation_and_goes_downhill() -> None:
    rng = np.random.default_rng(7)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    for curvature in ([0.5, 0.3, 0.2, 0.1, 0.05, 0.02], [0.5, 0.3, 0.2, 0.1, 0.05, -0.04]):
        hessian = q @ np.diag(curvature) @ q.T
        gradient = rng.normal(size=6) * 0.01
        step = anc.rfo_step(hessian, gradient)
        shift = gradient @ step  # RFO: (H - lambda) d = -g with lambda = g . d
        assert np.allclose((hessian - shift * np.eye(6)) @ step, -gradient, atol=1e-10)
        assert gradient @ step < 0  # downhill, an indefinite Hessian included
    small = np.full(6, 1e-7)  # near a minimum RFO becomes Newton's step
    positive = q @ np.diag([0.5, 0.3, 0.2, 0.1, 0.05, 0.02]) @ q.T
    assert np.allclose(anc.rfo_step(positive, small), -np.linalg.solve(positive, small),
                       rtol=1e-4)


def test_lowest_eigenvector_is_scipys_and_the_step_numpys() -> None:
    from scipy.linalg import eigh

    rng = np.random.default_rng(13)
    for n in (2, 7, 40, 95):
        a = rng.normal(size=(n, n))
        a += a.T
        # The same LAPACK call as SciPy's wrapper makes: the same numbers, to the last bit.
        _, reference = eigh(a, subset_by_index=[0, 0], driver="evx")
        assert np.array_equal(anc.lowest_eigenvector(np.asfortranarray(a)), reference[:, 0])
        # And the step from it is the one a full diagonalisation gives.
        hessian, gradient = a[1:, 1:], a[0, 1:]
        augmented = np.block([[hessian, gradient[:, None]], [gradient[None, :], np.zeros((1, 1))]])
        lowest = np.linalg.eigh(augmented)[1][:, 0]
        assert np.allclose(anc.rfo_step(hessian, gradient), lowest[:-1] / lowest[-1],
                           rtol=1e-8, atol=1e-12)
    with pytest.raises(np.linalg.LinAlgError):
        anc.lowest_eigenvector(np.full((3, 3), np.nan))


def test_bfgs_update_meets_the_secant_condition_and_floors_the_diagonal() -> None:
    numbers, pos = _ethanol_bohr()
    rng = np.random.default_rng(3)

    def updated(curvature_factor: float, along_softest: bool = False
                ) -> tuple[anc.Coordinates, np.ndarray]:
        coords = anc.Coordinates.at(numbers, pos)
        m = len(coords.values)
        coords.gradient, coords.step = rng.normal(size=m) * 1e-3, rng.normal(size=m) * 1e-2
        if along_softest:  # then the update scales that coordinate's curvature by the factor
            coords.step = np.eye(m)[0] * 1e-2
        dg = coords.hessian @ coords.step * curvature_factor
        coords.update(coords.gradient + dg)
        return coords, dg

    # Twice the model's curvature: BFGS adds (H dx)(H dx)^T / dx.H.dx, so no diagonal element
    # shrinks, the floor stays out of it and the secant condition holds exactly.
    stiffer, dg = updated(2.0)
    assert np.allclose(stiffer.hessian @ stiffer.step, dg)
    assert np.allclose(stiffer.hessian, stiffer.hessian.T)
    # The softest coordinate found 0.7 times as stiff: the update may take it below the
    # model's H_LOW...
    learnt = np.diag(updated(0.7, along_softest=True)[0].hessian).min()
    assert learnt == pytest.approx(0.7 * anc.H_LOW) and anc.UPDATE_FLOOR < learnt < anc.H_LOW
    # ...a tenth as stiff: not below UPDATE_FLOOR.
    softer, _ = updated(0.1, along_softest=True)
    assert np.diag(softer.hessian).min() == anc.UPDATE_FLOOR
    m = len(softer.values)
    softer.gradient, softer.step = np.zeros(m), np.zeros(m)  # no step: no update, no NaN
    before = softer.hessian.copy()
    softer.update(np.ones(m))
    assert np.array_equal(softer.hessian, before)


def test_logs_a_line_a_step_when_given_a_log_file() -> None:
    from ase.calculators.emt import EMT

    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=2)
    atoms.calc = EMT()
    stream = io.StringIO()
    opt = anc.anc_rfo()(atoms, logfile=stream)
    opt.run(fmax=0.05, steps=3)
    lines = stream.getvalue().splitlines()
    assert len(lines) == opt.nsteps + 2  # a header, then steps 0 to nsteps
    assert lines[-1].startswith(f"ANCRFO:  {opt.nsteps:3d} ")


def _library_run(atoms: Atoms, fmax: float = 0.001, steps: int = 1000) -> tuple[object, bool]:
    atoms.calc = reference_ase_calculator()
    opt = anc.anc_rfo()(atoms, logfile=None)
    return opt, bool(opt.run(fmax=fmax, steps=steps))


def _direct_energy(atoms: Atoms) -> float:
    return xtb_reference(atoms.numbers, atoms.positions)


def test_a_long_run_renews_its_coordinates_and_reaches_a_minimum() -> None:
    """Long enough (more than MICRO_STEPS steps) to renew the coordinates at least once."""
    start = SdkAtoms.from_smiles("CCCCCCC(=O)OCC")
    atoms = Atoms(numbers=start.numbers, positions=start.positions)
    e0 = _direct_energy(atoms)
    opt, converged = _library_run(atoms)
    assert converged and opt.nsteps > anc.MICRO_STEPS
    assert opt.micro_steps > anc.MICRO_STEPS  # renewed: the allowance grew
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() < 0.001
    assert _direct_energy(atoms) < e0


@pytest.mark.parametrize("smiles", ["[H][H]", "O=C=O", "[Ar]"])
def test_small_and_linear_molecules(smiles: str) -> None:
    start = SdkAtoms.from_smiles(smiles)
    atoms = Atoms(numbers=start.numbers, positions=start.positions)
    atoms.positions += np.random.default_rng(1).normal(scale=0.05, size=atoms.positions.shape)
    _, converged = _library_run(atoms, fmax=0.01, steps=200)
    assert converged
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() < 0.01


class _Recording:
    """A real session of the default engine (xtb-python where installed, else tblite) that
    records the SCF accuracy of every evaluation."""

    def __init__(self, molecule: object) -> None:
        if xtb_python_installed():
            from atomiverse_controller.engines.xtb_python import XTBSession as Session
        else:
            from atomiverse_controller.engines.tblite_engine import TBLiteSession as Session

        self.inner, self.accuracy, self.used = Session(molecule), 1.0, []

    def set_scf_accuracy(self, scale: float) -> None:
        self.accuracy = scale
        self.inner.set_scf_accuracy(scale)

    def evaluate(self, positions_bohr: np.ndarray) -> tuple[float, np.ndarray]:
        self.used.append(self.accuracy)
        return self.inner.evaluate(positions_bohr)

    def properties(self) -> dict:
        return self.inner.properties()


def _molecule(smiles: str, distort: float) -> object:
    from atomiverse.jobs import SinglePointEnergy
    from atomiverse.levels import GFN2_XTB
    from atomiverse_controller.engines.base import parse_molecule

    start = SdkAtoms.from_smiles(smiles)
    payload = SinglePointEnergy(atoms=start, level_of_theory=GFN2_XTB).model_dump()
    positions = np.array(payload["atoms"]["positions"])
    positions += np.random.default_rng(5).normal(scale=distort, size=positions.shape)
    payload["atoms"]["positions"] = positions.tolist()
    return parse_molecule(payload)


def test_scf_is_loose_far_from_the_minimum_and_default_where_the_run_stops() -> None:
    from atomiverse_core.drivers.optimize import run_optimizer, scf_accuracy_for

    assert [scf_accuracy_for(g) for g in (0.5, 0.01, 0.001)] == [6.0, 3.0, 1.0]
    molecule = _molecule("CC(=O)Nc1ccc(O)cc1", distort=0.1)
    session = _Recording(molecule)
    trace = run_optimizer(session, molecule, "ANC-RFO", 0.001, 1000)
    assert trace.converged
    assert 6.0 in session.used and 3.0 in session.used  # far from the minimum: loose
    assert session.used[-1] == 1.0
    final = Atoms(numbers=molecule.numbers, positions=trace.positions_angstrom)
    assert abs(_direct_energy(final) - trace.energies_hartree[-1]) < 1e-6
    assert trace.properties["homo_lumo_gap_ev"] is not None  # read from the default result
    # Stopped by max_steps while still far away: the last point is evaluated again, default.
    session = _Recording(molecule)
    trace = run_optimizer(session, molecule, "ANC-RFO", 0.001, 2)
    assert not trace.converged and session.used[-2] != 1.0 and session.used[-1] == 1.0
    final = Atoms(numbers=molecule.numbers, positions=trace.positions_angstrom)
    assert abs(_direct_energy(final) - trace.energies_hartree[-1]) < 1e-6
    assert np.array_equal(trace.frames_gradients[-1], trace.gradient)


def test_finite_differences_never_loosen_the_scf() -> None:
    from ase.units import Hartree
    from atomiverse_core.drivers.optimize import SessionCalculator

    molecule = _molecule("CCO", distort=0.2)
    session = _Recording(molecule)
    atoms = Atoms(numbers=molecule.numbers, positions=molecule.positions_angstrom)
    atoms.calc = SessionCalculator(session)  # no fmax: as the vibrations module uses it
    for shift in (0.0, 0.01, 0.02):
        atoms.positions[0, 0] += shift
        assert np.linalg.norm(atoms.get_forces()) * Bohr / Hartree > 0.02  # far from a minimum
    assert session.used == [1.0, 1.0, 1.0]
