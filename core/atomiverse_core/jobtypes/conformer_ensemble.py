"""The result of a conformer search: its unique conformers, sorted by energy, with their
energies above the lowest and their Boltzmann weights."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, Field

from ..atoms import Vector3
from ..units import BOLTZMANN_KCAL_PER_MOL_K, KCAL_PER_MOL_PER_HARTREE


class Conformer(BaseModel):
    positions_angstrom: list[Vector3]
    energy_hartree: float
    relative_energy_kcal_per_mol: float
    boltzmann_weight: float
    job_id: str = Field(description="The optimisation that found it")


class ConformerSearchResult(BaseModel):
    """The lowest conformer's energy and geometry, and the whole ensemble."""

    energy_hartree: float
    final_positions_angstrom: list[Vector3]
    conformers: list[Conformer]
    n_unique: int
    n_rotatable_bonds: int
    n_candidates: int
    n_screened: int = Field(default=0, description="Candidates optimised at GFN-FF (0: no screen)")
    n_screen_failed: int = 0
    n_prescreen_failed: int
    n_refined: int
    n_refine_failed: int
    n_rearranged: int = Field(default=0, description=(
        "Optimised candidates left out because their bonds changed (another molecule)"))
    temperature_kelvin: float
    bond_orders: str = Field(default="perceived", description=(
        "How the molecule's bonds were read from its geometry: 'perceived', 'perceived "
        "without charged fragments' (formal charges may be off; double bonds and rings are "
        "kept), 'perceived as the neutral molecule' (a radical ion: its neutral parent's "
        "double bonds and rings are kept), or 'connectivity only' (no bond orders fit, every "
        "bond was taken as single: the candidates may have turned a double bond, losing its "
        "E/Z geometry)"))


def boltzmann_ensemble(chosen: list[tuple[str, dict[str, Any]]],
                       temperature_kelvin: float) -> list[dict[str, Any]]:
    """Conformers (as :class:`Conformer` dicts) from the optimisations that found them,
    ``(job id, result)`` lowest first: energies relative to the first, in kcal/mol, and
    weights at ``temperature_kelvin``."""
    lowest = chosen[0][1]["energy_hartree"]
    relative = [(r["energy_hartree"] - lowest) * KCAL_PER_MOL_PER_HARTREE for _, r in chosen]
    factors = [math.exp(-e / (BOLTZMANN_KCAL_PER_MOL_K * temperature_kelvin)) for e in relative]
    return [{"positions_angstrom": r["final_positions_angstrom"],
             "energy_hartree": r["energy_hartree"], "relative_energy_kcal_per_mol": e,
             "boltzmann_weight": f / sum(factors), "job_id": job_id}
            for (job_id, r), e, f in zip(chosen, relative, factors, strict=True)]


__all__ = ["Conformer", "ConformerSearchResult", "boltzmann_ensemble"]
