"""Geometry optimisation: relax the geometry on the chosen level's potential energy surface."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..atoms import Vector3
from ..drivers.optimizer_settings import (
    DEFAULT_FMAX_EV_PER_ANGSTROM,
    DEFAULT_MAX_STEPS,
    DEFAULT_OPTIMIZER,
    Fmax,
    MaxSteps,
    Optimizer,
)
from ..jobs import Job
from ..units import KCAL_PER_MOL_PER_HARTREE
from .single_point import SinglePointResult
from .spec import CliColumn, JobType, Payload, ResultRow

# Gradients an optimisation takes, roughly: on the benchmark's 50 molecules (8 to 60 atoms)
# ANC-RFO took 40 per molecule on average for a mean of 28 atoms, rising with size.
OPT_BASE_GRADIENTS = 10


class GeometryOptimization(Job):
    """Relax the geometry on the xTB potential energy surface with an ASE optimiser
    (``"ANC-RFO"``, the default: xtb's scheme of rational-function steps in approximate normal
    coordinates; ``"BFGS-Lindh"``: BFGS from a model Hessian; ``"LBFGS"``, ``"BFGS"``,
    ``"FIRE"``) or geomeTRIC (internal coordinates); all stop once the largest force is below
    ``fmax``. A run that reaches ``max_steps`` is done with ``converged: false`` (and a
    warning), not a minimum. Far from the minimum (gradient norm above 0.004 Hartree/Bohr) the
    ASE optimisers converge GFN1/GFN2's SCF 3-6x more loosely, as xtb's own optimiser does, so
    those steps' ``energies_hartree`` carry that looser SCF; the final energy, gradient and
    properties are always at the library's default accuracy."""

    job_type: Literal["opt"] = "opt"  # type: ignore[assignment]
    optimizer: Optimizer = DEFAULT_OPTIMIZER
    fmax: Fmax = DEFAULT_FMAX_EV_PER_ANGSTROM
    max_steps: MaxSteps = DEFAULT_MAX_STEPS


class OptimizationResult(SinglePointResult):
    """``energy_hartree`` and the other single-point fields refer to the final geometry."""

    final_positions_angstrom: list[Vector3]
    energies_hartree: list[float] = Field(description="Energy at every optimiser step")
    n_steps: int
    converged: bool
    fmax_ev_per_angstrom: float = Field(description="Largest force on any atom at the end")
    optimizer: str
    trajectory_steps: list[int] | None = Field(
        default=None, description="Optimiser step of each stored frame (0 = input geometry)")
    trajectory_positions_angstrom: list[list[Vector3]] | None = None
    trajectory_energies_hartree: list[float] | None = None
    trajectory_gradients_hartree_per_bohr: list[list[Vector3]] | None = None


def estimated_optimisation_gradients(n_atoms: int) -> int:
    return OPT_BASE_GRADIENTS + n_atoms


def optimize(engine: Any, molecule: Any, payload: dict[str, Any]) -> dict[str, Any]:
    from ..drivers.optimize import optimize as drive  # ASE and SciPy: only where jobs run

    return drive(engine, molecule, payload)


def flat_surface_optimisation(point: dict[str, Any], molecule: Any,
                              payload: Payload) -> dict[str, Any]:
    """Converged at the input geometry, in no steps."""
    return {**point, "final_positions_angstrom": molecule.positions_angstrom.tolist(),
            "energies_hartree": [point["energy_hartree"]], "n_steps": 0, "converged": True,
            "fmax_ev_per_angstrom": 0.0,
            "optimizer": payload.get("optimizer") or DEFAULT_OPTIMIZER}


def optimisation_rows(record: Payload, result: Payload) -> list[ResultRow]:
    if "n_steps" not in result:
        return []
    job = record.get("job") or {}
    energies = result.get("energies_hartree") or []
    rows = [ResultRow("Converged", "yes" if result.get("converged") else "no", "", "converged",
                      f"{result.get('optimizer', '')} to fmax {job.get('fmax', '')} "
                      f"eV/Å".strip()),
            ResultRow("Optimiser steps", result["n_steps"], "", "n_steps"),
            ResultRow("Final max force", f"{result['fmax_ev_per_angstrom']:.4f}", "eV/Å",
                      "fmax")]
    if len(energies) > 1:
        change = energies[-1] - energies[0]
        rows.append(ResultRow("Relaxation energy", f"{change * KCAL_PER_MOL_PER_HARTREE:.3f}",
                              "kcal/mol", "relaxation", f"{change:.8f} Eₕ"))
    return rows


def optimiser_note(job: Payload) -> str:
    return (f"{job.get('optimizer', DEFAULT_OPTIMIZER)}, fmax "
            f"{job.get('fmax', DEFAULT_FMAX_EV_PER_ANGSTROM)} eV/Å, ≤ "
            f"{job.get('max_steps', DEFAULT_MAX_STEPS)} steps")


OPTIMISATION_COLUMNS = (CliColumn("steps", "n_steps"), CliColumn("converged", "converged"))

JOB_TYPE = JobType(
    name="opt",
    input_model=GeometryOptimization,
    result_model=OptimizationResult,
    title="Geometry optimisation",
    cli_name="opt",
    cli_help="geometry optimisation",
    estimate_gradients=lambda job: estimated_optimisation_gradients(len(job.atoms.numbers)),
    run=optimize,
    flat_surface_result=flat_surface_optimisation,
    result_rows=optimisation_rows,
    options_note=optimiser_note,
    energy_label="Final energy",
    moves_geometry=True,
    cli_columns=OPTIMISATION_COLUMNS,
    listing_order=2,
)

__all__ = ["JOB_TYPE", "GeometryOptimization", "OptimizationResult"]
