"""An ASE calculator whose every energy and force is a job on a compute target.

    from ase.optimize import BFGS
    from atomiverse.ase import AtomiverseCalculator
    from atomiverse.levels import GFN2_XTB

    molecule.calc = AtomiverseCalculator(level_of_theory=GFN2_XTB, compute_target="local")
    BFGS(molecule).run(fmax=0.01)          # or NEB, molecular dynamics: unchanged

Each calculation submits a single point (``SinglePointEnergy`` with the given level and
``job_options``) to ``compute_target`` ("local", a named controller on a lab server or HPC
node, or the managed pool) and waits for it; a geometry the workspace has computed before (to
1e-5 Angstrom, at the same level and engine) is answered from the result cache at once.
Energies come back in eV and forces in eV/Angstrom, as ASE expects (the job's Hartree and
Hartree/Bohr converted once). Charge and spin: ``charge=``/``multiplicity=`` here, or
``atoms.info["charge"]``/``atoms.info["multiplicity"]`` per structure. Molecules only: a
structure with periodic boundary conditions is refused.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from ase.calculators.calculator import Calculator, CalculatorError, all_changes
from ase.units import Bohr, Hartree
from atomiverse_core.jobtypes import input_models
from atomiverse_core.levels import GFN2_XTB, LevelOfTheory

from ._client import Client, get_default_client

_SINGLE_POINT = "SinglePointEnergy"


class AtomiverseCalculator(Calculator):  # type: ignore[misc]
    implemented_properties: ClassVar[list[str]] = ["energy", "free_energy", "forces"]

    def __init__(self, level_of_theory: LevelOfTheory = GFN2_XTB,
                 compute_target: str | None = "local", *, client: Client | None = None,
                 charge: int = 0, multiplicity: int = 1, timeout: float | None = None,
                 **job_options: Any) -> None:
        super().__init__()
        self.level_of_theory = level_of_theory
        self.compute_target = compute_target
        self.client = client
        self.charge, self.multiplicity = charge, multiplicity
        self.timeout = timeout
        self.job_options = job_options
        self.last_record: dict[str, Any] | None = None  # the last job's record, as returned
        # Checked now, not at the first calculation: a bad option names itself here. The
        # payload of every calculation is this one with the atoms replaced: validating the
        # model again each call cost a third of the client's CPU a call, and the server
        # checks every job it is sent (a bad geometry comes back as a 422 naming the field).
        self._template = input_models()[_SINGLE_POINT].model_validate(
            {"atoms": {"numbers": [1, 1], "positions": [[0, 0, 0], [0, 0, 0.74]]},
             "level_of_theory": level_of_theory, **job_options}).model_dump(mode="json")

    def calculate(self, atoms: Any = None, properties: Any = ("energy",),
                  system_changes: Any = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        structure = self.atoms
        if structure.pbc.any():
            raise CalculatorError("AtomiverseCalculator computes molecules only: these atoms "
                                  f"have periodic boundary conditions (pbc={structure.pbc})")
        record = self._compute({**self._template, "atoms": {
            "numbers": structure.numbers.tolist(), "positions": structure.positions.tolist(),
            "charge": int(structure.info.get("charge", self.charge)),
            "multiplicity": int(structure.info.get("multiplicity", self.multiplicity))}})
        if record["state"] != "done":
            raise CalculatorError(f"job {record['job_id']} {record['state']}: "
                                  f"{record.get('error')}")
        result = record["result"]
        energy = result["energy_hartree"] * Hartree
        self.results = {"energy": energy, "free_energy": energy,
                        "forces": -np.asarray(result["gradient_hartree_per_bohr"])
                        * (Hartree / Bohr)}

    def _compute(self, payload: dict[str, Any]) -> dict[str, Any]:
        api = self.client or get_default_client()
        # One request that submits and waits for the result (or finds it in the cache).
        record = api.run_job(payload, compute_target=self.compute_target, timeout=self.timeout)
        self.last_record = record
        return record


__all__ = ["AtomiverseCalculator"]
