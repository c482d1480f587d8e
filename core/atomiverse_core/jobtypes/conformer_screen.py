"""The GFN-FF screen of a conformer search: several candidates optimised in one job.

A GFN-FF optimisation of a drug-sized candidate takes about 25 ms of compute; as a job of its
own it cost 60-80 core-milliseconds on the benchmark's machine: GFN-FF runs in a forked child
(its files and its output, :mod:`atomiverse_controller.engines.isolate`), and every job is a
stored record, a claim and a report beside the two workers. A search screens up to 500
candidates, so it sends them ``SCREEN_CHUNK`` to a job: one fork and one record for ten, and the
chunks still spread over every free slot. A candidate whose optimisation fails is reported as
such; the others in its job go on.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal, NamedTuple

from pydantic import BaseModel, Field, model_validator

from ..atoms import Vector3
from ..drivers.optimizer_settings import DEFAULT_OPTIMIZER, Fmax, MaxSteps, Optimizer
from ..jobs import Job
from ..levels import GFNFF, KNOWN_ENGINES
from .conformer_stage import MAX_CANDIDATES, check_candidates
from .spec import Child, JobType, Payload

SCREEN_CHUNK = 10


class ConformerScreen(Job):
    """Candidates of a conformer search optimised one after another in one job (submitted by
    the search, not by people): each of ``candidates_angstrom`` from its own geometry (the
    ``atoms`` give the elements, charge and multiplicity), with ``optimizer`` until the largest
    force is below ``fmax`` (eV/Angstrom) or ``max_steps``."""

    takes_geometry: ClassVar[bool] = False
    yields_geometry: ClassVar[bool] = False
    job_type: Literal["conformer_screen"] = "conformer_screen"  # type: ignore[assignment]
    candidates_angstrom: list[list[Vector3]] = Field(min_length=1, max_length=MAX_CANDIDATES)
    optimizer: Optimizer = DEFAULT_OPTIMIZER
    fmax: Fmax = 0.05
    max_steps: MaxSteps = 300

    @model_validator(mode="after")
    def _candidates_fit(self) -> ConformerScreen:
        check_candidates(self.candidates_angstrom, len(self.atoms.numbers))
        return self


class ScreenedCandidate(BaseModel):
    final_positions_angstrom: list[Vector3] | None = None  # None: its optimisation failed
    energy_hartree: float | None = None
    gradient_evaluations: int = 0
    converged: bool = False
    error: str | None = None


class ConformerScreenResult(BaseModel):
    candidates: list[ScreenedCandidate]
    wall_time_seconds: float = 0.0
    core_seconds: float = 0.0


def run_screen(engine: Any, molecule: Any, payload: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from ..drivers.contract import EngineError
    from ..drivers.optimize import optimize  # ASE and SciPy: only where jobs run

    out: list[dict[str, Any]] = []
    for positions in payload["candidates_angstrom"]:
        one = dataclasses.replace(molecule, positions_angstrom=np.asarray(positions, float))
        try:
            r = optimize(engine, one, payload)
        except EngineError as e:
            out.append({"error": e.message})
            continue
        out.append({"final_positions_angstrom": r["final_positions_angstrom"],
                    "energy_hartree": r["energy_hartree"], "converged": r["converged"],
                    "gradient_evaluations": len(r["energies_hartree"])})
    return {"candidates": out}


def _unmoved(point: dict[str, Any], molecule: Any, payload: Payload) -> dict[str, Any]:
    """On a flat surface every candidate is a minimum where it starts."""
    return {"candidates": [{"final_positions_angstrom": c, "energy_hartree":
                            point["energy_hartree"], "converged": True, "gradient_evaluations": 1}
                           for c in payload["candidates_angstrom"]]}


class Screened(NamedTuple):
    """One screened candidate as the search goes on with it (positions in Angstrom)."""

    etkdg: Any
    minimum: Any
    energy_hartree: float


def screened_candidates(screening: list[Child]) -> list[Screened]:
    """The candidates the screen's jobs optimised, in the order they were generated; those
    whose optimisation (or job) failed are left out. A search stored before the screen sent
    several candidates a job has one GFN-FF optimisation a job."""
    out = []
    for job in (c for c in screening if c.state == "done" and c.result is not None):
        if job.job_type == "opt":
            out.append(Screened(job.payload["atoms"]["positions"],
                                job.result["final_positions_angstrom"],
                                job.result["energy_hartree"]))
            continue
        for start, r in zip(job.payload["candidates_angstrom"], job.result["candidates"],
                            strict=True):
            if r.get("final_positions_angstrom") is not None:
                out.append(Screened(start, r["final_positions_angstrom"], r["energy_hartree"]))
    return out


def screen_size(screening: list[Child]) -> int:
    """How many candidates the screen's jobs were given."""
    return sum(len(c.payload.get("candidates_angstrom") or [None]) for c in screening)


def screen_for_engines(search: Any, engines: tuple[str, ...]) -> Any:
    """The search with ``screen`` settled for a target with these engines: on where one of
    them runs GFN-FF (and the search names no engine that does not) and the search is in
    vacuum; off otherwise. A search that says, keeps what it says, unless it asks for a
    screen no engine it may use can run: ValueError naming the field."""
    usable = [e for e in ((search.engine,) if search.engine else engines)
              if e in KNOWN_ENGINES and GFNFF.runs_on(e)]
    if search.screen is None:
        screen = bool(usable) and search.level_of_theory.solvation is None
        return search.model_copy(update={"screen": screen})
    if search.screen and not usable:
        allowed = (search.engine,) if search.engine else engines
        raise ValueError(f"screen: the screen runs GFN-FF, and {GFNFF.engine_requirement()}; "
                         f"this search may use only {', '.join(allowed)} (set screen to false, "
                         f"or send it to a target with xtb)")
    return search


def _estimate(job: Any) -> int:
    return len(job.candidates_angstrom) * (10 + len(job.atoms.numbers))


JOB_TYPE = JobType(
    name="conformer_screen",
    input_model=ConformerScreen,
    result_model=ConformerScreenResult,
    title="Conformer search screen",
    cli_name=None,
    cli_help="the GFN-FF screen of a conformer search",
    estimate_gradients=_estimate,
    run=run_screen,
    flat_surface_result=_unmoved,
    listing_order=91,
    internal=True,
)

__all__ = ["JOB_TYPE", "SCREEN_CHUNK", "ConformerScreen", "ConformerScreenResult", "Screened",
           "screen_for_engines", "screen_size", "screened_candidates"]
