"""Chemistry breadth (#9): levels and solvation, spin, optimiser control, frequencies, inputs,
the richer result payload and its conversions.

Every energy is checked against xtb-python or tblite called directly on the same geometry
(1e-6 Hartree), never against copied numbers. GFN0-xTB and GFN-FF references run in a
subprocess: loading GFN0 shifts later GFN2 energies in the same process (which is why the
engine isolates it too), and GFN-FF writes topology files into its working directory.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase.units import Bohr, Hartree
from atomiverse import Atoms, Frequencies, GeometryOptimization, SinglePointEnergy, results
from atomiverse.jobs import describe_validation_error, parse_job
from atomiverse.levels import (
    ALPB_SOLVENTS,
    GBSA_SOLVENTS,
    GFN0_XTB,
    GFN1_XTB,
    GFN2_XTB,
    GFNFF,
    LevelOfTheory,
)
from atomiverse.schema import FrequenciesResult, OptimizationResult, SinglePointResult
from atomiverse_controller.engines import EngineError, get_engine
from atomiverse_controller.engines.xtb_python import parameter_dir
from atomiverse_core.jobtypes import names as job_type_names
from conftest import DEFAULT_ENGINE, REAL_ENGINES, reference_ase_calculator, xtb_reference

SAME_LIBRARY_HARTREE = 1e-6


@cache
def mol(smiles: str) -> Atoms:
    return Atoms.from_smiles(smiles)


def arrays(a: Atoms) -> tuple[np.ndarray, np.ndarray]:
    return np.array(a.numbers), np.array(a.positions) / Bohr


def tblite_energy(a: Atoms, method: str = "GFN2-xTB", solvation: tuple[str, str] | None = None,
                  ) -> float:
    """tblite called directly, the documented way."""
    from tblite.interface import Calculator

    numbers, positions = arrays(a)
    calc = Calculator(method, numbers, positions, a.charge, a.multiplicity - 1)
    calc.set("verbosity", 0)
    if solvation:
        calc.add(f"{solvation[0]}-solvation", solvation[1])
    return float(calc.singlepoint().get("energy"))


def xtb_gbsa_energy(a: Atoms, solvent: str, method: str = "GFN2-xTB") -> float:
    """xtb-python called directly with its GBSA solvent (xtb.utils.get_solvent)."""
    from xtb.interface import Calculator
    from xtb.libxtb import VERBOSITY_MUTED
    from xtb.utils import get_method, get_solvent

    numbers, positions = arrays(a)
    calc = Calculator(get_method(method), numbers, positions, a.charge, a.multiplicity - 1)
    calc.set_verbosity(VERBOSITY_MUTED)
    calc.set_solvent(get_solvent(solvent))
    return float(calc.singlepoint().get_energy())


_ISOLATED_REFERENCE = """
import json, sys
import numpy as np
from xtb.interface import Calculator
from xtb.libxtb import VERBOSITY_MUTED
from xtb.utils import get_method, get_solvent
job = json.load(sys.stdin)
calc = Calculator(get_method(job["method"]), np.array(job["numbers"]),
                  np.array(job["setup_positions_bohr"] or job["positions_bohr"]), job["charge"],
                  job["uhf"])
calc.set_verbosity(VERBOSITY_MUTED)
if job["solvent"]:
    calc.set_solvent(get_solvent(job["solvent"]))
if job["setup_positions_bohr"]:
    calc.update(np.array(job["positions_bohr"]))
