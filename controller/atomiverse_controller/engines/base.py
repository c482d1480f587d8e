"""The engine harness contract (QCEngine style) and the drivers every engine shares.

An engine wraps one native library: ``found()``, a cached ``version()`` and
``compute(payload) -> dict``. A concrete engine only opens a :class:`Session` on one molecule
(numbers, charge and unpaired electrons fixed, positions updatable) that returns energy and
gradient. The single-point and optimisation drivers live here, so every engine reports the same
fields, in the same units, with the same error types.

Units convert once, at this boundary: payload positions are Angstrom, sessions work in
Bohr/Hartree (as xtb and tblite do), ASE optimisers in Angstrom/eV. Result fields name their unit
(``energy_hartree``, ``gradient_hartree_per_bohr``, ``dipole_au`` in e*Bohr, ...).

Failures are data: everything an engine raises on purpose is an :class:`EngineError` whose
``error_type`` says whether a retry can help (``input``: never; ``convergence``: not with the same
settings; ``internal``: maybe).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.units import Bohr, Hartree

EngineErrorType = Literal["input", "convergence", "internal"]
JOB_TYPES = ("single_point_energy", "opt")
OPTIMIZERS = ("LBFGS", "BFGS", "FIRE")
DEFAULT_FMAX_EV_PER_ANGSTROM = 0.01
DEFAULT_MAX_STEPS = 500

# An orbital counts as occupied above half an electron: this puts the singly occupied orbital of
# a radical on the HOMO side, and works for restricted (0..2) and spin-resolved (0..1) occupations.
_OCCUPIED_THRESHOLD_E = 0.5


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
    method: str  # "gfn2-xtb" | "gfn1-xtb"

    @property
    def positions_bohr(self) -> np.ndarray:
        return self.positions_angstrom / Bohr


class Session(Protocol):
    """One molecule in one native calculator; created lazily at the first ``evaluate``."""

    def evaluate(self, positions_bohr: np.ndarray) -> tuple[float, np.ndarray]:
        """Energy (Hartree) and gradient (Hartree/Bohr, shape (n, 3)) at these positions."""
        ...

    def properties(self) -> dict[str, Any]:
        """``homo_lumo_gap_ev``, ``dipole_au``, ``partial_charges_e`` of the last evaluation."""
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
        method = str(payload["level_of_theory"]["method"])
    except (KeyError, TypeError, ValueError) as e:
        raise EngineError(f"payload: malformed job ({type(e).__name__}: {e})", "input") from e
    if numbers.ndim != 1 or numbers.size == 0 or positions.shape != (numbers.size, 3):
        raise EngineError(f"atoms: {numbers.size} numbers need positions of shape "
                          f"({numbers.size}, 3), got {positions.shape}", "input")
    if numbers.min() < 1 or numbers.max() > 86:
        raise EngineError("atoms: xTB methods cover elements Z 1-86", "input")
    if not np.isfinite(positions).all():
        raise EngineError("atoms: positions must be finite", "input")
    if multiplicity < 1:
        raise EngineError("atoms.multiplicity: must be at least 1", "input")
    return Molecule(numbers, positions, charge, multiplicity - 1, method)


def homo_lumo_gap_ev(eigenvalues_hartree: np.ndarray, occupations: np.ndarray) -> float | None:
    """Gap between the highest occupied and lowest unoccupied orbital, over all spin channels."""
    eps = np.asarray(eigenvalues_hartree, dtype=float).ravel()
    occ = np.asarray(occupations, dtype=float).ravel()
    if eps.size == 0 or eps.size != occ.size:
        return None
    occupied, virtual = eps[occ > _OCCUPIED_THRESHOLD_E], eps[occ <= _OCCUPIED_THRESHOLD_E]
    if occupied.size == 0 or virtual.size == 0:
        return None
    return float((virtual.min() - occupied.max()) * Hartree)


class Engine(ABC):
    """A harness around one native library. Subclasses import that library inside methods."""

    name: ClassVar[str]
    methods: ClassVar[frozenset[str]] = frozenset({"gfn2-xtb", "gfn1-xtb"})

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
        """Run one job payload; a SinglePointResult or OptimizationResult as a dict.

        ``wall_time_seconds``/``core_seconds`` cover this call; the worker overwrites them with
        its own measurement."""
        start = time.perf_counter()
        molecule = parse_molecule(payload)
        if molecule.method not in self.methods:
            raise EngineError(f"level_of_theory.method: {molecule.method!r} is not available "
                              f"in engine {self.name!r}", "input")
        job_type = payload.get("job_type")
        if job_type == "single_point_energy":
            result = self._single_point(molecule)
        elif job_type == "opt":
            result = self._optimize(molecule, payload)
        else:
            raise EngineError(f"job_type: must be one of {JOB_TYPES}, not {job_type!r}", "input")
        wall = time.perf_counter() - start
        result["wall_time_seconds"] = wall
        result["core_seconds"] = wall
        return result

    # ----- drivers ---------------------------------------------------------------------------
    def _single_point(self, molecule: Molecule) -> dict[str, Any]:
        session = self.open_session(molecule)
        energy, gradient = session.evaluate(molecule.positions_bohr)
        return self._point_result(energy, gradient, session)

    def _point_result(self, energy_hartree: float, gradient: np.ndarray,
                      session: Session) -> dict[str, Any]:
        return {
            "energy_hartree": float(energy_hartree),
            "gradient_hartree_per_bohr": np.asarray(gradient, dtype=float).tolist(),
            **session.properties(),
            "engine": self.name,
            "engine_version": self.version(),
            "wall_time_seconds": 0.0,
            "core_seconds": 0.0,
        }

    def _optimize(self, molecule: Molecule, payload: dict[str, Any]) -> dict[str, Any]:
        optimizer, fmax, max_steps = _opt_settings(payload)
        session = self.open_session(molecule)
        # One session for the whole run: the native calculator is created once and only its
        # positions change between steps, which also restarts each SCF from the previous one.
        trace = _run_ase_optimizer(session, molecule, optimizer, fmax, max_steps)
        result = self._point_result(trace.energies_hartree[-1], trace.gradient, session)
        forces = np.linalg.norm(trace.gradient, axis=1) * (Hartree / Bohr)
        result.update(
            final_positions_angstrom=trace.positions_angstrom.tolist(),
            energies_hartree=trace.energies_hartree,
            n_steps=trace.n_steps,
            converged=trace.converged,
            fmax_ev_per_angstrom=float(forces.max()),
            optimizer=optimizer,
        )
        return result


def _opt_settings(payload: dict[str, Any]) -> tuple[str, float, int]:
    optimizer = payload.get("optimizer") or "LBFGS"
    if optimizer not in OPTIMIZERS:
        raise EngineError(f"optimizer: must be one of {OPTIMIZERS}, not {optimizer!r}", "input")
    try:
        fmax = float(payload.get("fmax") or DEFAULT_FMAX_EV_PER_ANGSTROM)
        max_steps = int(payload.get("max_steps") or DEFAULT_MAX_STEPS)
    except (TypeError, ValueError) as e:
        raise EngineError(f"fmax/max_steps: {e}", "input") from e
    if not (math.isfinite(fmax) and fmax > 0) or max_steps < 1:
        raise EngineError("fmax must be > 0 and max_steps >= 1", "input")
    return optimizer, fmax, max_steps


@dataclass
class _Trace:
    energies_hartree: list[float]
    gradient: np.ndarray  # at the final geometry, Hartree/Bohr
    positions_angstrom: np.ndarray
    n_steps: int
    converged: bool


def _run_ase_optimizer(session: Session, molecule: Molecule, optimizer: str, fmax: float,
                       max_steps: int) -> _Trace:
    import ase
    from ase.optimize import BFGS, FIRE, LBFGS

    atoms = ase.Atoms(numbers=molecule.numbers, positions=molecule.positions_angstrom)
    calc = _SessionCalculator(session)
    atoms.calc = calc
    opt_class = {"LBFGS": LBFGS, "BFGS": BFGS, "FIRE": FIRE}[optimizer]
    opt = opt_class(atoms, logfile=None, trajectory=None)
    energies: list[float] = []
    converged = False
    # irun evaluates forces at the current geometry before each yield, so the calculator's last
    # evaluation is always the final geometry: no extra single point at the end.
    for step_converged in opt.irun(fmax=fmax, steps=max_steps):
        energies.append(calc.energy_hartree)
        converged = step_converged
    positions, gradient = atoms.get_positions(), calc.gradient
    if gradient is None or not np.array_equal(calc.positions_angstrom, positions):
        energy, gradient = session.evaluate(positions / Bohr)  # only if ASE stops doing the above
        energies[-1] = float(energy)
    return _Trace(energies, gradient, positions, opt.nsteps, bool(converged))


class _SessionCalculator(Calculator):
    """ASE view (eV, Angstrom) of a Session (Hartree, Bohr); remembers the last evaluation."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.energy_hartree = math.nan
        self.gradient: np.ndarray | None = None
        self.positions_angstrom: np.ndarray | None = None

    def calculate(self, atoms: Any = None, properties: Any = None,
                  system_changes: Any = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        positions = self.atoms.get_positions()
        energy, gradient = self.session.evaluate(positions / Bohr)
        self.energy_hartree, self.gradient, self.positions_angstrom = \
            float(energy), gradient, positions
        self.results = {"energy": energy * Hartree, "free_energy": energy * Hartree,
                        "forces": -gradient * (Hartree / Bohr)}
