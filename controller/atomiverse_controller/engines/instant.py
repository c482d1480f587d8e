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
from atomiverse_core import jobtypes

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

    def run(self, job_type: jobtypes.JobType, molecule: Molecule,
            payload: dict[str, Any]) -> dict[str, Any]:
        # Zero gradient: already at a stationary point, no ASE needed; each job type says what
        # its result is on such a flat surface.
        session = self.open_session(molecule)
        energy, gradient = session.evaluate(molecule.positions_bohr)
        point = self.point_result(molecule, energy, gradient, session.properties())
        return job_type.flat_surface_result(point, molecule, payload)