sys.stderr.write(json.dumps(calc.singlepoint().get_energy()))
"""


def isolated_xtb_energy(a: Atoms, method: str, tmp_path: Path, solvent: str | None = None,
                        setup: Atoms | None = None) -> float:
    """xtb-python called directly, in its own process and directory, with XTBPATH pointing at
    the parameter files (GFN0-xTB, GFN-FF). With ``setup``, the calculator is created at that
    geometry and then moved to ``a``: GFN-FF fixes its topology (bonds, topology charges) where
    it is created, as in an optimisation."""
    xtbpath = parameter_dir("gfn-ff" if method == "GFN-FF" else "gfn0-xtb")
    numbers, positions = arrays(a)
    job = {"method": method, "numbers": numbers.tolist(), "positions_bohr": positions.tolist(),
           "charge": a.charge, "uhf": a.multiplicity - 1, "solvent": solvent,
           "setup_positions_bohr": None if setup is None else arrays(setup)[1].tolist()}
    proc = subprocess.run([sys.executable, "-c", _ISOLATED_REFERENCE], input=json.dumps(job),
                          capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
                          env={**os.environ, "XTBPATH": str(xtbpath), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    return float(proc.stderr.strip().splitlines()[-1])


# The parameter files come with the xtb program (scripts/install-test-deps installs it): a test
# that needs them fails saying so, never skips.
@pytest.fixture
def gfn_ff_parameters() -> None:
    if parameter_dir("gfn-ff") is None:
        pytest.fail("xtb's .param_gfnff.xtb not found: bash scripts/install-test-deps installs xtb",
                    pytrace=False)


@pytest.fixture
def gfn0_parameters() -> None:
    if parameter_dir("gfn0-xtb") is None:
        pytest.fail("xtb's param_gfn0-xtb.txt not found: bash scripts/install-test-deps installs "
                    "xtb", pytrace=False)


needs_gfn_ff = pytest.mark.usefixtures("gfn_ff_parameters")
needs_gfn0 = pytest.mark.usefixtures("gfn0_parameters")


def compute(engine: str, job: Any) -> dict[str, Any]:
    return get_engine(engine).compute(job.model_dump())


# ----- levels and the wire format ------------------------------------------------------------
def test_vacuum_payloads_are_unchanged_and_old_ones_validate():
    assert GFN2_XTB.model_dump() == {"method": "gfn2-xtb"}
    assert GFNFF.model_dump() == {"method": "gfn-ff"} and str(GFN0_XTB) == "GFN0-xTB"
    old = {"job_type": "single_point_energy", "level_of_theory": {"method": "gfn2-xtb"},
           "atoms": mol("O").model_dump()}
    job = parse_job(old)
    assert job.level_of_theory == GFN2_XTB and job.model_dump()["level_of_theory"] == \
        {"method": "gfn2-xtb"}
    water = GFN2_XTB.with_solvent("water")
    assert water.model_dump() == {"method": "gfn2-xtb",
                                  "solvation": {"model": "alpb", "solvent": "water"}}
    assert LevelOfTheory.model_validate(water.model_dump()) == water
    assert str(water) == "GFN2-xTB/ALPB(water)"


def test_solvents_are_canonical_and_unknown_ones_list_the_valid():
    assert GFN2_XTB.with_solvent("H2O", model="gbsa") == GFN2_XTB.with_solvent("water", "gbsa")
    assert GFN2_XTB.with_solvent("Chloroform").solvation.solvent == "chcl3"
    with pytest.raises(ValueError) as info:
        GFN2_XTB.with_solvent("unobtainium")
    assert "unknown solvent 'unobtainium' for ALPB" in str(info.value)
    assert ", ".join(ALPB_SOLVENTS) in str(info.value)
    with pytest.raises(ValueError, match=", ".join(GBSA_SOLVENTS)):
        GFN2_XTB.with_solvent("phenol", model="gbsa")  # ALPB has it, GBSA does not
    with pytest.raises(ValueError, match="GFN0-xTB has no implicit solvation"):
        GFN0_XTB.with_solvent("water", model="gbsa")
    with pytest.raises(ValueError, match="ALPB solvation is not available with GFN-FF"):
        GFNFF.with_solvent("water")
    with pytest.raises(ValueError, match="GFN1-xTB has no GBSA parameters for 'dmf'"):
        GFN1_XTB.with_solvent("dmf", model="gbsa")
    # Through the wire: the field is named.
    payload = SinglePointEnergy(atoms=mol("O"), level_of_theory=GFN2_XTB).model_dump()
    payload["level_of_theory"]["solvation"] = {"model": "alpb", "solvent": "lava"}
    with pytest.raises(ValueError) as err:
        parse_job(payload)
    assert describe_validation_error(err.value).startswith(
        "level_of_theory.solvation.solvent: unknown solvent 'lava' for ALPB (valid: acetone")


def test_a_job_cannot_ask_for_an_engine_its_level_lacks():
    with pytest.raises(ValueError) as err:
        SinglePointEnergy(atoms=mol("O"), level_of_theory=GFN2_XTB.with_solvent("water"),
                          engine="xtb")
    assert describe_validation_error(err.value) == (
        "engine: ALPB solvation needs the tblite engine, not 'xtb' (GFN2-xTB/ALPB(water))")
    with pytest.raises(ValueError, match="engine: GFN-FF needs the xtb engine"):
        SinglePointEnergy(atoms=mol("O"), level_of_theory=GFNFF, engine="tblite")


def test_gfn_ff_skips_the_electron_basis_check_but_not_spin_parity():
    # Five electrons, more than the minimal basis of two H holds: fine for a force field.
    h2 = Atoms(numbers=[1, 1], positions=[(0, 0, 0), (0, 0, 0.74)], charge=-3, multiplicity=2)
    with pytest.raises(ValueError, match="atoms.charge"):
        SinglePointEnergy(atoms=h2, level_of_theory=GFN2_XTB)
    SinglePointEnergy(atoms=h2, level_of_theory=GFNFF)
    with pytest.raises(ValueError, match="multiplicity 2 is impossible"):
        Atoms(numbers=[8, 1, 1], positions=mol("O").positions, multiplicity=2)


def test_frequencies_is_a_job_type_on_the_wire():
    job = Frequencies(atoms=mol("O"), level_of_theory=GFN2_XTB, optimize_first=True,
                      temperature_kelvin=350.0)
    payload = job.model_dump()
    assert payload["job_type"] == "frequencies" and payload["temperature_kelvin"] == 350.0
    assert isinstance(parse_job(payload), Frequencies)
    with pytest.raises(ValueError) as err:
        parse_job({**payload, "job_type": "md"})
    message = describe_validation_error(err.value)
    assert message == "job_type: must be one of " + ", ".join(f"'{t}'" for t in job_type_names())
    assert message.startswith("job_type: must be one of 'single_point_energy', 'opt', "
                              "'frequencies'")


def test_optimiser_defaults_are_the_tight_ones():
    fields = GeometryOptimization.model_fields
    assert fields["fmax"].default == 0.001 and fields["max_steps"].default == 1000
    assert fields["optimizer"].default == "ANC-RFO"
    assert Frequencies.model_fields["fmax"].default == fields["fmax"].default
    assert Frequencies.model_fields["optimizer"].default == fields["optimizer"].default


def test_cache_key_includes_solvation_and_frequency_options():
    from atomiverse_server.cache import cache_key

    def key(job: Any) -> str:
        return cache_key(job, engine="tblite", engine_version="0.8.0")

    a = mol("O")
    vacuum = SinglePointEnergy(atoms=a, level_of_theory=GFN2_XTB)
    alpb = SinglePointEnergy(atoms=a, level_of_theory=GFN2_XTB.with_solvent("water"))
    alias = SinglePointEnergy(atoms=a, level_of_theory=GFN2_XTB.with_solvent("h2o"))
    gbsa = SinglePointEnergy(atoms=a, level_of_theory=GFN2_XTB.with_solvent("water", "gbsa"))
    assert len({key(vacuum), key(alpb), key(gbsa)}) == 3 and key(alpb) == key(alias)
    f298 = Frequencies(atoms=a, level_of_theory=GFN2_XTB)
    f350 = Frequencies(atoms=a, level_of_theory=GFN2_XTB, temperature_kelvin=350)
    first = Frequencies(atoms=a, level_of_theory=GFN2_XTB, optimize_first=True)
    assert len({key(f298), key(f350), key(first), key(vacuum)}) == 4


def test_routing_picks_the_engine_the_level_needs():
    from atomiverse_server.submission import EntryRejected, Route

    both = Route("alpha-box", "c1", engines={"xtb": "22.1", "tblite": "0.8.0"})
    xtb_only = Route("xtb-box", "c2", engines={"xtb": "22.1"})
    tblite_only = Route("tb-box", "c3", engines={"tblite": "0.8.0"})

    def sp(level: LevelOfTheory) -> SinglePointEnergy:
        return SinglePointEnergy(atoms=mol("O"), level_of_theory=level)

    assert both.engine_for(sp(GFN2_XTB)) == ("xtb", "22.1")
    assert both.engine_for(sp(GFN2_XTB.with_solvent("water"))) == ("tblite", "0.8.0")
    assert both.engine_for(sp(GFN2_XTB.with_solvent("water", "gbsa"))) == ("xtb", "22.1")
    assert tblite_only.engine_for(sp(GFN2_XTB.with_solvent("water", "gbsa")))[0] == "tblite"
    with pytest.raises(EntryRejected) as info:
        xtb_only.engine_for(sp(GFN2_XTB.with_solvent("water")))
    assert "ALPB solvation needs the tblite engine" in str(info.value)
    assert "'xtb-box'" in str(info.value)
    with pytest.raises(EntryRejected, match="GFN-FF needs the xtb engine.*'tb-box'"):
        tblite_only.engine_for(sp(GFNFF))
    assert Route("fake", "c4", engines={"instant": "0"}).engine_for(sp(GFNFF))[0] == "instant"


# ----- solvation and spin against the libraries ----------------------------------------------
@pytest.mark.parametrize("smiles", ["CCO", "CC(=O)[O-]", "[CH3]"])
@pytest.mark.parametrize(("engine", "model"), [
    pytest.param("xtb", "gbsa", marks=pytest.mark.xtb_python, id="xtb-gbsa"), ("tblite", "gbsa"),
    ("tblite", "alpb")])
def test_solvated_energy_equals_the_library(engine: str, model: str, smiles: str):
    a = mol(smiles)
    level = GFN2_XTB.with_solvent("water", model=model)
    result = compute(engine, SinglePointEnergy(atoms=a, level_of_theory=level))
    SinglePointResult(**result)
    direct = xtb_gbsa_energy(a, "h2o") if engine == "xtb" else \
        tblite_energy(a, solvation=(model, "water"))
    assert abs(result["energy_hartree"] - direct) < SAME_LIBRARY_HARTREE
    vacuum = compute(engine, SinglePointEnergy(atoms=a, level_of_theory=GFN2_XTB))
    assert abs(result["energy_hartree"] - vacuum["energy_hartree"]) > 1e-4  # solvation counts
    assert result["level_of_theory"] == str(level)


@pytest.mark.xtb_python  # GBSA in chloroform through xtb-python
def test_gfn1_in_solvent_and_other_solvents_equal_the_library():
    a = mol("CCO")
    for level, direct in [
        (GFN1_XTB.with_solvent("acetone"),
         tblite_energy(a, "GFN1-xTB", ("alpb", "acetone"))),
        (GFN2_XTB.with_solvent("n-hexane"), tblite_energy(a, solvation=("alpb", "hexane"))),
        (GFN2_XTB.with_solvent("chcl3", "gbsa"), xtb_gbsa_energy(a, "chcl3")),
    ]:
        engine = "tblite" if level.solvation.model == "alpb" else "xtb"
        e = compute(engine, SinglePointEnergy(atoms=a, level_of_theory=level))["energy_hartree"]
        assert abs(e - direct) < SAME_LIBRARY_HARTREE, level


@pytest.mark.parametrize("engine", REAL_ENGINES)
def test_radical_single_point_has_one_unpaired_electron(engine: str):
    methyl = mol("[CH3]")
    assert methyl.multiplicity == 2
    sp = compute(engine, SinglePointEnergy(atoms=methyl, level_of_theory=GFN2_XTB))
    assert abs(sp["energy_hartree"] - (xtb_reference(methyl.numbers, methyl.positions, uhf=1)
                                       if engine == "xtb" else tblite_energy(methyl))) \
        < SAME_LIBRARY_HARTREE
    occupations = np.array(sp["orbital_occupations"])
    assert occupations.sum() == pytest.approx(7) and np.any(np.isclose(occupations, 1.0))


def test_radical_runs_optimisation_and_frequencies():
    methyl = mol("[CH3]")
    level = GFN2_XTB.with_solvent("water")
    opt = compute("tblite", GeometryOptimization(atoms=methyl, level_of_theory=level))
    assert opt["converged"] is True
    final = Atoms(numbers=methyl.numbers, positions=opt["final_positions_angstrom"],
                  multiplicity=2)
    assert abs(opt["energy_hartree"] - tblite_energy(final, solvation=("alpb", "water"))) \
        < SAME_LIBRARY_HARTREE
    freq = compute("tblite", Frequencies(atoms=final, level_of_theory=level))
    assert freq["n_imaginary"] == 0 and len(freq["frequencies_cm1"]) == 6


def test_engines_refuse_what_they_cannot_run():
    payload = SinglePointEnergy(atoms=mol("O"), level_of_theory=GFN2_XTB.with_solvent("water"),
                                ).model_dump()
    with pytest.raises(EngineError) as info:
        get_engine("xtb").compute(payload)
    assert info.value.error_type == "input"
    assert "ALPB solvation needs the tblite engine" in info.value.message
    with pytest.raises(EngineError, match="GFN-FF is not available in engine 'tblite'"):
        get_engine("tblite").compute(
            SinglePointEnergy(atoms=mol("O"), level_of_theory=GFNFF).model_dump())


# ----- GFN0-xTB and GFN-FF (xtb-python with the xtb program's parameter files) ---------------
@needs_gfn0
@pytest.mark.xtb_python
def test_gfn0_equals_the_library_and_leaves_gfn2_untouched(tmp_path):
    a = mol("CCO")
    before = xtb_reference(a.numbers, a.positions)
    result = compute("xtb", SinglePointEnergy(atoms=a, level_of_theory=GFN0_XTB))
    SinglePointResult(**result)
    assert abs(result["energy_hartree"] - isolated_xtb_energy(a, "GFN0-xTB", tmp_path)) \
        < SAME_LIBRARY_HARTREE
    assert result["homo_lumo_gap_ev"] > 0 and result["wiberg_bond_orders"]
    # Loading GFN0 in this process would shift GFN2 by ~1e-4 Hartree; the engine isolates it.
    assert xtb_reference(a.numbers, a.positions) == before


@needs_gfn_ff
@pytest.mark.xtb_python
def test_gfn_ff_single_point_equals_the_library(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = mol("CC(=O)[O-]")
    for level, solvent in [(GFNFF, None), (GFNFF.with_solvent("water", "gbsa"), "h2o")]:
        result = compute("xtb", SinglePointEnergy(atoms=a, level_of_theory=level))
        SinglePointResult(**result)
        reference_dir = tmp_path / f"ref-{solvent}"
        reference_dir.mkdir()
        direct = isolated_xtb_energy(a, "GFN-FF", reference_dir, solvent)
        assert abs(result["energy_hartree"] - direct) < SAME_LIBRARY_HARTREE
        assert result["orbital_energies_hartree"] is None  # a force field has no orbitals
        assert result["partial_charges_e"] is None and len(result["dipole_au"]) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("gfnff")]  # no litter


def all_trans_alkane(n_carbons: int) -> Atoms:
    """C_nH_(2n+2) in the all-trans zig-zag with ideal bond lengths and angles (Angstrom)."""
    half = math.radians(109.47 / 2)
    hc = math.radians(54.75)
    numbers: list[int] = [6] * n_carbons
    carbons = [np.array([i * 1.53 * math.sin(half), (i % 2) * 1.53 * math.cos(half), 0.0])
               for i in range(n_carbons)]
    positions = list(carbons)
    for i, c in enumerate(carbons):
        up = 1.0 if i % 2 else -1.0
        for side in (1.0, -1.0):
            positions.append(c + 1.09 * np.array([0.0, up * math.cos(hc), side * math.sin(hc)]))
        if i in (0, n_carbons - 1):
            end = -1.0 if i == 0 else 1.0
            positions.append(c + 1.09 * np.array([end * math.sin(half), up * math.cos(half), 0]))
    numbers += [1] * (len(positions) - n_carbons)
    return Atoms(numbers=numbers, positions=[tuple(map(float, p)) for p in positions])


@needs_gfn_ff
@pytest.mark.xtb_python
def test_gfn_ff_optimises_a_200_atom_molecule(tmp_path):
    alkane = all_trans_alkane(66)
    assert len(alkane) == 200 and alkane.formula == "C66H134"
    result = compute("xtb", GeometryOptimization(atoms=alkane, level_of_theory=GFNFF))
    OptimizationResult(**result)
    assert result["converged"] is True and result["warnings"] == []
    assert result["energy_hartree"] < result["energies_hartree"][0]
    final = Atoms(numbers=alkane.numbers, positions=result["final_positions_angstrom"])
    direct = isolated_xtb_energy(final, "GFN-FF", tmp_path, setup=alkane)
    assert abs(result["energy_hartree"] - direct) < SAME_LIBRARY_HARTREE
    assert result["trajectory_steps"] == list(range(result["n_steps"] + 1))  # whole
    assert len(json.dumps(result)) < 5_000_000


# ----- optimiser control and the trajectory ----------------------------------------------------
@pytest.mark.parametrize("engine", REAL_ENGINES)
def test_trajectory_holds_every_step_with_its_energy_and_gradient(engine: str):
    a = mol("CCO")
    result = compute(engine, GeometryOptimization(atoms=a, level_of_theory=GFN2_XTB,
                                                  optimizer="BFGS"))
    OptimizationResult(**result)
    n = result["n_steps"] + 1
    assert result["trajectory_steps"] == list(range(n))
    assert result["trajectory_energies_hartree"] == result["energies_hartree"]
    positions = np.array(result["trajectory_positions_angstrom"])
    gradients = np.array(result["trajectory_gradients_hartree_per_bohr"])
    assert positions.shape == gradients.shape == (n, len(a), 3)
    assert np.allclose(positions[0], a.positions, atol=1e-6)
    assert np.allclose(positions[-1], result["final_positions_angstrom"], atol=1e-6)
    assert np.allclose(gradients[-1], result["gradient_hartree_per_bohr"], atol=1e-7)
    middle = Atoms(numbers=a.numbers, positions=[tuple(p) for p in positions[n // 2]])
    direct = (xtb_reference(middle.numbers, middle.positions) if engine == "xtb"
              else tblite_energy(middle))
    assert abs(result["trajectory_energies_hartree"][n // 2] - direct) < 1e-5  # 1e-6 A rounding
    assert result["optimizer"] == "BFGS"


def test_max_steps_reached_is_done_but_says_so():
    result = compute(DEFAULT_ENGINE, GeometryOptimization(atoms=mol("CCO"),
                                                          level_of_theory=GFN2_XTB, max_steps=3))
    assert result["converged"] is False and result["n_steps"] == 3
    assert len(result["warnings"]) == 1 and "max_steps=3" in result["warnings"][0]
    assert "not a minimum" in result["warnings"][0]


def test_long_trajectories_are_sampled_not_dropped(monkeypatch):
    from atomiverse_core.drivers import trace

    monkeypatch.setattr(trace, "TRAJECTORY_MAX_ATOM_STEPS", 9 * 5)  # 5 frames of ethanol
    result = compute(DEFAULT_ENGINE, GeometryOptimization(atoms=mol("CCO"),
                                                          level_of_theory=GFN2_XTB))
    steps = result["trajectory_steps"]
    assert len(steps) == 5 and steps[0] == 0 and steps[-1] == result["n_steps"]
    assert len(result["trajectory_positions_angstrom"]) == 5
    assert len(result["energies_hartree"]) == result["n_steps"] + 1  # all energies stay


# ----- electronic structure fields -------------------------------------------------------------
@pytest.mark.xtb_python
def test_orbitals_frontier_and_bond_orders_from_the_same_calculation():
    from xtb.interface import Calculator, Param
    from xtb.libxtb import VERBOSITY_MUTED

    a = mol("CCO")
    xtb = compute("xtb", SinglePointEnergy(atoms=a, level_of_theory=GFN2_XTB))
    tb = compute("tblite", SinglePointEnergy(atoms=a, level_of_theory=GFN2_XTB))
    calc = Calculator(Param.GFN2xTB, *arrays(a))
    calc.set_verbosity(VERBOSITY_MUTED)
    res = calc.singlepoint()
    assert np.allclose(xtb["orbital_energies_hartree"], res.get_orbital_eigenvalues(), atol=1e-8)
    assert np.allclose(xtb["orbital_occupations"], res.get_orbital_occupations())
    for r in (xtb, tb):
        assert sum(r["orbital_occupations"]) == pytest.approx(20)  # valence electrons
        assert r["homo_hartree"] < r["lumo_hartree"]
        assert (r["lumo_hartree"] - r["homo_hartree"]) * Hartree == \
            pytest.approx(r["homo_lumo_gap_ev"])
        bonds = {(i, j): o for i, j, o in r["wiberg_bond_orders"]}
        assert len([o for o in bonds.values() if o > 0.5]) == 8  # C-C, C-O, 6 X-H
        assert bonds[(0, 1)] == pytest.approx(1.0, abs=0.1)  # C-C
    xtb_bonds = {(i, j): o for i, j, o in xtb["wiberg_bond_orders"]}
    tb_bonds = {(i, j): o for i, j, o in tb["wiberg_bond_orders"]}
    assert {k for k, v in xtb_bonds.items() if v > 0.5} == {k for k, v in tb_bonds.items()
                                                            if v > 0.5}
    assert max(abs(xtb_bonds[k] - tb_bonds[k]) for k in xtb_bonds if k in tb_bonds) < 2e-3


@pytest.mark.parametrize("engine", REAL_ENGINES)
def test_open_shell_bond_orders_are_read_right_from_tblite(engine: str):
    methyl = mol("[CH3]")
    r = compute(engine, SinglePointEnergy(atoms=methyl, level_of_theory=GFN2_XTB))
    bonds = {(i, j): o for i, j, o in r["wiberg_bond_orders"]}
    assert set(bonds) == {(0, 1), (0, 2), (0, 3)}
    assert all(o == pytest.approx(0.995, abs=0.01) for o in bonds.values())


# ----- frequencies -----------------------------------------------------------------------------
def test_water_has_three_real_modes_and_no_imaginary_one():
    from ase.vibrations import Vibrations

    result = compute(DEFAULT_ENGINE, Frequencies(atoms=mol("O"), level_of_theory=GFN2_XTB,
                                                 optimize_first=True, symmetry_number=2))
    FrequenciesResult(**result)
    assert result["optimized"] is True and result["converged"] is True
    freqs = result["frequencies_cm1"]
    assert len(freqs) == 3 and result["n_imaginary"] == 0 and result["warnings"] == []
    assert all(f > 1000 for f in freqs)
    # ASE's own Vibrations on the library's own ASE calculator, at the same geometry.
    water = Atoms(numbers=[8, 1, 1], positions=[tuple(p) for p in
                                                 result["final_positions_angstrom"]]).to_ase()
    water.calc = reference_ase_calculator()
    vib = Vibrations(water, name=str(Path(os.environ.get("TMPDIR", "/tmp")) /
                                     f"atomiverse-test-vib-{os.getpid()}"))
    try:
        vib.clean()
        vib.run()
        ase_freqs = np.sort(np.real(vib.get_frequencies()))[-3:]
    finally:
        vib.clean()
    assert np.allclose(freqs, ase_freqs, atol=2.0)  # cm^-1; ASE does not project rotations
    # Thermochemistry: ZPE is half the sum of the modes; H and G bracket it sensibly.
    zpe = 0.5 * sum(freqs) / 219474.6313632  # cm^-1 -> Hartree
    assert result["zero_point_energy_hartree"] == pytest.approx(zpe, rel=1e-4)
    e = result["energy_hartree"]
    assert e + zpe < result["enthalpy_hartree"] < e + zpe + 0.01
    assert result["gibbs_energy_hartree"] == pytest.approx(
        result["enthalpy_hartree"] - 298.15 * result["entropy_hartree_per_kelvin"], abs=1e-9)
    assert abs(e - xtb_reference([8, 1, 1], result["final_positions_angstrom"])) \
        < SAME_LIBRARY_HARTREE


def test_planar_ammonia_is_a_saddle_point_with_one_imaginary_mode():
    planar = Atoms(numbers=[7, 1, 1, 1], positions=[
        (0.0, 0.0, 0.0), (1.01, 0.0, 0.0), (-0.505, 0.874686, 0.0), (-0.505, -0.874686, 0.0)])
    result = compute(DEFAULT_ENGINE, Frequencies(atoms=planar, level_of_theory=GFN2_XTB,
                                                 optimize_first=True, symmetry_number=3))
    FrequenciesResult(**result)
    assert np.allclose(np.array(result["final_positions_angstrom"])[:, 2], 0.0, atol=1e-6)
    assert result["n_imaginary"] == 1 and len(result["frequencies_cm1"]) == 6
    (imaginary,) = result["imaginary_frequencies_cm1"]
    assert imaginary < -300 and result["frequencies_cm1"][0] == imaginary
    assert all(f > 0 for f in result["frequencies_cm1"][1:])
    assert any("1 imaginary mode" in w for w in result["warnings"])
    # The pyramidal minimum, for contrast: no imaginary mode.
    pyramid = compute(DEFAULT_ENGINE, Frequencies(atoms=mol("N"), level_of_theory=GFN2_XTB,
                                                  optimize_first=True, symmetry_number=3))
    assert pyramid["n_imaginary"] == 0 and pyramid["energy_hartree"] < result["energy_hartree"]


def test_linear_molecule_has_3n_minus_5_modes_and_instant_engine_answers():
    co2 = compute("tblite", Frequencies(atoms=mol("O=C=O"), level_of_theory=GFN2_XTB,
                                        optimize_first=True, symmetry_number=2))
    assert co2["geometry"] == "linear" and len(co2["frequencies_cm1"]) == 4
    assert co2["n_imaginary"] == 0
    fake = get_engine("instant").compute(
        Frequencies(atoms=mol("O"), level_of_theory=GFN2_XTB).model_dump())
    FrequenciesResult(**fake)


# ----- inputs ----------------------------------------------------------------------------------
def _sdf(tmp_path: Path) -> Path:
    from rdkit import Chem
    from rdkit.Chem import AllChem

    path = tmp_path / "mols.sdf"
    writer = Chem.SDWriter(str(path))
    for smiles, name, dims in [("CC(=O)[O-]", "acetate", 3), ("[CH3]", "methyl", 3),
                               ("CCO", "flat-ethanol", 2), ("CCN", "no-hydrogens", 3)]:
        m = Chem.AddHs(Chem.MolFromSmiles(smiles))
        if dims == 3:
            AllChem.EmbedMolecule(m, randomSeed=7)
        else:
            AllChem.Compute2DCoords(m)
        if name == "no-hydrogens":
            m = Chem.RemoveHs(m)
        m.SetProp("_Name", name)
        writer.write(m)
    writer.close()
    return path


def test_sdf_and_mol_inputs_keep_charge_spin_and_geometry(tmp_path):
    from atomiverse.atoms import read_sdf_records
    from rdkit import Chem

    path = _sdf(tmp_path)
    records = read_sdf_records(path)
    assert [r[0] for r in records] == ["acetate", "methyl", "flat-ethanol", "no-hydrogens"]
    acetate, methyl = records[0][1], records[1][1]
    assert (acetate.formula, acetate.charge, acetate.multiplicity) == ("C2H3O2", -1, 1)
    assert (methyl.charge, methyl.multiplicity) == (0, 2)
    assert records[2][1] is None and "2D coordinates" in records[2][2]
    assert records[3][1].formula == "C2H7N"  # implicit hydrogens placed in 3D
    assert Atoms.from_sdf(path, index=1) == methyl
    assert Atoms.from_sdf(path.read_text()) == acetate
    with pytest.raises(ValueError, match="2D coordinates"):
        Atoms.from_sdf(path, index=2)
    rd = Chem.SDMolSupplier(str(path), removeHs=False)[0]
    assert Atoms.from_mol(rd) == acetate
    assert Atoms.from_mol(Chem.MolToMolBlock(rd)) == acetate
    (tmp_path / "a.mol").write_text(Chem.MolToMolBlock(rd))
    assert Atoms.from_mol(tmp_path / "a.mol") == acetate
    # The charge from the file reaches the engine.
    e = compute(DEFAULT_ENGINE, SinglePointEnergy(atoms=acetate, level_of_theory=GFN2_XTB))
    assert abs(e["energy_hartree"] - xtb_reference(acetate.numbers, acetate.positions,
                                                   charge=-1)) < SAME_LIBRARY_HARTREE


def test_from_smiles_conformer_seed():
    a, b = Atoms.from_smiles("CCCCO", seed=1), Atoms.from_smiles("CCCCO", seed=1)
    assert a.positions == b.positions
    assert Atoms.from_smiles("CCCCO", seed=2).positions != a.positions


def test_cli_reads_sdf_and_builds_solvated_frequency_jobs(tmp_path):
    import argparse

    from atomiverse.cli.run import build_job, level_from_args, read_molecules

    mols = read_molecules(_sdf(tmp_path))
    assert [m.name for m in mols if m.atoms is not None] == ["acetate", "methyl",
                                                             "no-hydrogens"]
    args = argparse.Namespace(job="freq", level="gfn2", solvent="water",
                              solvation_model="alpb", temperature=310.0, no_cache=False)
    job = build_job(mols[0], args)
    assert isinstance(job, Frequencies) and job.optimize_first and job.atoms.charge == -1
    assert job.level_of_theory == GFN2_XTB.with_solvent("water")
    assert job.temperature_kelvin == 310.0
    with pytest.raises(ValueError, match="unknown solvent 'lava'"):
        level_from_args(argparse.Namespace(level="gfn2", solvent="lava",
                                           solvation_model="alpb"))


# ----- results back into ASE, RDKit and extended XYZ -------------------------------------------
def test_results_convert_to_ase_rdkit_and_extended_xyz(tmp_path):
    from ase.io import read

    job = GeometryOptimization(atoms=mol("CCO"), level_of_theory=GFN2_XTB, name="ethanol")
    record = {"job_id": "j1", "state": "done", "job": job.model_dump(mode="json"),
              "result": compute(DEFAULT_ENGINE, job)}
    result = record["result"]
    ase_atoms = results.to_ase(record)
    assert ase_atoms.get_potential_energy() == pytest.approx(result["energy_hartree"] * Hartree)
    assert np.allclose(ase_atoms.get_forces(),
                       -np.array(result["gradient_hartree_per_bohr"]) * Hartree / Bohr)
    assert np.allclose(ase_atoms.get_positions(), result["final_positions_angstrom"])
    assert ase_atoms.info["energy_hartree"] == result["energy_hartree"]
    assert ase_atoms.info["converged"] is True and ase_atoms.info["job_id"] == "j1"
    frames = results.trajectory_to_ase(record)
    assert len(frames) == result["n_steps"] + 1 and frames[-1].info["step"] == result["n_steps"]

    rd = results.to_rdkit(record)
    assert rd.GetNumAtoms() == 9 and rd.GetNumBonds() == 8
    assert rd.GetDoubleProp("energy_hartree") == result["energy_hartree"]
    from rdkit import Chem

    template = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    kept = results.to_rdkit(record, template=template)
    assert Chem.MolToSmiles(Chem.RemoveHs(kept)) == "CCO"
    assert np.allclose(kept.GetConformer().GetPositions(), result["final_positions_angstrom"])

    path = tmp_path / "out.extxyz"
    text = results.write_extxyz([record], path, trajectory=True)
    assert path.read_text() == text
    back = read(path, index=":")
    assert len(back) == len(frames)
    assert back[-1].get_potential_energy() == pytest.approx(result["energy_hartree"] * Hartree)
    assert back[0].info["energy_hartree"] == result["energies_hartree"][0]
    unfinished = {"job": job.model_dump(mode="json"), "result": None, "state": "running"}
    with pytest.raises(ValueError, match="has no result"):
        results.to_ase(unfinished)


# ----- through the platform ---------------------------------------------------------------------
def _run_on_platform(client, controller: str, jobs: list) -> list[dict]:
    res = client.submit_batch([j.model_dump() for j in jobs], compute_target=controller)
    assert res["submitted"] == len(jobs), res
    records = client.wait_jobs([j["job_id"] for j in res["jobs"]], timeout=120)
    full = [client.get_job(r["job_id"]) for r in records]
    assert [r["state"] for r in full] == ["done"] * len(jobs), [r.get("error") for r in full]
    return full


def test_platform_routes_alpb_to_tblite_and_runs_frequencies(client, alpha_controller):
    water = mol("O")
    jobs = [SinglePointEnergy(atoms=water, level_of_theory=GFN2_XTB.with_solvent("water"),
                              use_cache=False),
            Frequencies(atoms=water, level_of_theory=GFN2_XTB, optimize_first=True,
                        symmetry_number=2, use_cache=False)]
    full = _run_on_platform(client, alpha_controller, jobs)
    alpb, freq = (r["result"] for r in full)
    assert alpb["engine"] == "tblite"
    assert abs(alpb["energy_hartree"] - tblite_energy(water, solvation=("alpb", "water"))) \
        < SAME_LIBRARY_HARTREE
    FrequenciesResult(**freq)
    assert freq["engine"] == DEFAULT_ENGINE
    assert freq["n_imaginary"] == 0 and len(freq["frequencies_cm1"]) == 3
    assert full[1]["job_type"] == "frequencies"


@pytest.mark.xtb_python
@needs_gfn_ff
def test_platform_routes_gbsa_and_gfn_ff_to_xtb_python(client, alpha_controller):
    """GFN-FF runs in a child of the worker process (the parameter files need XTBPATH)."""
    jobs = [SinglePointEnergy(atoms=mol("CCO"), level_of_theory=GFN2_XTB.with_solvent(
                "water", "gbsa"), use_cache=False),
            GeometryOptimization(atoms=mol("CCO"), level_of_theory=GFNFF, use_cache=False)]
    gbsa, gfnff = (r["result"] for r in _run_on_platform(client, alpha_controller, jobs))
    assert gbsa["engine"] == "xtb"
    assert abs(gbsa["energy_hartree"] - xtb_gbsa_energy(mol("CCO"), "h2o")) \
        < SAME_LIBRARY_HARTREE
    OptimizationResult(**gfnff)
    assert gfnff["engine"] == "xtb" and gfnff["converged"] is True
    assert gfnff["level_of_theory"] == "GFN-FF"


def test_an_isolated_computation_dies_with_its_worker(tmp_path):
    """A cancelled job's worker is killed; the forked child computing GFN0/GFN-FF goes too."""
    import signal
    import time

    pid_file = tmp_path / "child.pid"
    code = (
        "import os, time\n"
        "from atomiverse_controller.engines.isolate import run_isolated\n"
        f"run_isolated(lambda: (open({str(pid_file)!r}, 'w').write(str(os.getpid())), "
        "time.sleep(60)), label='test')\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        child = int(pid_file.read_text())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and \
            Path(f"/proc/{child}/stat").read_text().split()[2] != "Z":
        assert time.monotonic() < deadline, "the child outlived its parent"
        time.sleep(0.05)
