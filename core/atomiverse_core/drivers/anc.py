"""ANC-RFO: rational-function steps in approximate normal coordinates, xtb's optimiser scheme.

The scheme of ANCopt, the optimiser of the xtb program (S. Grimme et al.), written again in
numpy as an ASE optimiser:

* Coordinates: the eigenvectors of Lindh's model Hessian (:mod:`.model_hessian`) in the space of
  internal motions (translations and rotations left out): approximate normal coordinates, in
  which the Hessian starts diagonal. Its eigenvalues are shifted up so that the softest is
  ``H_LOW`` and capped at ``H_HIGH``: every mode gets the same added stiffness, which keeps soft
  torsions from taking huge first steps without flattening their order.
* Steps: rational-function optimisation (the lowest eigenvector of the Hessian augmented by the
  gradient), each coordinate's step capped at ``MAX_STEP_BOHR``; once the gradient is small,
  the step is stretched by ``OVERSHOOT``.
* Curvature: BFGS updates of the Hessian in those coordinates, its diagonal kept at
  ``UPDATE_FLOOR`` or above (in magnitude).
* Renewal: after ``MICRO_STEPS`` steps (a tenth more each time, up to twice that) or one step
  longer than ``RESTART_STEP_BOHR``, the coordinates are made again from the model Hessian at
  the current geometry, which drops whatever the updates learnt wrong on the way.

Two details are ANCopt's on purpose, measured on the benchmark's 50 molecules (with xtb's D2
terms added to the model Hessian, 2049 gradients with both): the update takes the unstretched
step (the actual step: 2210), and the stretch (none: 2365). With this module's plain Lindh
model, 2055; ASE's BFGS from the same model Hessian needed 2370, the xtb program 1916 cycles
at its looser ``--opt extreme`` criterion. On the next 50 molecules of the same list, which
played no part in those choices: 2881 gradients against BFGS-Lindh's 3382. One detail is not
ANCopt's: the updates may soften a coordinate to half of H_LOW (``UPDATE_FLOOR``), chosen on
the benchmark's 50 (floors 0.01, 0.005, 0.002 tried) and checked on the next 100.

Units inside: Bohr and Hartree, the model Hessian's; ASE's eV and Angstrom at the edges.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase.units import Bohr, Hartree

from .model_hessian import lindh_terms, rigid_motions

H_LOW = 0.01  # Hartree/Bohr^2: the softest curvature of a coordinate, as the model gives it
# Hartree/Bohr^2: the softest an update may make a coordinate. ANCopt floors at H_LOW; half
# of it lets the updates learn the flat rotations of phenyl rings and other soft torsions, which
# otherwise creep in steps of g / H_LOW (a tetraphenyl imine of the benchmark: 253 steps,
# 137 with this). Measured on three sets of 50 molecules (the benchmark's and the next two of
# the same list): 2006 -> 1940, 3018 -> 2643 and 2862 -> 2596 gradients; 27 of the 150 end
# lower by more than 1e-6 Hartree, two higher, by at most 1.4e-6. 0.002 helped the slowest
# molecule more but lost as much on the rest.
UPDATE_FLOOR = 0.005
H_HIGH = 5.0  # Hartree/Bohr^2: the stiffest
MAX_STEP_BOHR = 1.0  # per coordinate and step
RESTART_STEP_BOHR = 2.0  # a longer step means the model has gone wrong: renew the coordinates
MICRO_STEPS = 20  # steps on one set of coordinates, growing by a tenth per renewal to twice this
OVERSHOOT = 1.5  # stretch of a step once the gradient norm is below OVERSHOOT_BELOW
OVERSHOOT_BELOW = 0.002  # Hartree/Bohr
_UPDATE_MIN = 1e-12  # BFGS denominators below this skip the update


def internal_basis(positions_bohr: np.ndarray) -> np.ndarray:
    """An orthonormal basis (3n x 3n-6, or 3n-5 if linear) of the motions that are neither a
    translation nor a rotation."""
    rigid = rigid_motions(positions_bohr)
    full, _, _ = np.linalg.svd(rigid, full_matrices=True)
    return full[:, rigid.shape[1]:]


@dataclass
class Coordinates:
    """One set of approximate normal coordinates and the optimiser's state in them."""

    origin_bohr: np.ndarray  # (3n,) the geometry they were made at
    basis: np.ndarray  # (3n, m) orthonormal columns, softest first
    hessian: np.ndarray  # (m, m) Hartree/Bohr^2, diagonal at the start
    values: np.ndarray  # (m,) Bohr: the current geometry is origin + basis @ values
    steps: int = 0
    gradient: np.ndarray | None = None  # (m,) at the last step, Hartree/Bohr
    step: np.ndarray | None = None  # (m,) the last step, before OVERSHOOT

    @classmethod
    def at(cls, numbers: np.ndarray, positions_bohr: np.ndarray) -> Coordinates:
        internal = internal_basis(positions_bohr)
        curvature, vectors = np.linalg.eigh(
            internal.T @ lindh_terms(numbers, positions_bohr) @ internal)
        if curvature.size:
            curvature = np.clip(curvature + max(H_LOW - curvature[0], 0.0), H_LOW, H_HIGH)
        return cls(positions_bohr.ravel().copy(), internal @ vectors, np.diag(curvature),
                   np.zeros(curvature.size))

    def positions_bohr(self) -> np.ndarray:
        return self.origin_bohr + self.basis @ self.values

    def update(self, gradient: np.ndarray) -> None:
        """BFGS update with the gradient (in these coordinates) after the last step."""
        if self.gradient is None or self.step is None:
            return
        dg, dx = gradient - self.gradient, self.step
        hdx = self.hessian @ dx
        dg_dx, dx_hdx = dg @ dx, dx @ hdx
        if dg_dx > _UPDATE_MIN and dx_hdx > _UPDATE_MIN:
            self.hessian += np.outer(dg, dg) / dg_dx - np.outer(hdx, hdx) / dx_hdx
        diagonal = np.einsum("ii->i", self.hessian)  # a view: floored in place
        diagonal[np.abs(diagonal) < UPDATE_FLOOR] = UPDATE_FLOOR


