"""Engine harnesses against the libraries called directly, in this process (real xtb, tblite)."""

from __future__ import annotations

import subprocess
import sys
from functools import cache
from typing import Any

import numpy as np
import pytest
from ase.units import Bohr, Hartree
from atomiverse.atoms import Atoms
from atomiverse.jobs import GeometryOptimization, SinglePointEnergy
from atomiverse.levels import GFN1_XTB, GFN2_XTB, LevelOfTheory
from atomiverse.schema import WIBERG_MIN_ORDER, OptimizationResult, SinglePointResult
from atomiverse_controller.engines import (
    EngineError,
    available_engines,
    default_engine_name,
    get_engine,
    homo_lumo_gap_ev,
)
from atomiverse_controller.engines.base import (
    frontier_orbitals_hartree,
    parse_level,
    sparse_bond_orders,
)
from atomiverse_controller.engines.xtb_python import shares_a_coordinate
from conftest import (
    DEFAULT_ENGINE,
    REAL_ENGINES,
    xtb_python_installable,
    xtb_python_installed,
)
from pydantic import ValidationError

SAME_LIBRARY_HARTREE = 1e-6
XTB_VS_TBLITE_HARTREE = 2e-5
# Neutral closed shell, a cation, an anion and a radical (CH3, multiplicity 2).
MOLECULES = ["O", "CCO", "c1ccccc1O", "CC(=O)N", "C[NH3+]", "CC(=O)[O-]", "[CH3]"]


@cache
def atoms(smiles: str) -> Atoms:
    return Atoms.from_smiles(smiles)


def sp_payload(smiles: str, level: Any = GFN2_XTB) -> dict[str, Any]:
    return SinglePointEnergy(atoms=atoms(smiles), level_of_theory=level).model_dump()


def opt_payload(smiles: str, **kw: Any) -> dict[str, Any]:
    return GeometryOptimization(atoms=atoms(smiles), level_of_theory=GFN2_XTB,
                                **kw).model_dump()


def direct_energy(engine: str, a: Atoms, method: str = "gfn2-xtb") -> float:
    """The library itself, called the documented way, with no harness in between."""
    numbers, positions = np.array(a.numbers), np.array(a.positions) / Bohr
    if engine == "xtb":
        from xtb.interface import Calculator, Param
        from xtb.libxtb import VERBOSITY_MUTED

        param = {"gfn2-xtb": Param.GFN2xTB, "gfn1-xtb": Param.GFN1xTB}[method]
        calc = Calculator(param, numbers, positions, a.charge, a.multiplicity - 1)
        calc.set_verbosity(VERBOSITY_MUTED)
        return calc.singlepoint().get_energy()
    from tblite.interface import Calculator as TBLiteCalculator

    tb = TBLiteCalculator({"gfn2-xtb": "GFN2-xTB", "gfn1-xtb": "GFN1-xTB"}[method], numbers,
                          positions, a.charge, a.multiplicity - 1)
    tb.set("verbosity", 0)
    return tb.singlepoint().get("energy")


@pytest.mark.parametrize("smiles", MOLECULES)
@pytest.mark.parametrize("engine", REAL_ENGINES)
def test_single_point_equals_library(engine: str, smiles: str) -> None:
    result = get_engine(engine).compute(sp_payload(smiles))
    SinglePointResult(**result)  # schema-valid as it stands
    assert abs(result["energy_hartree"] - direct_energy(engine, atoms(smiles))) \
        < SAME_LIBRARY_HARTREE
    assert result["engine"] == engine and result["engine_version"]
    n = len(atoms(smiles))
    assert np.array(result["gradient_hartree_per_bohr"]).shape == (n, 3)
    assert len(result["partial_charges_e"]) == n
    assert sum(result["partial_charges_e"]) == pytest.approx(atoms(smiles).charge, abs=1e-6)
    assert result["homo_lumo_gap_ev"] > 0


@pytest.mark.parametrize("engine", REAL_ENGINES)
def test_gfn1_equals_library(engine: str) -> None:
    result = get_engine(engine).compute(sp_payload("CCO", GFN1_XTB))
    assert abs(result["energy_hartree"] - direct_energy(engine, atoms("CCO"), "gfn1-xtb")) \
        < SAME_LIBRARY_HARTREE


