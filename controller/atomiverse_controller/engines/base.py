"""The engine harness contract (QCEngine style) and the drivers every engine shares.

An engine wraps one native library: ``found()``, a cached ``version()`` and
``compute(payload) -> dict``. A concrete engine only opens a :class:`Session` on one molecule
(numbers, charge, unpaired electrons, method and solvation fixed, positions updatable) that
returns energy and gradient. The single-point, optimisation (:mod:`.optimize`) and frequency
(:mod:`.vibrations`) drivers are shared, so every engine reports the same fields, in the same
units, with the same error types.

Units convert once, at this boundary: payload positions are Angstrom, sessions work in
Bohr/Hartree (as xtb and tblite do), ASE in Angstrom/eV. Result fields name their unit
(``energy_hartree``, ``gradient_hartree_per_bohr``, ``dipole_au`` in e*Bohr, ...).

Failures are data: everything an engine raises on purpose is an :class:`EngineError` whose
``error_type`` says whether a retry can help (``input``: never; ``convergence``: not with the same
settings; ``internal``: maybe).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
from ase.units import Bohr, Hartree
from atomiverse_core.jobs import describe_validation_error
from atomiverse_core.levels import LevelOfTheory
from atomiverse_core.schema import WIBERG_MIN_ORDER
from pydantic import ValidationError

EngineErrorType = Literal["input", "convergence", "internal"]
JOB_TYPES = ("single_point_energy", "opt", "frequencies")

# An orbital counts as occupied above half an electron: this puts the singly occupied orbital of
# a radical on the HOMO side, and works for restricted (0..2) and spin-resolved (0..1) occupations.
_OCCUPIED_THRESHOLD_E = 0.5
_BOND_ORDER_DECIMALS = 4
_MAX_CACHED_LEVELS = 64
_LEVELS: dict[Any, LevelOfTheory] = {}  # parse_level's: valid levels by their hashable form


class EngineError(Exception):
    """A failed calculation, with ``error_type`` one of ``input | convergence | internal``."""

    def __init__(self, message: str, error_type: EngineErrorType = "internal") -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type

    def __reduce__(self) -> tuple[Any, ...]:
        # Default pickling would drop error_type; keep it intact across process boundaries.
        return (type(self), (self.message, self.error_type))


@dataclass(frozen=True)
class Molecule:
    """What an engine needs from the payload, already in array form."""

    numbers: np.ndarray  # (n,) int
    positions_angstrom: np.ndarray  # (n, 3) float
    charge: int
    uhf: int  # unpaired electrons = multiplicity - 1
    method: str  # "gfn2-xtb" | "gfn1-xtb" | "gfn0-xtb" | "gfn-ff"
    solvation: tuple[str, str] | None = None  # (model "alpb" | "gbsa", canonical solvent name)
    level: str = ""  # for people: "GFN2-xTB/ALPB(water)"

    @property
    def positions_bohr(self) -> np.ndarray:
        return self.positions_angstrom / Bohr


class Session(Protocol):
    """One molecule in one native calculator; created lazily at the first ``evaluate``."""

    def evaluate(self, positions_bohr: np.ndarray) -> tuple[float, np.ndarray]:
        """Energy (Hartree) and gradient (Hartree/Bohr, shape (n, 3)) at these positions."""
        ...

    def set_scf_accuracy(self, scale: float) -> None:
        """Scale the SCF's convergence thresholds for later evaluations (1: the library's
        default; 3 or 6: looser, for optimisation steps far from the minimum)."""
        ...

    def properties(self) -> dict[str, Any]:
        """SinglePointResult's optional fields (gap, dipole, charges, orbitals, bond orders)
        of the last evaluation, read from the same results object."""
        ...


def parse_molecule(payload: dict[str, Any]) -> Molecule:
    """The molecule of a job payload; raises EngineError("input") naming the bad field.

    The server validated the payload already; this only guards the engine against a malformed
    one (a crash in native code costs a worker, a Python error costs nothing)."""
    try:
        atoms = payload["atoms"]
        numbers = np.asarray(atoms["numbers"], dtype=np.int32)
        positions = np.asarray(atoms["positions"], dtype=float)
        charge = int(atoms.get("charge", 0))
        multiplicity = int(atoms.get("multiplicity", 1))
        level = parse_level(payload["level_of_theory"])
    except ValidationError as e:
        raise EngineError(f"level_of_theory: {describe_validation_error(e)}", "input") from e
    except (KeyError, TypeError, ValueError) as e:
        raise EngineError(f"payload: malformed job ({type(e).__name__}: {e})", "input") from e
    if numbers.ndim != 1 or numbers.size == 0 or positions.shape != (numbers.size, 3):
        raise EngineError(f"atoms: {numbers.size} numbers need positions of shape "
                          f"({numbers.size}, 3), got {positions.shape}", "input")
    if numbers.min() < 1 or numbers.max() > level.max_atomic_number:
        raise EngineError(f"atoms: {level} covers elements Z 1-{level.max_atomic_number}",
                          "input")
    if not np.isfinite(positions).all():
        raise EngineError("atoms: positions must be finite", "input")
    if multiplicity < 1:
        raise EngineError("atoms.multiplicity: must be at least 1", "input")
    solvation = (level.solvation.model, level.solvation.solvent) if level.solvation else None
    return Molecule(numbers, positions, charge, multiplicity - 1, level.method, solvation,
                    str(level))


def parse_level(data: Any) -> LevelOfTheory:
    """``data`` validated as a LevelOfTheory; ValidationError if it is not one.

    A worker sees the same few levels thousands of times, and validating one costs about as
    much as the rest of a small job's bookkeeping; levels are frozen, so one copy serves all."""
    try:
        key = _hashable(data)
    except TypeError:  # not JSON-shaped: let validation say what is wrong with it
        return LevelOfTheory.model_validate(data)
    level = _LEVELS.get(key)
    if level is None:
        level = LevelOfTheory.model_validate(data)
        if len(_LEVELS) < _MAX_CACHED_LEVELS:
            _LEVELS[key] = level
    return level


def _hashable(value: Any) -> Any:
    # Types are part of the key: 1, 1.0 and True are equal in Python but not to validation.
    if isinstance(value, dict):
        return ("dict", tuple((k, _hashable(v)) for k, v in sorted(value.items())))
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(_hashable(v) for v in value))
    hash(value)
    return (type(value).__name__, value)


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
        job_type = payload.get("job_type")
        if job_type not in JOB_TYPES:
            raise EngineError(f"job_type: must be one of {JOB_TYPES}, not {job_type!r}", "input")
        result = self._run(molecule, payload)
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

    def _run(self, molecule: Molecule, payload: dict[str, Any]) -> dict[str, Any]:
        from .optimize import optimize
        from .vibrations import frequencies

        job_type = payload["job_type"]
        if job_type == "single_point_energy":
            return self._single_point(molecule)
        if job_type == "opt":
            return optimize(self, molecule, payload)
        return frequencies(self, molecule, payload)

    # ----- drivers ---------------------------------------------------------------------------
    def _single_point(self, molecule: Molecule) -> dict[str, Any]:
        session = self.open_session(molecule)
        energy, gradient = session.evaluate(molecule.positions_bohr)
        return self.point_result(molecule, energy, gradient, session.properties())

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
