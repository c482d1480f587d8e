"""The optimisation driver: an ASE optimiser over an engine session, and its trajectory.

One session serves the whole run: the native calculator is created once and only its positions
change between steps, which also restarts each SCF from the previous one. Every step's energy,
positions and gradient are arrays the driver holds anyway; they are kept as they come (no extra
evaluation, no copy beyond the step's own arrays) and packed once at the end.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.units import Bohr, Hartree

from .contract import EngineError, Molecule, Session
from .optimizer_settings import (
    DEFAULT_FMAX_EV_PER_ANGSTROM,
    DEFAULT_MAX_STEPS,
    DEFAULT_OPTIMIZER,
    OPTIMIZERS,
)
from .trace import Trace

if TYPE_CHECKING:
    from .contract import EngineHarness


def opt_settings(payload: dict[str, Any]) -> tuple[str, float, int]:
    optimizer = payload.get("optimizer") or DEFAULT_OPTIMIZER
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


def optimize(engine: EngineHarness, molecule: Molecule, payload: dict[str, Any]) -> dict[str, Any]:
    """An OptimizationResult dict: single-point fields at the final geometry, the energy of
    every step, and the trajectory."""
    optimizer, fmax, max_steps = opt_settings(payload)
    trace = run_optimizer(engine.open_session(molecule), molecule, optimizer, fmax, max_steps)
    result = engine.point_result(molecule, trace.energies_hartree[-1], trace.gradient,
                                 trace.properties)
    result.update(trace.summary(), fmax_ev_per_angstrom=trace.max_force_ev_per_angstrom,
                  **trace.trajectory())
    if (warning := trace.warning()) is not None:
        result["warnings"].append(warning)
    return result


def run_optimizer(session: Session, molecule: Molecule, optimizer: str, fmax: float,
                  max_steps: int, keep_frames: bool = True) -> Trace:
    if optimizer == "geomeTRIC":
        from .geometric_driver import run_geometric

        return run_geometric(session, molecule, fmax, max_steps, keep_frames)
    import ase

    atoms = ase.Atoms(numbers=molecule.numbers, positions=molecule.positions_angstrom)
    calc = SessionCalculator(session, fmax)
    atoms.calc = calc
    opt = ase_optimizer(optimizer)(atoms, logfile=None, trajectory=None)
    energies: list[float] = []
    frames_positions: list[np.ndarray] = []
    frames_gradients: list[np.ndarray] = []
    converged = False
    # irun evaluates forces at the current geometry before each yield, so the calculator's last
    # evaluation is always the current geometry: no extra single point per step or at the end.
    for step_converged in opt.irun(fmax=fmax, steps=max_steps):
        energies.append(calc.energy_hartree)
        if keep_frames:
            frames_positions.append(calc.positions_angstrom)
            frames_gradients.append(calc.gradient)
        converged = step_converged
    positions, gradient = atoms.get_positions(), calc.gradient
    if gradient is None or not np.array_equal(calc.positions_angstrom, positions):
        energy, gradient = session.evaluate(positions / Bohr)  # only if ASE stops doing the above
        energies[-1] = float(energy)
        if keep_frames:
            frames_positions[-1], frames_gradients[-1] = positions, gradient
    elif calc.loose:  # stopped at max_steps on a loose SCF: the result is a default one
        calc.evaluate_at_default_accuracy()
        energies[-1], gradient = calc.energy_hartree, calc.gradient
        if keep_frames:
            frames_gradients[-1] = gradient
    return Trace(energies, np.asarray(gradient), positions, opt.nsteps, bool(converged),
                 optimizer, fmax, max_steps, session.properties(), frames_positions,
                 frames_gradients)


def ase_optimizer(name: str) -> type:
    """The ASE optimiser class behind a name in OPTIMIZERS (all but geomeTRIC)."""
    if name == "ANC-RFO":
        from .anc import anc_rfo

        return anc_rfo()
    if name == "BFGS-Lindh":
        return lindh_bfgs()
    import ase.optimize

    return getattr(ase.optimize, name)


@functools.cache
def lindh_bfgs() -> type:
    """The BFGS-Lindh optimiser class, made once (late: ase.optimize brings SciPy)."""
    from ase.optimize import BFGS

    from .model_hessian import lindh_hessian

    class LindhBFGS(BFGS):  # type: ignore[misc]
        """ASE's BFGS, started from Lindh's model Hessian instead of 70 eV/Angstrom^2 times the
        identity: about a third of LBFGS's gradients for the same minima, near xtb's own
        optimiser, at a millisecond or two of numpy per step (see model_hessian)."""

        def initialize(self) -> None:
            super().initialize()
            positions_bohr = self.atoms.get_positions() / Bohr
            self.H0 = lindh_hessian(self.atoms.numbers, positions_bohr) * (Hartree / Bohr**2)

    return LindhBFGS


# The SCF is converged more loosely far from the minimum, as xtb's own optimiser does: accuracy
# scaled by 6 while the gradient norm is above 0.02 Hartree/Bohr, by 3 above 0.004, then the
# library default. A step there moves the atoms far more than the SCF error moves the forces.
LOOSE_SCF = ((0.02, 6.0), (0.004, 3.0))  # (gradient norm above, Hartree/Bohr; accuracy scale)


def scf_accuracy_for(gradient_norm: float) -> float:
    return next((scale for above, scale in LOOSE_SCF if gradient_norm > above), 1.0)


class SessionCalculator(Calculator):
    """ASE view (eV, Angstrom) of a Session (Hartree, Bohr); remembers the last evaluation.

    Given ``fmax`` (an optimisation; without it, as for finite differences, every evaluation
    is at the default accuracy), each evaluation's SCF accuracy follows the previous gradient
    (LOOSE_SCF). A loose evaluation whose forces meet ``fmax`` is done again at the default
    accuracy, so an optimiser only ever stops on a default-accuracy result; ``loose`` tells
    whether the last one was loose."""

    implemented_properties: ClassVar[list[str]] = ["energy", "free_energy", "forces"]

    def __init__(self, session: Session, fmax: float | None = None) -> None:
        super().__init__()
        self.session = session
        self.fmax_hartree_per_bohr = None if fmax is None else fmax / (Hartree / Bohr)
        self.energy_hartree = math.nan
        self.gradient: np.ndarray | None = None
        self.positions_angstrom: np.ndarray | None = None
        self.loose = False
        self._next_accuracy = 1.0
        self._numbers: np.ndarray | None = None  # of the last evaluation

    def check_state(self, atoms: Any, tol: float = 1e-15) -> list[str]:
        """Only positions change during an optimisation: the numbers and positions of the last
        evaluation are all it compares (ASE's comparison of every property, four times a step,
        cost about 4% of a run's time)."""
        if self._numbers is None or not np.array_equal(atoms.numbers, self._numbers):
            return list(all_changes)
        return [] if np.array_equal(atoms.positions, self.positions_angstrom) else ["positions"]

    def _evaluate(self, positions_bohr: np.ndarray, accuracy: float) -> tuple[float, np.ndarray]:
        self.session.set_scf_accuracy(accuracy)
        energy, gradient = self.session.evaluate(positions_bohr)
        self.loose = accuracy != 1.0
        return float(energy), np.array(gradient, dtype=float)  # a copy: the trajectory keeps it

    def evaluate_at_default_accuracy(self) -> None:
        """The last geometry again at the library's default accuracy (if it was loose)."""
        if self.loose:
            self.energy_hartree, self.gradient = self._evaluate(
                self.positions_angstrom / Bohr, 1.0)
            self._store()

    def _converged(self, gradient: np.ndarray) -> bool:
        return self.fmax_hartree_per_bohr is not None and \
            float(np.linalg.norm(gradient, axis=1).max()) < self.fmax_hartree_per_bohr

    def calculate(self, atoms: Any = None, properties: Any = None,
                  system_changes: Any = all_changes) -> None:
        # Not Calculator.calculate: its copy of the whole Atoms (and check of a working
        # directory this calculator never uses) was three quarters of the calculator's own
        # time. check_state needs only the numbers and positions, kept below; self.atoms is
        # the caller's Atoms itself.
        if atoms is not None:
            self.atoms = atoms
        positions = self.atoms.get_positions()
        energy, gradient = self._evaluate(positions / Bohr, self._next_accuracy)
        if self.loose and self._converged(gradient):
            energy, gradient = self._evaluate(positions / Bohr, 1.0)
        if self.fmax_hartree_per_bohr is not None:  # optimising; finite differences: never
            self._next_accuracy = scf_accuracy_for(float(np.linalg.norm(gradient)))
        self.energy_hartree, self.gradient, self.positions_angstrom = energy, gradient, positions
        self._numbers = self.atoms.numbers.copy()
        self._store()

    def _store(self) -> None:
        energy, gradient = self.energy_hartree, self.gradient
        self.results = {"energy": energy * Hartree, "free_energy": energy * Hartree,
                        "forces": -gradient * (Hartree / Bohr)}
