"""Chains: jobs that run one after another on the server, each on the previous one's geometry
(``GeometryOptimization(...).then(Frequencies)``), without the client.

A chain is a composite job: no controller runs it. The server submits its first step as a child
job, and each time a step is done, the next one on that step's resulting geometry
(``final_positions_angstrom``, or the step's input geometry if it has none, as for a single
point). A failed or cancelled step fails the chain, naming the step; the steps after it never
start. The chain's state lives in its children's rows, so a server restart continues it where
it was. Its result is the last step's result, with the steps' job ids.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..jobs import Job, concrete_job_models, describe_model_error
from ..levels import LevelOfTheory
from .spec import Child, Fail, Finish, JobType, Payload, ResultRow, Spawn, not_run

MAX_CHAIN_STEPS = 10
MAX_STEP_OPTIONS = 32
# Set by the chain for every step: a step's options may not say otherwise.
_STEP_OWNED = frozenset({"job_type", "atoms", "level_of_theory", "name", "engine", "use_cache",
                         "walltime_seconds"})


class ChainStep(BaseModel):
    """One step: its job type, its options, and a level if it differs from the chain's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_type: str = Field(max_length=32)
    options: dict[str, Any] = Field(default_factory=dict, max_length=MAX_STEP_OPTIONS)
    level_of_theory: LevelOfTheory | None = Field(default=None,
                                                  description="None: the chain's level")


class Chain(Job):
    """Steps run one after another on the server, each on the geometry the previous one left
    (``atoms`` and ``level_of_theory`` are the first step's; a step's ``level_of_theory``, if
    set, overrides the chain's for that step). Build one with ``job.then(NextModel, **opts)``.
    """

    takes_geometry: ClassVar[bool] = False  # a chain is not a step of another chain
    job_type: Literal["chain"] = "chain"  # type: ignore[assignment]
    steps: list[ChainStep] = Field(min_length=2, max_length=MAX_CHAIN_STEPS)

    @model_validator(mode="after")
    def _steps_fit_together(self) -> Chain:
        models = concrete_job_models()
        for i, step in enumerate(self.steps):
            model = models.get(step.job_type)
            if model is None or (i > 0 and not model.takes_geometry):
                known = ", ".join(f"'{t}'" for t, m in models.items() if m.takes_geometry)
                raise ValueError(f"steps.{i}.job_type: must be one of {known}, not "
                                 f"{step.job_type!r}")
            if i > 0 and not models[self.steps[i - 1].job_type].yields_geometry:
                raise ValueError(f"steps.{i}.job_type: {step.job_type!r} needs a geometry, "
                                 f"which step {i} ({self.steps[i - 1].job_type}) does not give")
            owned = sorted(_STEP_OWNED & set(step.options))
            if owned:
                raise ValueError(f"steps.{i}.options.{owned[0]}: set by the chain, not a step")
            try:  # on the first geometry: the next ones have the same atoms
                model.model_validate(step_payload(self.model_dump(mode="json"), i,
                                                  self.atoms.model_dump(mode="json")))
            except ValidationError as e:
                raise ValueError(f"steps.{i}.{describe_model_error(e)}") from None
        return self

    @classmethod
    def starting_with(cls, job: Job) -> Chain:
        if isinstance(job, Chain):
            return job
        common = {"atoms", "level_of_theory", "name", "engine", "use_cache", "walltime_seconds",
                  "job_type"}
        first = ChainStep(job_type=job.job_type,
                          options=job.model_dump(mode="json", exclude=common))
        return cls.model_construct(atoms=job.atoms, level_of_theory=job.level_of_theory,
                                   name=job.name, engine=job.engine, use_cache=job.use_cache,
                                   walltime_seconds=job.walltime_seconds, steps=[first])

    def then(self, next_step: type[Job], **options: Any) -> Chain:
        level = options.pop("level_of_theory", None)
        step = ChainStep(job_type=next_step.model_fields["job_type"].default, options=options,
                         level_of_theory=level)
        fields = {k: getattr(self, k) for k in ("atoms", "level_of_theory", "name", "engine",
                                                "use_cache", "walltime_seconds")}
        return Chain(**fields, steps=[*self.steps, step])


class ChainResult(BaseModel):
    """The last step's result fields, and the steps' job ids and types in order."""

    model_config = ConfigDict(extra="allow")

    step_job_ids: list[str]
    step_job_types: list[str]


def step_payload(chain: Payload, index: int, atoms: Payload) -> dict[str, Any]:
    """The job payload of step ``index`` on ``atoms``."""
    step = chain["steps"][index]
    name = chain.get("name") or "chain"
    return {**step.get("options", {}), "job_type": step["job_type"], "atoms": dict(atoms),
            "level_of_theory": step.get("level_of_theory") or chain["level_of_theory"],
            "name": f"{name[:100]} · step {index + 1}", "engine": chain.get("engine"),
            "use_cache": chain.get("use_cache", True),
            "walltime_seconds": chain.get("walltime_seconds")}


def advance(chain: Payload, children: list[Child]) -> Spawn | Finish | Fail | None:
    if not children:
        return Spawn(0, [step_payload(chain, 0, chain["atoms"])])
    done = sorted(children, key=lambda c: c.step)
    last = done[-1]
    if last.state != "done":
        why = "was cancelled" if last.state == "cancelled" else \
            f"failed: {last.error or 'no reason given'}"
        return Fail(f"step {last.step + 1} ({last.job_type}) {why}",
                    "cancelled" if last.state == "cancelled" else last.error_type or "internal")
    if last.step + 1 < len(chain["steps"]):
        result = last.result or {}
        positions = result.get("final_positions_angstrom") or last.payload["atoms"]["positions"]
        atoms = {**last.payload["atoms"], "positions": positions}
        return Spawn(last.step + 1, [step_payload(chain, last.step + 1, atoms)])
    return Finish({**(last.result or {}), "step_job_ids": [c.job_id for c in done],
                   "step_job_types": [c.job_type for c in done]})


def chain_rows(record: Payload, result: Payload) -> list[ResultRow]:
    types = result.get("step_job_types") or [s["job_type"] for s in
                                             (record.get("job") or {}).get("steps", [])]
    return [ResultRow("Steps", " → ".join(types), "", "steps")]


def chain_note(job: Payload) -> str:
    return f"{len(job.get('steps') or [])} steps, run by the server one after another"


JOB_TYPE = JobType(
    name="chain",
    input_model=Chain,
    result_model=ChainResult,
    title="Chain",
    cli_name=None,
    cli_help="steps one after another (from Python: job.then(...))",
    estimate_gradients=lambda job: 0,  # its steps are estimated when they are submitted
    run=not_run,
    flat_surface_result=not_run,
    result_rows=chain_rows,
    options_note=chain_note,
    moves_geometry=True,
    advance=advance,
    listing_order=50,
)

__all__ = ["JOB_TYPE", "Chain", "ChainResult", "ChainStep"]