def rfo_step(hessian: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """The rational-function step: from the lowest eigenvector (v, w) of [[H, g], [g, 0]],
    v / w. A downhill step whatever H's eigenvalues; a Newton step near a minimum."""
    m = gradient.size
    augmented = np.zeros((m + 1, m + 1), order="F")  # LAPACK's layout: handed over uncopied
    augmented[:m, :m] = hessian
    augmented[:m, m] = augmented[m, :m] = gradient
    vector = lowest_eigenvector(augmented)
    last = vector[m]
    if abs(last) < 1e-10:  # gradient orthogonal to the lowest mode: plain descent instead
        return -gradient / np.maximum(np.abs(np.diag(hessian)), H_LOW)
    return vector[:m] / last


def lowest_eigenvector(symmetric: np.ndarray) -> np.ndarray:
    """The eigenvector of the lowest eigenvalue of a symmetric matrix (its lower triangle read,
    its contents overwritten): LAPACK's dsyevx called as ``scipy.linalg.eigh(symmetric,
    subset_by_index=[0, 0], driver="evx")`` calls it, the same numbers without that wrapper's
    checks and workspace query, which were an eighth of its time."""
    syevx, lwork = _syevx(len(symmetric))
    _, vectors, found, _, info = syevx(symmetric, range="I", il=1, iu=1, lower=1, lwork=lwork,
                                       overwrite_a=1)
    if info != 0 or found != 1:  # a NaN anywhere finds none
        raise np.linalg.LinAlgError(f"dsyevx found {found} lowest eigenvalues (info {info})")
    return vectors[:, 0]


@functools.cache
def _syevx(n: int) -> tuple[Callable[..., Any], int]:
    """dsyevx and the workspace it asks for at this size (optimal, as scipy.linalg.eigh
    passes: a different size could change how it reduces the matrix, and so its round-off)."""
    from scipy.linalg import get_lapack_funcs  # ASE's optimisers import SciPy already

    syevx, syevx_lwork = get_lapack_funcs(("syevx", "syevx_lwork"), dtype=np.float64)
    work, info = syevx_lwork(n, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"dsyevx workspace query: info {info}")
    return syevx, int(work)


def step_in(coords: Coordinates, gradient: np.ndarray) -> np.ndarray:
    return np.clip(rfo_step(coords.hessian, gradient), -MAX_STEP_BOHR, MAX_STEP_BOHR)


@functools.cache
def anc_rfo() -> type:
    """The ANC-RFO optimiser class, made once (late: ase.optimize brings SciPy)."""
    from ase.optimize.optimize import Optimizer

    class ANCRFO(Optimizer):  # type: ignore[misc]
        """Rational-function steps in approximate normal coordinates (see the module)."""

        def __init__(self, atoms: Any, restart: str | None = None, logfile: Any = None,
                     **kwargs: Any) -> None:
            super().__init__(atoms, restart=restart, logfile=logfile, **kwargs)
            self.logging = logfile is not None

        def log(self, gradient: np.ndarray) -> None:
            # ASE works out the energy, the largest force and the time of day for a line it
            # then drops when there is no log file, as in the platform's runs
            if self.logging:
                super().log(gradient)

        def initialize(self) -> None:
            self.coords: Coordinates | None = None
            self.micro_steps = MICRO_STEPS

        def read(self) -> None:  # restart files: not kept, the state is cheap to rebuild
            self.initialize()

        def _renew(self, positions_bohr: np.ndarray) -> Coordinates:
            if self.coords is not None:
                self.micro_steps = min(int(self.micro_steps * 1.1), 2 * MICRO_STEPS)
            self.coords = Coordinates.at(self.atoms.numbers, positions_bohr.reshape(-1, 3))
            return self.coords

        def step(self, forces: np.ndarray | None = None) -> None:
            if forces is None:
                forces = self.atoms.get_forces()
            gradient_au = -np.asarray(forces).ravel() * (Bohr / Hartree)
            positions_bohr = self.atoms.get_positions().ravel() / Bohr
            coords = self.coords
            if coords is None or coords.steps >= self.micro_steps:
                coords = self._renew(positions_bohr)
            if coords.basis.shape[1] == 0:  # one atom: nothing to move
                return
            g = coords.basis.T @ gradient_au
            coords.update(g)
            step = step_in(coords, g)
            if coords.steps > 1 and np.linalg.norm(step) > RESTART_STEP_BOHR:
                coords = self._renew(positions_bohr)
                g = coords.basis.T @ gradient_au
                step = step_in(coords, g)
            stretch = OVERSHOOT if np.linalg.norm(g) < OVERSHOOT_BELOW else 1.0
            coords.values += stretch * step
            coords.gradient, coords.step = g, step
            coords.steps += 1
            self.atoms.set_positions(coords.positions_bohr().reshape(-1, 3) * Bohr)

    return ANCRFO
