"""Single point: energy, gradient and the electronic properties at a fixed geometry."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ..atoms import Vector3
from ..jobs import Job
from ..schema import WIBERG_MIN_ORDER
from .spec import JobType

WibergBond = tuple[int, int, float]  # (atom i, atom j > i, order), 0-based


class SinglePointEnergy(Job):
    """Energy, gradient, HOMO-LUMO gap, dipole and partial charges at a fixed geometry."""

    job_type: Literal["single_point_energy"] = "single_point_energy"  # type: ignore[assignment]


class SinglePointResult(BaseModel):
    energy_hartree: float
    gradient_hartree_per_bohr: list[Vector3]
    homo_lumo_gap_ev: float | None = None
    dipole_au: Vector3 | None = Field(default=None, description="Dipole moment, e*Bohr")
    partial_charges_e: list[float] | None = None
    engine: str
    engine_version: str
    wall_time_seconds: float
    core_seconds: float
    # Electronic structure of the same calculation (None for the force field GFN-FF).
    orbital_energies_hartree: list[float] | None = None
    orbital_occupations: list[float] | None = Field(
        default=None, description="Electrons per orbital, 0-2 (spin-restricted)")
    homo_hartree: float | None = Field(default=None, description="Highest occupied orbital")
    lumo_hartree: float | None = Field(default=None, description="Lowest unoccupied orbital")
    wiberg_bond_orders: list[WibergBond] | None = Field(
        default=None, description=f"[i, j, order] for i < j and order >= {WIBERG_MIN_ORDER}")
    level_of_theory: str | None = Field(default=None, description="e.g. GFN2-xTB/ALPB(water)")
    warnings: list[str] = Field(default_factory=list,
                                description="Things a chemist must know about this result")


def single_point(engine: Any, molecule: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """One evaluation on one session: a SinglePointResult dict."""
    session = engine.open_session(molecule)
    energy, gradient = session.evaluate(molecule.positions_bohr)
    return engine.point_result(molecule, energy, gradient, session.properties())


def _flat(point: dict[str, Any], molecule: Any, payload: Any) -> dict[str, Any]:
    return point


JOB_TYPE = JobType(
    name="single_point_energy",
    input_model=SinglePointEnergy,
    result_model=SinglePointResult,
    title="Single point",
    cli_name="sp",
    cli_help="single point (the default)",
    estimate_gradients=lambda job: 1,
    run=single_point,
    flat_surface_result=_flat,
    listing_order=1,
)