@pytest.mark.xtb_python
@pytest.mark.parametrize("smiles", MOLECULES)
def test_xtb_and_tblite_agree(smiles: str) -> None:
    xtb = get_engine("xtb").compute(sp_payload(smiles))
    tblite = get_engine("tblite").compute(sp_payload(smiles))
    assert abs(xtb["energy_hartree"] - tblite["energy_hartree"]) < XTB_VS_TBLITE_HARTREE
    assert np.allclose(xtb["gradient_hartree_per_bohr"], tblite["gradient_hartree_per_bohr"],
                       atol=1e-5)
    assert np.allclose(xtb["dipole_au"], tblite["dipole_au"], atol=1e-4)


def test_units_of_gradient_and_dipole() -> None:
    """Gradient in Hartree/Bohr: a finite difference of the energy along one coordinate."""
    a, h_angstrom = atoms("O"), 1e-4
    engine = get_engine(DEFAULT_ENGINE)
    base = sp_payload("O")
    energies = []
    for sign in (1, -1):
        shifted = np.array(a.positions)
        shifted[0, 2] += sign * h_angstrom
        payload = {**base, "atoms": {**base["atoms"], "positions": shifted.tolist()}}
        energies.append(engine.compute(payload)["energy_hartree"])
    numeric = (energies[0] - energies[1]) / (2 * h_angstrom / Bohr)
    analytic = engine.compute(base)["gradient_hartree_per_bohr"][0][2]
    assert numeric == pytest.approx(analytic, abs=1e-5)


@pytest.mark.parametrize("engine", REAL_ENGINES)
@pytest.mark.parametrize("optimizer", ["ANC-RFO", "BFGS-Lindh", "LBFGS", "BFGS", "FIRE",
                                       "geomeTRIC"])
def test_optimisation_converges(engine: str, optimizer: str) -> None:
    fmax = 0.02
    result = get_engine(engine).compute(opt_payload("CCO", optimizer=optimizer, fmax=fmax))
    OptimizationResult(**result)
    assert result["converged"] is True
    assert result["fmax_ev_per_angstrom"] < fmax
    assert result["energy_hartree"] < result["energies_hartree"][0]
    assert result["energies_hartree"][-1] == result["energy_hartree"]
    assert len(result["energies_hartree"]) == result["n_steps"] + 1
    assert result["optimizer"] == optimizer
    # The reported single point belongs to the final geometry, not to an earlier step.
    final = Atoms(numbers=atoms("CCO").numbers, positions=result["final_positions_angstrom"])
    assert abs(direct_energy(engine, final) - result["energy_hartree"]) < SAME_LIBRARY_HARTREE


PARACETAMOL = "CC(=O)Nc1ccc(O)cc1"  # rings, a flexible amide, 20 atoms


@pytest.fixture(scope="module")
def paracetamol_lbfgs() -> dict:
    return get_engine(DEFAULT_ENGINE).compute(opt_payload(PARACETAMOL, optimizer="LBFGS"))


@pytest.mark.parametrize("optimizer", ["ANC-RFO", "BFGS-Lindh", "geomeTRIC"])
def test_optimiser_reaches_the_lbfgs_minimum_in_fewer_gradients(
        optimizer: str, paracetamol_lbfgs: dict) -> None:
    """A model Hessian (ANC-RFO, BFGS-Lindh) or internal coordinates (geomeTRIC): the same minimum at the
    default fmax as ASE's LBFGS (and as the reference single point there), in a fraction of
    the gradient evaluations."""
    run = get_engine(DEFAULT_ENGINE).compute(opt_payload(PARACETAMOL, optimizer=optimizer))
    assert run["converged"] is True and run["fmax_ev_per_angstrom"] < 0.001
    assert abs(run["energy_hartree"] - paracetamol_lbfgs["energy_hartree"]) < 1e-5
    final = Atoms(numbers=atoms(PARACETAMOL).numbers, positions=run["final_positions_angstrom"])
    assert abs(direct_energy(DEFAULT_ENGINE, final) - run["energy_hartree"]) < SAME_LIBRARY_HARTREE
    assert run["n_steps"] < paracetamol_lbfgs["n_steps"] / 2, (run["n_steps"],
                                                               paracetamol_lbfgs["n_steps"])


