"""The xtb-python engine keeps its last Calculator for the next job of the same molecule
(``SpareCalculator``): a job's numbers stay those of a Calculator made for it alone, to the last
bit but the payload's rounding, whatever ran on the kept one before (other geometries, a loosened SCF, a restart)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.units import Bohr
from atomiverse.atoms import Atoms
from atomiverse.jobs import GeometryOptimization, SinglePointEnergy
from atomiverse.levels import GFN2_XTB

pytestmark = pytest.mark.xtb_python

ETHANOL = Atoms.from_smiles("CCO")


def moved(a: Atoms, seed: int) -> Atoms:
    rng = np.random.default_rng(seed)
    positions = np.asarray(a.positions) + rng.normal(0, 0.05, (len(a), 3))
    return Atoms(numbers=a.numbers, positions=positions.tolist(), charge=a.charge,
                 multiplicity=a.multiplicity)


def alone(calculator: type, a: Atoms, solvent: str | None = None
          ) -> tuple[float, np.ndarray, np.ndarray]:
    """A Calculator made for this geometry alone: energy, gradient and charges."""
    from xtb.interface import Param
    from xtb.libxtb import VERBOSITY_MUTED
    from xtb.utils import get_solvent

    calc = calculator(Param.GFN2xTB, np.array(a.numbers), np.array(a.positions) / Bohr)
    calc.set_verbosity(VERBOSITY_MUTED)
    if solvent:
        calc.set_solvent(get_solvent(solvent))
    res = calc.singlepoint()
    return res.get_energy(), res.get_gradient(), res.get_charges()


def counted_calculators(monkeypatch) -> list:  # type: ignore[no-untyped-def]
    """xtb-python's Calculator, made to note each one built (its parametrisation)."""
    import xtb.interface

    made: list = []

    class Counted(xtb.interface.Calculator):
        def __init__(self, *args, **kwargs):
            made.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(xtb.interface, "Calculator", Counted)
    return made


def test_jobs_of_one_molecule_share_a_calculator_and_keep_the_numbers_of_their_own(
        monkeypatch):
    import xtb.interface
    from atomiverse_controller.engines.base import parse_molecule
    from atomiverse_controller.engines.xtb_python import XTBPythonEngine

    original = xtb.interface.Calculator
    made = counted_calculators(monkeypatch)
    engine = XTBPythonEngine()
    water = moved(Atoms.from_smiles("O"), 6)  # no shared coordinate: not turned
    gbsa = GFN2_XTB.with_solvent("water", model="gbsa")
    points = [(moved(ETHANOL, 1), GFN2_XTB, None), ("opt", GFN2_XTB, None),
              ("loose", GFN2_XTB, None), (moved(ETHANOL, 7), GFN2_XTB, None),
              (moved(ETHANOL, 2), GFN2_XTB, None), (water, GFN2_XTB, None),
              (moved(ETHANOL, 3), gbsa, "water"), (moved(ETHANOL, 4), GFN2_XTB, None),
              (moved(ETHANOL, 5), GFN2_XTB, None)]
    for a, level, solvent in points:
        if a == "opt":  # loosens the SCF on its early steps and restarts it from each step
            engine.compute(GeometryOptimization(atoms=moved(ETHANOL, 9),
                                                level_of_theory=level).model_dump())
            continue
        if a == "loose":  # a session that leaves the SCF loosened (6x) on the calculator
            session = engine.open_session(parse_molecule(SinglePointEnergy(
                atoms=moved(ETHANOL, 8), level_of_theory=level).model_dump()))
            session.set_scf_accuracy(6.0)
            session.evaluate(np.array(moved(ETHANOL, 8).positions) / Bohr)
            continue
        result = engine.compute(SinglePointEnergy(atoms=a, level_of_theory=level).model_dump())
        energy, gradient, charges = alone(original, a, solvent)
        # The payload's round trip moves the last bits (about 1e-13); a loosened SCF left on
        # the calculator, or a restart from another job's charges, moves the gradient and
        # charges by 1e-7 to 1e-5 (the energy by 1e-12 to 1e-10).
        assert result["energy_hartree"] == pytest.approx(energy, abs=1e-11)
        assert np.allclose(result["gradient_hartree_per_bohr"], gradient, rtol=0, atol=1e-10)
        assert np.allclose(result["partial_charges_e"], charges, rtol=0, atol=1e-10)
    # Ethanol, kept through the optimisation; water; ethanol in GBSA; ethanol again.
    assert len(made) == 4, made


def test_a_calculator_whose_calculation_failed_is_not_handed_on():
    from atomiverse_controller.engines.xtb_python import SpareCalculator, _Warm
    from atomiverse_core.drivers.contract import Molecule

    spare = SpareCalculator()
    key = SpareCalculator.key(Molecule(np.array(ETHANOL.numbers),
                                       np.array(ETHANOL.positions), 0, 0, "gfn2-xtb"))
    warm, other = _Warm(object()), _Warm(object())
    spare.keep(key, warm)
    spare.drop(other)  # another session's failure leaves it
    assert spare.get(key) is warm
    spare.drop(warm)
    assert spare.get(key) is None
    gfnff = Molecule(np.array(ETHANOL.numbers), np.array(ETHANOL.positions), 0, 0, "gfn-ff")
    assert SpareCalculator.key(gfnff) is None  # topology from the first geometry: never kept


def test_after_a_failed_update_the_next_job_gets_a_new_calculator(monkeypatch):
    from atomiverse_controller.engines import EngineError
    from atomiverse_controller.engines.base import parse_molecule
    from atomiverse_controller.engines.xtb_python import XTBPythonEngine

    made = counted_calculators(monkeypatch)
    engine = XTBPythonEngine()
    job = SinglePointEnergy(atoms=ETHANOL, level_of_theory=GFN2_XTB).model_dump()
    first = engine.compute(job)
    session = engine.open_session(parse_molecule(job))
    clash = np.array(ETHANOL.positions) / Bohr
    clash[1] = clash[0]  # two atoms on one spot: xtb refuses the update
    with pytest.raises(EngineError, match="geometry update"):
        session.evaluate(clash)
    assert engine.compute(job)["energy_hartree"] == first["energy_hartree"]
    assert len(made) == 2  # the failed one was not handed on
