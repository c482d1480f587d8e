"""What an optimisation leaves behind: every step's energy, the final geometry and gradient, and
the frames of its trajectory, packed once at the end (rounded as the schema documents)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase.units import Bohr, Hartree

from ..schema import TRAJECTORY_MAX_ATOM_STEPS

POSITION_DECIMALS = 6  # 1e-6 Angstrom
GRADIENT_DECIMALS = 7  # 1e-7 Hartree/Bohr: 0.05 % of a converged force at fmax 0.001


@dataclass
class Trace:
    energies_hartree: list[float]
    gradient: np.ndarray  # at the final geometry, Hartree/Bohr
    positions_angstrom: np.ndarray  # final
    n_steps: int
    converged: bool
    optimizer: str
    fmax: float
    max_steps: int
    properties: dict[str, Any]  # of the final geometry
    frames_positions: list[np.ndarray] = field(default_factory=list)
    frames_gradients: list[np.ndarray] = field(default_factory=list)

    @property
    def max_force_ev_per_angstrom(self) -> float:
        return float(np.linalg.norm(self.gradient, axis=1).max() * (Hartree / Bohr))

    def warning(self) -> str | None:
        if self.converged:
            return None
        return (f"not converged: {self.optimizer} stopped at max_steps={self.max_steps} with a "
                f"largest force of {self.max_force_ev_per_angstrom:.3g} eV/Angstrom "
                f"(fmax {self.fmax:g}); the geometry is not a minimum")

    def summary(self) -> dict[str, Any]:
        return {"final_positions_angstrom": self.positions_angstrom.tolist(),
                "energies_hartree": self.energies_hartree, "n_steps": self.n_steps,
                "converged": self.converged, "optimizer": self.optimizer}

    def trajectory(self) -> dict[str, Any]:
        """Every step, or an even sample of them (first and last kept) when atoms x steps
        exceeds TRAJECTORY_MAX_ATOM_STEPS; rounded as the schema documents."""
        frames, n_atoms = len(self.frames_positions), len(self.positions_angstrom)
        keep = max(2, TRAJECTORY_MAX_ATOM_STEPS // max(n_atoms, 1))
        steps = (list(range(frames)) if frames <= keep else
                 sorted({round(x) for x in np.linspace(0, frames - 1, keep).tolist()}))
        positions = np.round(np.stack([self.frames_positions[i] for i in steps]),
                             POSITION_DECIMALS)
        gradients = np.round(np.stack([self.frames_gradients[i] for i in steps]),
                             GRADIENT_DECIMALS)
        return {"trajectory_steps": steps,
                "trajectory_positions_angstrom": positions.tolist(),
                "trajectory_energies_hartree": [self.energies_hartree[i] for i in steps],
                "trajectory_gradients_hartree_per_bohr": gradients.tolist()}