def test_geometric_stopped_early_reports_its_best_geometry_as_not_converged() -> None:
    smiles = PARACETAMOL
    result = get_engine(DEFAULT_ENGINE).compute(
        opt_payload(smiles, optimizer="geomeTRIC", max_steps=3))
    assert result["converged"] is False and "not converged" in result["warnings"][-1]
    # The lowest point it saw (evaluated again if it was not the last: SCF noise only).
    assert result["energy_hartree"] == pytest.approx(min(result["energies_hartree"]), abs=1e-8)
    final = Atoms(numbers=atoms(smiles).numbers, positions=result["final_positions_angstrom"])
    assert abs(direct_energy(DEFAULT_ENGINE, final) - result["energy_hartree"]) < SAME_LIBRARY_HARTREE


def test_optimisation_of_radical_and_ion() -> None:
    for smiles in ("[CH3]", "C[NH3+]"):
        result = get_engine(DEFAULT_ENGINE).compute(opt_payload(smiles))
        assert result["converged"] is True
        assert result["energy_hartree"] <= result["energies_hartree"][0]


@pytest.mark.parametrize("engine", REAL_ENGINES)
def test_max_steps_reached_is_not_converged(engine: str) -> None:
    result = get_engine(engine).compute(opt_payload("CCO", fmax=1e-4, max_steps=2))
    assert result["converged"] is False
    assert result["n_steps"] == 2
    assert len(result["energies_hartree"]) == 3
    assert result["fmax_ev_per_angstrom"] >= 1e-4


@pytest.mark.parametrize("engine", REAL_ENGINES)
def test_bad_input_is_an_input_error(engine: str) -> None:
    payload = sp_payload("O")
    payload["atoms"]["positions"] = [[0, 0, 0], [0, 0, 0], [0, 0.8, 0]]  # two atoms in one place
    with pytest.raises(EngineError) as info:
        get_engine(engine).compute(payload)
    assert info.value.error_type == "input"
    assert isinstance(info.value.__cause__, Exception)  # the library's error is kept


@pytest.mark.parametrize("change", [
    {"job_type": "md"},
    {"level_of_theory": {"method": "b3lyp"}},
    {"atoms": {"numbers": [1], "positions": [[0, 0, 0], [0, 0, 1]]}},
    {"optimizer": "SGD", "job_type": "opt"},
])
def test_malformed_payload_is_an_input_error(change: dict[str, Any]) -> None:
    with pytest.raises(EngineError) as info:
        get_engine("xtb").compute({**sp_payload("O"), **change})
    assert info.value.error_type == "input"


def test_engine_error_survives_pickling() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(EngineError("SCF did not converge", "convergence")))
    assert (error.message, error.error_type) == ("SCF did not converge", "convergence")


def test_instant_engine_is_fake_and_deterministic() -> None:
    engine = get_engine("instant")
    result = engine.compute(sp_payload("CCO"))
    SinglePointResult(**result)
    assert result["energy_hartree"] == -0.5 * sum(atoms("CCO").numbers)
    assert not np.any(result["gradient_hartree_per_bohr"])
    assert result["engine"] == "instant"
    opt = engine.compute(opt_payload("CCO"))
    OptimizationResult(**opt)
    assert opt["converged"] is True and opt["n_steps"] == 0
    with pytest.raises(EngineError) as info:
        engine.compute({**sp_payload("O"), "name": "__fail_input__"})
    assert info.value.error_type == "input"


def test_fault_hooks_exist_only_in_the_instant_engine() -> None:
    result = get_engine(DEFAULT_ENGINE).compute({**sp_payload("O"), "name": "__fail_input__"})
    assert result["engine"] == DEFAULT_ENGINE


