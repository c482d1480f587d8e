"""Finite differences of the gradient and the dipole on one session, and what they give: the
Hessian, the dipole derivatives, normal modes as Cartesian displacements, and IR intensities
(the double-harmonic approximation, as the xtb program's ``--hess`` computes them).

Each of the 3N coordinates is displaced by +delta and -delta (6N evaluations, as ASE's
``Vibrations`` with ``nfree=2``); the dipole comes from the same SCF as the gradient, so the
intensities cost nothing beyond the frequencies.

Normal modes are stored for molecules of at most ``MODES_MAX_ATOMS`` atoms: they are
(3N-6) x N x 3 floats, about 7 MB of JSON at 300 atoms (5 decimals each), where a result is still
a fraction of the server's request limit. Larger molecules get frequencies and intensities
without the modes (and a warning saying so).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from ase import units
from ase.units import Bohr, Hartree

if TYPE_CHECKING:
    from .contract import Session

MODES_MAX_ATOMS = 300
MODE_DECIMALS = 5  # of a unit-length displacement: 1e-5 Angstrom, far below what is drawn


def _ir_km_per_mol_per_e2_amu() -> float:
    """N_A / (12 eps0 c^2), the double-harmonic intensity of a unit dipole derivative (e^2 per
    amu, dipole per mass-weighted coordinate), in km/mol (about 974.88)."""
    si = units._Nav / (12 * units._eps0 * units._c**2) * units._e**2 / units._amu  # m/mol
    return si / 1000.0


IR_KM_PER_MOL_PER_E2_AMU = _ir_km_per_mol_per_e2_amu()


def displaced_gradients_and_dipoles(session: Session, positions_angstrom: np.ndarray,
                                    delta_angstrom: float) -> tuple[np.ndarray, np.ndarray]:
    """The Hessian (eV/Angstrom^2, symmetrised, (3N, 3N)) and the dipole derivatives (e, that
    is e*Bohr of dipole per Bohr of displacement, (3, 3N)) by central differences."""
    base = np.asarray(positions_angstrom, dtype=float) / Bohr
    step = delta_angstrom / Bohr
    n3 = base.size
    hessian = np.empty((n3, n3))
    dipole_derivatives = np.empty((3, n3))
    session.set_scf_accuracy(1.0)  # an optimisation before may have left it loose
    for k in range(n3):
        evaluated = []
        for sign in (1.0, -1.0):
            displaced = base.copy().ravel()
            displaced[k] += sign * step
            _, gradient = session.evaluate(displaced.reshape(base.shape))
            dipole = session.properties().get("dipole_au")
            evaluated.append((np.asarray(gradient, dtype=float).ravel(),
                              np.zeros(3) if dipole is None else np.asarray(dipole, float)))
        (g_plus, mu_plus), (g_minus, mu_minus) = evaluated
        hessian[:, k] = (g_plus - g_minus) / (2 * step)
        dipole_derivatives[:, k] = (mu_plus - mu_minus) / (2 * step)
    hessian *= Hartree / Bohr**2
    return 0.5 * (hessian + hessian.T), dipole_derivatives


def ir_intensities_km_per_mol(dipole_derivatives: np.ndarray, mass_weighted_modes: np.ndarray,
                              masses_amu: np.ndarray) -> np.ndarray:
    """|d mu / d Q|^2 per mode, in km/mol. ``mass_weighted_modes``: (3N, M) orthonormal
    eigenvectors of the mass-weighted Hessian; Q the mass-weighted normal coordinate."""
    inv_sqrt_m = 1.0 / np.sqrt(np.repeat(masses_amu, 3))
    dmu_dq = dipole_derivatives @ (inv_sqrt_m[:, None] * mass_weighted_modes)  # (3, M)
    return IR_KM_PER_MOL_PER_E2_AMU * (dmu_dq**2).sum(axis=0)


def cartesian_modes(mass_weighted_modes: np.ndarray, masses_amu: np.ndarray) -> np.ndarray:
    """(M, N, 3) Cartesian displacements of each mode, each of unit length (Angstrom)."""
    inv_sqrt_m = 1.0 / np.sqrt(np.repeat(masses_amu, 3))
    cart = (inv_sqrt_m[:, None] * mass_weighted_modes).T  # (M, 3N)
    norms = np.linalg.norm(cart, axis=1, keepdims=True)
    cart = cart / np.where(norms > 0, norms, 1.0)
    return cart.reshape(cart.shape[0], -1, 3)


def stored_modes(modes: np.ndarray, n_atoms: int) -> list[list[list[float]]] | None:
    """The modes as the result keeps them: rounded, or None above MODES_MAX_ATOMS atoms."""
    if n_atoms > MODES_MAX_ATOMS:
        return None
    return np.round(modes, MODE_DECIMALS).tolist()


__all__ = ["IR_KM_PER_MOL_PER_E2_AMU", "MODES_MAX_ATOMS", "cartesian_modes",
           "displaced_gradients_and_dipoles", "ir_intensities_km_per_mol", "stored_modes"]
