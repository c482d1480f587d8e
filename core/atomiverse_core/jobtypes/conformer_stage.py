"""The RDKit stages of a conformer search, as jobs of their own so that they run on a controller
slot and never on the server: ``generate`` (ETKDG candidates) and ``select`` (the distinct
low-energy ones). A :mod:`conformer search <.conformers>` submits them as its children; they
take no engine time (the level of theory only checks the elements)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, model_validator

from ..atoms import Vector3
from ..jobs import Job
from .spec import JobType, Payload

MAX_CANDIDATES = 1000
# Candidates x atoms in one payload: a thousand 200-atom candidates, about 5 MB of JSON.
MAX_CANDIDATE_ATOMS = 200_000


class ConformerStage(Job):
    """One RDKit stage of a conformer search (submitted by the search, not by people).

    ``generate``: up to ``count`` (0: by rotatable bonds) ETKDG candidates from ``atoms``
    (seed ``seed``; pruned at ``rmsd_angstrom``). ``select``: of ``candidates_angstrom``
    with ``energies_hartree``, the distinct ones (energy within ``energy_kcal_per_mol`` and
    heavy-atom RMSD below ``rmsd_angstrom``: the same conformer), lowest first, at most
    ``keep``, within ``window_kcal_per_mol`` of the lowest; a candidate whose bonds are not
    those of ``atoms`` (its optimisation made another molecule) is left out and counted."""

    takes_geometry: ClassVar[bool] = False
    yields_geometry: ClassVar[bool] = False
    job_type: Literal["conformer_stage"] = "conformer_stage"  # type: ignore[assignment]
    operation: Literal["generate", "select"]
    count: int = Field(default=0, ge=0, le=MAX_CANDIDATES, description=(
        "0: from the rotatable bonds (10 + 20 per bond, <= 250; screened: 20 + 80, <= 500)"))
    screened: bool = Field(default=False, description="generate: for a search with a screen")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    rmsd_angstrom: float = Field(default=0.125, ge=0, le=10)
    energy_kcal_per_mol: float = Field(default=0.05, ge=0, le=100)
    window_kcal_per_mol: float = Field(default=6.0, gt=0, le=1000)
    keep: int = Field(default=MAX_CANDIDATES, ge=1, le=MAX_CANDIDATES)
    candidates_angstrom: list[list[Vector3]] = Field(default_factory=list,
                                                     max_length=MAX_CANDIDATES)
    energies_hartree: list[float] = Field(default_factory=list, max_length=MAX_CANDIDATES)

    @model_validator(mode="after")
    def _candidates_fit(self) -> ConformerStage:
        n = len(self.atoms.numbers)
        if len(self.candidates_angstrom) != len(self.energies_hartree):
            raise ValueError("energies_hartree: one energy per candidate")
        check_candidates(self.candidates_angstrom, n)
        return self


def check_candidates(candidates: list[list[Any]], n_atoms: int) -> None:
    """Every candidate has the molecule's atoms, and one job holds a bounded number of them."""
    if len(candidates) * n_atoms > MAX_CANDIDATE_ATOMS:
        raise ValueError(f"candidates_angstrom: at most {MAX_CANDIDATE_ATOMS} candidate atoms "
                         "in one job")
    if any(len(c) != n_atoms for c in candidates):
        raise ValueError(f"candidates_angstrom: every candidate has the {n_atoms} atoms")


class ConformerStageResult(BaseModel):
    geometries_angstrom: list[list[Vector3]] | None = None  # generate
    n_rotatable_bonds: int | None = None  # generate
    kept: list[int] | None = None  # select: candidate indices, lowest energy first
    n_rearranged: int | None = None  # select: candidates left out, their bonds changed
    wall_time_seconds: float = 0.0
    core_seconds: float = 0.0


def run_stage(engine: Any, molecule: Any, payload: dict[str, Any]) -> dict[str, Any]:
    from ..drivers import conformers

    atoms = payload["atoms"]
    charge = int(atoms.get("charge", 0))
    if payload["operation"] == "generate":
        return conformers.generate(atoms["numbers"], atoms["positions"], charge,
                                   int(payload.get("count", 0)), int(payload.get("seed", 0)),
                                   float(payload.get("rmsd_angstrom", 0.125)),
                                   screened=bool(payload.get("screened")))
    intact = conformers.same_bonds(atoms["numbers"], atoms["positions"],
                                   payload["candidates_angstrom"])
    kept = conformers.distinct_low(
        atoms["numbers"], atoms["positions"], charge, payload["candidates_angstrom"],
        payload["energies_hartree"], rmsd_angstrom=float(payload["rmsd_angstrom"]),
        energy_kcal_per_mol=float(payload["energy_kcal_per_mol"]),
        window_kcal_per_mol=float(payload["window_kcal_per_mol"]),
        keep=int(payload["keep"]), intact=intact)
    return {"kept": kept, "n_rearranged": intact.count(False)}


def _same_on_any_engine(point: Any, molecule: Any, payload: Payload) -> dict[str, Any]:
    return run_stage(None, molecule, dict(payload))


JOB_TYPE = JobType(
    name="conformer_stage",
    input_model=ConformerStage,
    result_model=ConformerStageResult,
    title="Conformer search stage",
    cli_name=None,
    cli_help="a stage of a conformer search",
    estimate_gradients=lambda job: 1,
    run=run_stage,
    flat_surface_result=_same_on_any_engine,
    listing_order=90,
    internal=True,
)

__all__ = ["JOB_TYPE", "ConformerStage", "ConformerStageResult", "check_candidates"]
