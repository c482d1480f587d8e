"""A FAKE engine for tests and benchmarks of the platform's own overhead. Not chemistry.

``instant`` answers every job at once with a schema-valid but meaningless result: energy
``-0.5 * sum(Z)`` Hartree, zero gradient, no gap, optimisations that converge in zero steps at
the input geometry. It is never advertised to the server as a real engine (see
``available_engines``) and a job cannot ask for it; a controller runs it only when started with
``engine="instant"``.

Test-only fault hooks, chosen by the job's ``name``, exist in this engine and nowhere else:

* ``__crash_segfault__``: the worker process dies by SIGSEGV, as a native crash would;
* ``__crash_abort__``: the worker process aborts (SIGABRT);
* ``__sleep_N__``: sleep N seconds (N may be fractional), to test walltime and cancellation;
* ``__fail_input__``: raise ``EngineError(error_type="input")``.
"""

from __future__ import annotations

import os
import re
import signal
import time
from typing import Any

import numpy as np

from .base import Engine, EngineError, Molecule

VERSION = "0.0-fake"
_SLEEP_HOOK = re.compile(r"^__sleep_(\d+(?:\.\d+)?)__$")


def _run_fault_hook(name: str | None) -> None:
    if not name or not name.startswith("__"):
        return
    if name == "__crash_segfault__":
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(10)  # the signal is delivered asynchronously; never return a result
    elif name == "__crash_abort__":
        os.abort()
    elif name == "__fail_input__":
        raise EngineError("instant: input rejected on request (__fail_input__)", "input")
    elif match := _SLEEP_HOOK.match(name):
        time.sleep(float(match.group(1)))


class InstantSession:
    def __init__(self, molecule: Molecule) -> None:
        self._energy = -0.5 * float(molecule.numbers.sum())
        self._n = int(molecule.numbers.size)

    def evaluate(self, positions_bohr: np.ndarray) -> tuple[float, np.ndarray]:
        return self._energy, np.zeros((self._n, 3))

    def set_scf_accuracy(self, scale: float) -> None:
        """No SCF here."""

    def properties(self) -> dict[str, Any]:
        return {"homo_lumo_gap_ev": None, "dipole_au": [0.0, 0.0, 0.0],
                "partial_charges_e": [0.0] * self._n}


class InstantEngine(Engine):
    name = "instant"
    methods = frozenset({"gfn2-xtb", "gfn1-xtb", "gfn0-xtb", "gfn-ff"})
    solvation_models = frozenset({"alpb", "gbsa"})

    def found(self) -> bool:
        return True

    def _read_version(self) -> str:
        return VERSION

    def open_session(self, molecule: Molecule) -> InstantSession:
        return InstantSession(molecule)

    def compute(self, payload: dict[str, Any]) -> dict[str, Any]:
        _run_fault_hook(payload.get("name"))
        return super().compute(payload)

    def _run(self, molecule: Molecule, payload: dict[str, Any]) -> dict[str, Any]:
        # Zero gradient: already converged at the input geometry, no ASE needed; frequencies
        # are all zero (a flat surface), thermochemistry is left at the electronic energy.
        job_type = payload["job_type"]
        if job_type == "single_point_energy":
            return self._single_point(molecule)
        session = self.open_session(molecule)
        energy, gradient = session.evaluate(molecule.positions_bohr)
        result = self.point_result(molecule, energy, gradient, session.properties())
        positions = molecule.positions_angstrom.tolist()
        if job_type == "opt":
            result.update(
                final_positions_angstrom=positions,
                energies_hartree=[energy],
                n_steps=0,
                converged=True,
                fmax_ev_per_angstrom=0.0,
                optimizer=payload.get("optimizer") or "LBFGS",
            )
            return result
        n = len(positions)
        result.update(
            final_positions_angstrom=positions,
            frequencies_cm1=[0.0] * max(0, 3 * n - 6), imaginary_frequencies_cm1=[],
            n_imaginary=0, zero_point_energy_hartree=0.0, enthalpy_hartree=energy,
            gibbs_energy_hartree=energy, entropy_hartree_per_kelvin=0.0,
            temperature_kelvin=float(payload.get("temperature_kelvin") or 298.15),
            pressure_pascal=float(payload.get("pressure_pascal") or 101325.0),
            symmetry_number=int(payload.get("symmetry_number") or 1),
            geometry="monatomic" if n == 1 else "nonlinear",
        )
        return result
