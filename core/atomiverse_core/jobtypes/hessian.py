"""Hessian: the second derivatives of the energy at a fixed geometry, by central finite
differences of analytic gradients (6N + 1 evaluations on one engine session), symmetrised,
Cartesian and not mass-weighted: what QCSchema's ``hessian`` driver returns."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from ..jobs import Job
from .single_point import SinglePointResult
from .spec import JobType, Payload, ResultRow

HARTREE_PER_BOHR2_IN_EV_PER_ANGSTROM2 = 97.17362432  # 27.211386245988 / 0.52917721067**2


class Hessian(Job):
    """The 3N x 3N Hessian in Hartree/Bohr^2 (rows and columns: atom 1 x, y, z, atom 2 ...),
    from gradients at +/- ``displacement_angstrom`` along every coordinate."""

    job_type: Literal["hessian"] = "hessian"  # type: ignore[assignment]
    displacement_angstrom: float = Field(default=0.01, ge=1e-4, le=0.1,
                                         description="Finite-difference step per coordinate")


class HessianResult(SinglePointResult):
    """Single-point fields at the input geometry, and its Hessian."""

    hessian_hartree_per_bohr2: list[list[float]]


def hessian(engine: Any, molecule: Any, payload: dict[str, Any]) -> dict[str, Any]:
    import ase

    from ..drivers.optimize import SessionCalculator
    from ..drivers.vibrations import hessian_ev_per_angstrom2

    session = engine.open_session(molecule)
    atoms = ase.Atoms(numbers=molecule.numbers, positions=molecule.positions_angstrom)
    atoms.calc = calc = SessionCalculator(session)
    atoms.get_forces()  # the reference point: its properties before any displacement
    result = engine.point_result(molecule, calc.energy_hartree, calc.gradient,
                                 session.properties())
    delta = float(payload.get("displacement_angstrom") or 0.01)
    matrix = hessian_ev_per_angstrom2(atoms, delta) / HARTREE_PER_BOHR2_IN_EV_PER_ANGSTROM2
    result["hessian_hartree_per_bohr2"] = matrix.tolist()
    return result


def flat_hessian(point: dict[str, Any], molecule: Any, payload: Payload) -> dict[str, Any]:
    n = 3 * len(molecule.numbers)
    return {**point, "hessian_hartree_per_bohr2": np.zeros((n, n)).tolist()}


def hessian_rows(record: Payload, result: Payload) -> list[ResultRow]:
    matrix = result.get("hessian_hartree_per_bohr2")
    if not matrix:
        return []
    eigenvalues = np.linalg.eigvalsh(np.asarray(matrix))
    return [ResultRow("Hessian", f"{len(matrix)} × {len(matrix)}", "Eₕ/a₀²", "hessian",
                      f"lowest eigenvalue {eigenvalues[0]:.2e}")]


JOB_TYPE = JobType(
    name="hessian",
    input_model=Hessian,
    result_model=HessianResult,
    title="Hessian",
    cli_name=None,  # a 3N x 3N matrix: from Python, not a table
    cli_help="the Hessian by finite differences",
    estimate_gradients=lambda job: 6 * len(job.atoms.numbers) + 1,
    run=hessian,
    flat_surface_result=flat_hessian,
    result_rows=hessian_rows,
    listing_order=35,
)

__all__ = ["JOB_TYPE", "Hessian", "HessianResult"]