def test_registry() -> None:
    # pip install . installs xtb-python exactly where pyproject says (Python < 3.12), and the
    # default engine is xtb-python there, tblite elsewhere.
    assert xtb_python_installed() == xtb_python_installable()
    assert default_engine_name() == ("xtb" if xtb_python_installed() else "tblite")
    engines = available_engines()
    assert set(engines) == ({"xtb", "tblite"} if xtb_python_installed() else {"tblite"})
    assert all(engines.values())
    assert "instant" in available_engines(include_fake=True)
    with pytest.raises(KeyError):
        get_engine("orca")


@pytest.mark.xtb_python
def test_orbitals_and_bond_orders_equal_the_library_arrays() -> None:
    """HOMO, LUMO and the sparse Wiberg list, against the arrays xtb itself returns for the
    same geometry, reduced by plain loops."""
    from xtb.interface import Calculator, Param
    from xtb.libxtb import VERBOSITY_MUTED

    a = atoms("c1ccccc1O")
    result = get_engine("xtb").compute(sp_payload("c1ccccc1O"))
    calc = Calculator(Param.GFN2xTB, np.array(a.numbers), np.array(a.positions) / Bohr)
    calc.set_verbosity(VERBOSITY_MUTED)
    res = calc.singlepoint()
    eps, occ = res.get_orbital_eigenvalues(), res.get_orbital_occupations()
    assert result["homo_hartree"] == max(e for e, o in zip(eps, occ, strict=True) if o > 0.5)
    assert result["lumo_hartree"] == min(e for e, o in zip(eps, occ, strict=True) if o <= 0.5)
    assert result["wiberg_bond_orders"] == _bond_order_loop(res.get_bond_orders())
    assert len(result["wiberg_bond_orders"]) >= 13  # the ring, C-O, O-H and five C-H


def _bond_order_loop(matrix: np.ndarray) -> list[list[float]]:
    n = len(matrix)
    return [[i, j, float(np.round(matrix[i][j], 4))] for i in range(n) for j in range(i + 1, n)
            if matrix[i][j] >= WIBERG_MIN_ORDER]


def test_sparse_bond_orders_keep_the_upper_triangle_at_or_above_the_floor() -> None:
    rng = np.random.default_rng(7)
    m = rng.uniform(-0.2, 1.6, size=(23, 23))
    m = (m + m.T) / 2
    m[3, 9] = m[9, 3] = WIBERG_MIN_ORDER  # exactly at the floor: kept
    m[4, 5] = m[5, 4] = np.nextafter(WIBERG_MIN_ORDER, 0)  # just under: dropped
    np.fill_diagonal(m, 4.0)  # an atom with itself is never a bond
    got = sparse_bond_orders(m)
    assert got == _bond_order_loop(m)
    assert [3, 9, WIBERG_MIN_ORDER] in got and not any(b[:2] == [4, 5] for b in got)
    assert all(type(v) is t for b in got for v, t in zip(b, (int, int, float), strict=True))
    assert sparse_bond_orders(np.zeros((1, 1))) == []


@pytest.mark.parametrize(("eps", "occ", "homo", "lumo"), [
    ([-0.5, -0.3, 0.1, 0.2], [2.0, 2.0, 0.0, 0.0], -0.3, 0.1),  # closed shell
    ([-0.5, -0.3, -0.2, 0.1], [2.0, 2.0, 1.0, 0.0], -0.2, 0.1),  # radical: SOMO is the HOMO
    ([-0.5, -0.4, -0.3, -0.2], [1.0, 1.0, 1.0, 0.0], -0.3, -0.2),  # spin-resolved, unsorted ok
    ([-0.5, -0.3], [2.0, 2.0], -0.3, None),  # nothing virtual
    ([], [], None, None),
    ([-0.5, -0.3], [2.0], None, None),  # mismatched arrays: no answer rather than a wrong one
])
def test_frontier_orbitals(eps: list[float], occ: list[float], homo: float | None,
                           lumo: float | None) -> None:
    assert frontier_orbitals_hartree(eps, occ) == (homo, lumo)
    gap = homo_lumo_gap_ev(*frontier_orbitals_hartree(eps, occ))
    assert gap == (None if homo is None or lumo is None else pytest.approx((lumo - homo) * Hartree))


