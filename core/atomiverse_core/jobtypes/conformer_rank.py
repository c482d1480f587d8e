"""The ranking of a screened conformer search: a single point at the prescreen's level on each
distinct GFN-FF minimum, several to a job, and the order the prescreen takes them in.

GFN-FF orders conformers differently from GFN2-xTB. Prescreening every distinct screened
candidate of a benchmark molecule (``bench/README.md``, "Ranked before the prescreen"), the
lowest two prescreen energies of propranolol (seed 1) came from the 71st and 108th candidates by
GFN-FF energy and from the 1st and 4th by a GFN2-xTB single point at the GFN-FF minimum; the
lowest of metoprolol's from the 274th and the 90th. A single point costs about a tenth of a
loose optimisation, so the prescreen's stages go in the single points' order.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, model_validator

from ..atoms import Vector3
from ..jobs import Job
from .conformer_screen import Screened
from .conformer_stage import MAX_CANDIDATES, check_candidates
from .spec import Child, JobType, Payload

RANK_CHUNK = 25


class ConformerRank(Job):
    """Single points of a conformer search's candidates in one job (submitted by the search,
    not by people): the energy of ``atoms`` (elements, charge, multiplicity) at each of
    ``candidates_angstrom``, at ``level_of_theory``."""

    takes_geometry: ClassVar[bool] = False
    yields_geometry: ClassVar[bool] = False
    job_type: Literal["conformer_rank"] = "conformer_rank"  # type: ignore[assignment]
    candidates_angstrom: list[list[Vector3]] = Field(min_length=1, max_length=MAX_CANDIDATES)

    @model_validator(mode="after")
    def _candidates_fit(self) -> ConformerRank:
        check_candidates(self.candidates_angstrom, len(self.atoms.numbers))
        return self


class ConformerRankResult(BaseModel):
    energies_hartree: list[float | None] = Field(description=(
        "At each candidate, in order (None: its calculation failed, see errors)"))
    errors: list[str | None]
    wall_time_seconds: float = 0.0
    core_seconds: float = 0.0


def run_rank(engine: Any, molecule: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """One session for all: each SCF starts from the previous candidate's charges, the same
    molecule in another shape."""
    import numpy as np

    from ..drivers.contract import EngineError

    session = engine.open_session(molecule)
    energies: list[float | None] = []
    errors: list[str | None] = []
    for positions in payload["candidates_angstrom"]:
        one = dataclasses.replace(molecule, positions_angstrom=np.asarray(positions, float))
        try:
            energies.append(float(session.evaluate(one.positions_bohr)[0]))
            errors.append(None)
        except EngineError as e:
            energies.append(None)
            errors.append(e.message)
            session = engine.open_session(molecule)  # no failed SCF to restart from
    return {"energies_hartree": energies, "errors": errors}


def _flat(point: dict[str, Any], molecule: Any, payload: Payload) -> dict[str, Any]:
    n = len(payload["candidates_angstrom"])
    return {"energies_hartree": [point["energy_hartree"]] * n, "errors": [None] * n}


def ranked(kept: list[Screened], ranking: list[Child], keep: int) -> list[Screened]:
    """The ``keep`` lowest of ``kept`` by their single points (``ranking``: the rank jobs in
    the order submitted, ``RANK_CHUNK`` candidates each, in ``kept``'s order); a candidate whose
    single point failed goes after the others, in ``kept``'s order."""
    energies: list[float | None] = []
    for job in ranking:
        n = len(job.payload["candidates_angstrom"])
        done = job.state == "done" and job.result is not None
        energies += job.result["energies_hartree"] if done else [None] * n
    order = sorted(range(len(kept)), key=lambda i: (energies[i] is None, energies[i] or 0.0, i))
    return [kept[i] for i in order[:keep]]


JOB_TYPE = JobType(
    name="conformer_rank",
    input_model=ConformerRank,
    result_model=ConformerRankResult,
    title="Conformer search ranking",
    cli_name=None,
    cli_help="the single points that order a conformer search's screened candidates",
    estimate_gradients=lambda job: len(job.candidates_angstrom),
    run=run_rank,
    flat_surface_result=_flat,
    listing_order=92,
    internal=True,
)

__all__ = ["JOB_TYPE", "RANK_CHUNK", "ConformerRank", "ConformerRankResult", "ranked"]
