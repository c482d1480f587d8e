"""Frequencies: harmonic vibrations and ideal-gas thermochemistry, optionally after an
optimisation."""

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
from .optimization import (
    OPTIMISATION_COLUMNS,
    estimated_optimisation_gradients,
    optimiser_note,
)
from .single_point import SinglePointResult
from .spec import CliColumn, JobType, Payload, ResultRow


class Frequencies(Job):
    """Harmonic frequencies by central finite differences of analytic gradients (ASE
    vibrations), translations and rotations projected out; zero-point energy, enthalpy and
    Gibbs energy at ``temperature_kelvin`` and ``pressure_pascal`` (ideal gas, rigid rotor,
    harmonic oscillator). With ``optimize_first=True`` the geometry is relaxed first with the
    optimiser settings below (the GeometryOptimization defaults)."""

    job_type: Literal["frequencies"] = "frequencies"  # type: ignore[assignment]
    temperature_kelvin: float = Field(default=298.15, gt=0, le=10_000)
    pressure_pascal: float = Field(default=101_325.0, gt=0, le=1e9)
    symmetry_number: int = Field(default=1, ge=1, le=120,
                                 description="Rotational symmetry number (water: 2, NH3: 3)")
    displacement_angstrom: float = Field(default=0.01, ge=1e-4, le=0.1,
                                         description="Finite-difference step per coordinate")
    optimize_first: bool = False
    optimizer: Optimizer = DEFAULT_OPTIMIZER
    fmax: Fmax = DEFAULT_FMAX_EV_PER_ANGSTROM
    max_steps: MaxSteps = DEFAULT_MAX_STEPS


class FrequenciesResult(SinglePointResult):
    """Single-point fields refer to the geometry the frequencies were computed at
    (``final_positions_angstrom``: the input, or the optimised geometry with
    ``optimize_first``). Frequencies in cm^-1, imaginary ones as negative numbers; energies are
    totals (electronic + correction) except ``zero_point_energy_hartree``."""

    final_positions_angstrom: list[Vector3]
    frequencies_cm1: list[float] = Field(description="3N-6 (linear: 3N-5) modes, ascending")
    ir_intensities_km_per_mol: list[float] | None = Field(
        default=None, description="IR intensity of each mode (double harmonic, from "
        "finite differences of the dipole), in the order of frequencies_cm1")
    normal_modes_angstrom: list[list[Vector3]] | None = Field(
        default=None, description="Per mode, each atom's Cartesian displacement (the mode "
        "normalised to unit length, Angstrom), in the order of frequencies_cm1; None above "
        "300 atoms (they grow as 9 N^2 numbers)")
    imaginary_frequencies_cm1: list[float]
    n_imaginary: int
    zero_point_energy_hartree: float
    enthalpy_hartree: float
    gibbs_energy_hartree: float
    entropy_hartree_per_kelvin: float
    temperature_kelvin: float
    pressure_pascal: float
    symmetry_number: int
    geometry: Literal["monatomic", "linear", "nonlinear"]
    optimized: bool = False
    converged: bool | None = Field(default=None, description="Of the optimisation, if any")
    n_steps: int | None = None
    energies_hartree: list[float] | None = None
    optimizer: str | None = None


def estimated_gradients(job: Frequencies) -> int:
    """Central differences: two gradients per coordinate, and the reference point."""
    n_atoms = len(job.atoms.numbers)
    first = estimated_optimisation_gradients(n_atoms) if job.optimize_first else 0
    return 6 * n_atoms + 1 + first


def frequencies(engine: Any, molecule: Any, payload: dict[str, Any]) -> dict[str, Any]:
    from ..drivers.vibrations import frequencies as drive  # ASE: only where jobs run

    return drive(engine, molecule, payload)


def flat_surface_frequencies(point: dict[str, Any], molecule: Any,
                             payload: Payload) -> dict[str, Any]:
    """All frequencies zero; the thermochemistry is left at the electronic energy."""
    n = len(molecule.numbers)
    energy = point["energy_hartree"]
    return {**point, "final_positions_angstrom": molecule.positions_angstrom.tolist(),
            "frequencies_cm1": [0.0] * max(0, 3 * n - 6), "imaginary_frequencies_cm1": [],
            "n_imaginary": 0, "zero_point_energy_hartree": 0.0, "enthalpy_hartree": energy,
            "gibbs_energy_hartree": energy, "entropy_hartree_per_kelvin": 0.0,
            "temperature_kelvin": float(payload.get("temperature_kelvin") or 298.15),
            "pressure_pascal": float(payload.get("pressure_pascal") or 101325.0),
            "symmetry_number": int(payload.get("symmetry_number") or 1),
            "geometry": "monatomic" if n == 1 else "nonlinear"}


def frequency_rows(record: Payload, result: Payload) -> list[ResultRow]:
    if "n_imaginary" not in result:
        return []
    rows = []
    if result.get("optimized"):
        rows.append(ResultRow("Optimised first", "yes" if result.get("converged") else
                              "not converged", "", "converged",
                              f"{result.get('n_steps')} steps"))
    imaginary = result.get("imaginary_frequencies_cm1") or []
    rows.append(ResultRow("Imaginary modes", result["n_imaginary"], "", "n_imaginary",
                          ", ".join(f"{f:.1f} cm⁻¹" for f in imaginary)))
    rows.append(ResultRow("Zero-point energy",
                          f"{result['zero_point_energy_hartree'] * KCAL_PER_MOL_PER_HARTREE:.3f}",
                          "kcal/mol", "zero_point_energy"))
    at = f"at {result.get('temperature_kelvin')} K, {result.get('pressure_pascal')} Pa"
    rows.append(ResultRow("Enthalpy", f"{result['enthalpy_hartree']:.8f}", "Eₕ", "enthalpy",
                          at))
    rows.append(ResultRow("Gibbs energy", f"{result['gibbs_energy_hartree']:.8f}", "Eₕ",
                          "gibbs_energy", at))
    return rows


def frequency_note(job: Payload) -> str:
    note = (f"{job.get('temperature_kelvin', 298.15)} K, "
            f"{job.get('pressure_pascal', 101325.0)} Pa")
    return f"{note}; optimised first ({optimiser_note(job)})" if job.get("optimize_first") \
        else note


def frequency_cli_options(args: Any) -> dict[str, Any]:
    """`atomiverse run --job freq` optimises first, at --temperature."""
    return {"optimize_first": True, "temperature_kelvin": getattr(args, "temperature", 298.15)}


JOB_TYPE = JobType(
    name="frequencies",
    input_model=Frequencies,
    result_model=FrequenciesResult,
    title="Frequencies",
    cli_name="freq",
    cli_help="frequencies (optimised first) with thermochemistry",
    estimate_gradients=estimated_gradients,
    run=frequencies,
    flat_surface_result=flat_surface_frequencies,
    result_rows=frequency_rows,
    options_note=frequency_note,
    moves_geometry=True,
    cli_columns=(*OPTIMISATION_COLUMNS, CliColumn("imaginary", "n_imaginary"),
                 CliColumn("G / Hartree", "gibbs_energy_hartree", "{:.8f}")),
    cli_options=frequency_cli_options,
    listing_order=3,
)

__all__ = ["JOB_TYPE", "Frequencies", "FrequenciesResult"]
