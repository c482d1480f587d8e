"""The contract between a job type's driver and an engine (QCEngine's harness style).

A driver (single point, optimisation, frequencies: :mod:`atomiverse_core.jobtypes`) is given an
:class:`EngineHarness` and the job's :class:`Molecule`; it opens one :class:`Session` on the
molecule (numbers, charge, unpaired electrons, method and solvation fixed, positions updatable)
and asks it for energies and gradients. The engines themselves (xtb-python, tblite, ...) live in
the controller; this module is all a driver knows of them.

Units convert once, at this boundary: payload positions are Angstrom, sessions work in
Bohr/Hartree (as xtb and tblite do), ASE in Angstrom/eV.

Failures are data: everything an engine or a driver raises on purpose is an
:class:`EngineError` whose ``error_type`` says whether a retry can help (``input``: never;
``convergence``: not with the same settings; ``internal``: maybe).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from ase.units import Bohr
from pydantic import ValidationError

from ..jobs import describe_model_error
from ..levels import LevelOfTheory

EngineErrorType = Literal["input", "convergence", "internal"]
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
        raise EngineError(f"level_of_theory: {describe_model_error(e)}", "input") from e
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


class EngineHarness(Protocol):
    """What a driver needs of an engine."""

    name: str

    def open_session(self, molecule: Molecule) -> Session: ...

    def point_result(self, molecule: Molecule, energy_hartree: float, gradient: np.ndarray,
                     properties: dict[str, Any]) -> dict[str, Any]:
        """A SinglePointResult dict for one evaluation (engine name and version filled in)."""
        ...
