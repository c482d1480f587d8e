"""The engine harness (QCEngine style): one class per native library.

An engine wraps one native library: ``found()``, a cached ``version()`` and
``compute(payload) -> dict``. A concrete engine only opens a :class:`Session` on one molecule
that returns energy and gradient; how a job type uses the session (single point, optimisation,
frequencies, ...) is that job type's driver in the shared registry
(:mod:`atomiverse_core.jobtypes`), so every engine reports the same fields, in the same units,
with the same error types. The contract between the two, and :class:`EngineError`, are in
:mod:`atomiverse_core.drivers.contract`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
from ase.units import Hartree
from atomiverse_core import jobtypes
from atomiverse_core.drivers.contract import (
    EngineError,
    Molecule,
    Session,
    parse_level,
    parse_molecule,
)
from atomiverse_core.schema import WIBERG_MIN_ORDER

# An orbital counts as occupied above half an electron: this puts the singly occupied orbital of
# a radical on the HOMO side, and works for restricted (0..2) and spin-resolved (0..1) occupations.
_OCCUPIED_THRESHOLD_E = 0.5
_BOND_ORDER_DECIMALS = 4


def frontier_orbitals_hartree(eps: list[float],
                              occ: list[float]) -> tuple[float | None, float | None]:
    """(HOMO, LUMO) energies over all spin channels, from flat lists of orbital energies and
    occupations; None where there is none (or the lists do not match)."""
    # Plain lists: a hundred orbitals take less time in a loop than in numpy's dispatch.
    if not eps or len(eps) != len(occ):
        return None, None
    homo = max((e for e, o in zip(eps, occ) if o > _OCCUPIED_THRESHOLD_E), default=None)
    lumo = min((e for e, o in zip(eps, occ) if o <= _OCCUPIED_THRESHOLD_E), default=None)
    return homo, lumo


def homo_lumo_gap_ev(homo: float | None, lumo: float | None) -> float | None:
    """The gap between the frontier orbitals (Hartree) in eV; None without both."""
    return None if homo is None or lumo is None else float((lumo - homo) * Hartree)


def sparse_bond_orders(matrix: Any) -> list[list[float]]:
    """``[i, j, order]`` for i < j and order >= WIBERG_MIN_ORDER, order rounded to 1e-4,
    in row-major order."""
    bo = np.asarray(matrix, dtype=float)
    i, j = np.nonzero(bo >= WIBERG_MIN_ORDER)
    upper = i < j
    i, j = i[upper], j[upper]
    orders = bo[i, j].round(_BOND_ORDER_DECIMALS)
    return [[a, b, o] for a, b, o in zip(i.tolist(), j.tolist(), orders.tolist(), strict=True)]


def electronic_properties(eigenvalues_hartree: Any, occupations: Any,
                          bond_orders: Any) -> dict[str, Any]:
    """Orbital energies and occupations, HOMO/LUMO and sparse Wiberg bond orders, from arrays
    a results object already holds (None where the method has none: GFN-FF)."""
    if eigenvalues_hartree is None or occupations is None:
        out: dict[str, Any] = {"homo_lumo_gap_ev": None, "orbital_energies_hartree": None,
                               "orbital_occupations": None, "homo_hartree": None,
                               "lumo_hartree": None}
    else:
        eps = np.asarray(eigenvalues_hartree, dtype=float).ravel().tolist()
        occ = np.asarray(occupations, dtype=float).ravel().tolist()
        homo, lumo = frontier_orbitals_hartree(eps, occ)
        out = {"homo_lumo_gap_ev": homo_lumo_gap_ev(homo, lumo), "orbital_energies_hartree": eps,
               "orbital_occupations": occ, "homo_hartree": homo, "lumo_hartree": lumo}
    out["wiberg_bond_orders"] = None if bond_orders is None else sparse_bond_orders(bond_orders)
    return out


class Engine(ABC):
    """A harness around one native library. Subclasses import that library inside methods."""

    name: ClassVar[str]
    methods: ClassVar[frozenset[str]] = frozenset({"gfn2-xtb", "gfn1-xtb"})
    solvation_models: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        self._version: str | None = None

    @abstractmethod
    def found(self) -> bool:
        """Whether the library imports on this machine."""

    @abstractmethod
    def _read_version(self) -> str: ...

    @abstractmethod
    def open_session(self, molecule: Molecule) -> Session: ...

    def version(self) -> str:
        if self._version is None:
            self._version = self._read_version()
        return self._version

    def compute(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Run one job payload; a SinglePointResult, OptimizationResult or FrequenciesResult
        as a dict.

        ``wall_time_seconds``/``core_seconds`` cover this call; the worker overwrites them with
        its own measurement."""
        start = time.perf_counter()
        molecule = parse_molecule(payload)
        self.check_level(molecule)
        job_type = jobtypes.find(payload.get("job_type"))
        if job_type is None:
            raise EngineError(f"job_type: must be one of {jobtypes.names()}, "
                              f"not {payload.get('job_type')!r}", "input")
        result = self.run(job_type, molecule, payload)
        wall = time.perf_counter() - start
        result["wall_time_seconds"] = wall
        result["core_seconds"] = wall
        return result

    def check_level(self, molecule: Molecule) -> None:
        if molecule.method not in self.methods:
            raise EngineError(f"level_of_theory.method: {molecule.level} is not available "
                              f"in engine {self.name!r}", "input")
        if molecule.solvation and molecule.solvation[0] not in self.solvation_models:
            model = molecule.solvation[0].upper()
            need = " (ALPB solvation needs the tblite engine)" if model == "ALPB" else ""
            raise EngineError(f"level_of_theory.solvation: {model} is not available in engine "
                              f"{self.name!r}{need}", "input")

    def run(self, job_type: jobtypes.JobType, molecule: Molecule,
            payload: dict[str, Any]) -> dict[str, Any]:
        """The job type's driver on this engine's sessions."""
        return job_type.run(self, molecule, payload)

    def point_result(self, molecule: Molecule, energy_hartree: float, gradient: np.ndarray,
                     properties: dict[str, Any]) -> dict[str, Any]:
        return {
            "energy_hartree": float(energy_hartree),
            "gradient_hartree_per_bohr": np.asarray(gradient, dtype=float).tolist(),
            **properties,
            "engine": self.name,
            "engine_version": self.version(),
            "level_of_theory": molecule.level,
            "warnings": [],
            "wall_time_seconds": 0.0,
            "core_seconds": 0.0,
        }


__all__ = ["Engine", "EngineError", "Molecule", "Session", "electronic_properties",
           "frontier_orbitals_hartree", "homo_lumo_gap_ev", "parse_level", "parse_molecule",
           "sparse_bond_orders"]