def test_shares_a_coordinate() -> None:
    rng = np.random.default_rng(3)
    generic = rng.uniform(-3, 3, size=(30, 3))
    assert not shares_a_coordinate(generic)
    generic[17, 2] = generic[4, 2] + 5e-6  # two z values within COINCIDENT_ANGSTROM
    assert shares_a_coordinate(generic)
    assert not shares_a_coordinate(np.zeros((1, 3)))


def test_levels_are_validated_once_and_bad_ones_every_time() -> None:
    water = {"method": "gfn2-xtb", "solvation": {"model": "alpb", "solvent": "water"}}
    first = parse_level(water)
    assert first == LevelOfTheory.model_validate(water)
    assert parse_level({"solvation": {"solvent": "water", "model": "alpb"},
                        "method": "gfn2-xtb"}) is first  # key order does not matter
    assert parse_level({"method": "gfn1-xtb"}).method == "gfn1-xtb"
    for bad in ({"method": "b3lyp"}, {"method": "gfn2-xtb", "extra": {1, 2}}, None):
        for _ in range(2):
            with pytest.raises(ValidationError):
                parse_level(bad)


def test_importing_engines_loads_no_native_library() -> None:
    code = ("import sys, atomiverse_controller.engines as e; e.get_engine('xtb'); "
            "assert not {'xtb.interface', 'tblite.interface'} & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.xtb_python
def test_scf_failure_is_a_convergence_error() -> None:
    """A real non-converged SCF from each library (2 cycles allowed) maps to "convergence"."""
    from atomiverse_controller.engines.tblite_engine import _tblite_error
    from atomiverse_controller.engines.xtb_python import _xtb_error
    from tblite.interface import Calculator as TBLiteCalculator
    from xtb.interface import Calculator, Param, XTBException
    from xtb.libxtb import VERBOSITY_MUTED

    a = atoms("c1ccccc1O")
    numbers, positions = np.array(a.numbers), np.array(a.positions) / Bohr
    calc = Calculator(Param.GFN2xTB, numbers, positions)
    calc.set_verbosity(VERBOSITY_MUTED)
    calc.set_max_iterations(2)
    with pytest.raises(XTBException) as xtb_info:
        calc.singlepoint()
    assert _xtb_error(xtb_info.value, "calculation").error_type == "convergence"
    tb = TBLiteCalculator("GFN2-xTB", numbers, positions)
    tb.set("verbosity", 0)
    tb.set("max-iter", 2)
    with pytest.raises(RuntimeError) as tb_info:
        tb.singlepoint()
    assert _tblite_error(tb_info.value, "calculation").error_type == "convergence"


@pytest.mark.parametrize("engine", REAL_ENGINES)
def test_gradient_is_right_for_a_molecule_in_the_xy_plane(engine: str) -> None:
    """libxtb 6.5.1 gets out-of-plane gradients wrong when atoms share a coordinate exactly
    (grimme-lab/xtb#986); the xtb engine turns the molecule so that it never happens."""
    a = Atoms(numbers=[7, 1, 1, 1], positions=[(0.0, 0.0, 0.0), (0.99, 0.0, 0.1),
                                               (-0.495, 0.857, 0.0), (-0.495, -0.857, 0.0)])
    payload = SinglePointEnergy(atoms=a, level_of_theory=GFN2_XTB).model_dump()
    gradient = np.array(get_engine(engine).compute(payload)["gradient_hartree_per_bohr"])
    h = 1e-4
    for atom in range(4):
        energies = []
        for sign in (1, -1):
            shifted = np.array(a.positions)
            shifted[atom, 2] += sign * h
            energies.append(direct_energy(engine, Atoms(numbers=a.numbers,
                                                        positions=[tuple(p) for p in shifted])))
        numeric = (energies[0] - energies[1]) / (2 * h / Bohr)
        assert gradient[atom, 2] == pytest.approx(numeric, abs=2e-6)


def test_optimisation_result_carries_trajectory_and_level() -> None:
    result = get_engine("tblite").compute(opt_payload("O"))
    OptimizationResult(**result)
    assert result["level_of_theory"] == "GFN2-xTB" and result["warnings"] == []
    assert len(result["trajectory_positions_angstrom"]) == result["n_steps"] + 1
    assert result["homo_hartree"] < result["lumo_hartree"]
