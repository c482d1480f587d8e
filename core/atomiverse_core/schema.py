"""The wire schema: request and response bodies of the job API and the controller protocol.

The shared core owns these models; the SDK, the server and the controller import them. Each
job type's input and result models are its own (:mod:`atomiverse_core.jobtypes`). Units are in
the names: energies in Hartree, lengths in Angstrom, gradients in Hartree/Bohr, dipoles in
e*Bohr, times in seconds. Timestamps are ISO 8601 strings in UTC.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .state import State

EntryStatus = Literal["submitted", "cache_hit", "failed"]
ErrorType = Literal["input", "convergence", "resource", "crash", "walltime", "lost", "cancelled",
                    "internal"]


class _Wire(BaseModel):
    # Strict: a request that says 0 where it means false is a mistake worth reporting.
    model_config = ConfigDict(extra="forbid", strict=True)


# ----- results -----------------------------------------------------------------------------
# Sizes: orbital energies and occupations are one number per orbital; bond orders are sparse
# (pairs at or above WIBERG_MIN_ORDER, rounded to 1e-4), not an N x N matrix. An optimisation's
# trajectory holds every step, positions rounded to 1e-6 Angstrom and gradients to 1e-7
# Hartree/Bohr (~66 bytes of JSON per atom and step): a 200-atom, 300-step run (60,200 atom-
# steps, ~4 MB) is kept whole. Above TRAJECTORY_MAX_ATOM_STEPS the frames are sampled evenly,
# first and last kept, ``trajectory_steps`` naming them, so no result passes ~4.3 MB; every
# step's energy stays in ``energies_hartree``. Frequency jobs store no trajectory.
WIBERG_MIN_ORDER = 0.05
TRAJECTORY_MAX_ATOM_STEPS = 64_000


# ----- submission --------------------------------------------------------------------------
class BatchEntry(_Wire):
    # Kept raw on purpose: each entry is validated on its own so one bad job fails alone.
    job: Any
    compute_target: str | None = Field(default=None, max_length=100)


class BatchRequest(_Wire):
    jobs: list[Any]


class BatchEntryResult(BaseModel):
    job_id: str | None
    state: State | None
    status: EntryStatus
    error: str | None = None
    cached_from: str | None = None


class BatchResponse(BaseModel):
    total: int
    submitted: int
    failed: int
    cache_hits: int
    jobs: list[BatchEntryResult]


class JobSubmitRequest(_Wire):
    job: Any
    compute_target: str | None = Field(default=None, max_length=100)


# ----- jobs --------------------------------------------------------------------------------
class MoleculePreview(BaseModel):
    formula: str
    symbols: list[str]
    positions: list[list[float]]


class JobSummary(BaseModel):
    job_id: str
    name: str | None
    state: State
    job_type: str
    created_at: str
    billed_core_seconds: float
    molecule_preview: MoleculePreview | None


class JobPublic(JobSummary):
    compute_target: str
    controller: str | None
    started_at: str | None
    finished_at: str | None
    attempts: int
    error: str | None
    error_type: str | None = None
    attempt_errors: list[dict[str, Any]] = Field(
        default_factory=list, description="Every failed attempt: error_type, error, at")
    cached_from: str | None
    parent_id: str | None = Field(default=None, description=(
        "The composite job (a chain) this job is a step of"))
    job: dict[str, Any]
    result: dict[str, Any] | None
    version: str | None = Field(default=None, description=(
        "Changes whenever the job changes state or starts another attempt; what a watch "
        "compares (POST /api/v1/jobs/watch)"))


class JobsPage(BaseModel):
    jobs: list[dict[str, Any]]
    has_more: bool
    next_cursor: str | None


class JobRename(_Wire):
    name: str = Field(max_length=10_000, description="Trimmed; 1-120 printable characters")


class WaitRequest(_Wire):
    job_ids: list[Annotated[str, Field(max_length=64)]] = Field(max_length=10_000)
    timeout_seconds: float = Field(default=20.0, ge=0, le=60)
    include_result: bool = False
    coalesce_seconds: float = Field(
        default=0.0, ge=0, le=5,
        description=("Answer at most this long after the wait started, gathering the jobs "
                     "that finish meanwhile; a finish after that is answered at once"))


class WatchRequest(_Wire):
    jobs: dict[Annotated[str, Field(max_length=64)], str | None] = Field(
        max_length=10_000, description=(
            "job id -> the version last seen (null: none yet), or just the state last seen "
            "(then only a change of state counts)"))
    timeout_seconds: float = Field(default=20.0, ge=0, le=60)
    watch_id: str | None = Field(default=None, max_length=64, description=(
        "One per client: a newer watch with the same id ends the older one at once"))
    coalesce_seconds: float = Field(default=0.0, ge=0, le=5, description=(
        "Answer changes at most this long after the watch started, gathering the ones "
        "that come meanwhile; a change after that is answered at once (and so is one that "
        "leaves no watched job unchanged)"))
    brief: bool = Field(default=False, description=(
        "Answer {job_id, state, version, billed_core_seconds} per changed job instead of its "
        "full record (a page that only shows states)"))
    newest_seen: str | None = Field(default=None, max_length=64, description=(
        "The newest job a page shows: the watch also answers, with newer=true, as soon as "
        "the workspace has a job submitted after it (or it was deleted); \"\" when the page "
        "shows none: then as soon as there is any"))


class WatchResponse(BaseModel):
    """The full records of the watched jobs whose version differs from the one given; the
    call returns as soon as there is one, or empty when the timeout runs out."""

    jobs: list[dict[str, Any]]
    newer: bool = Field(default=False, description=(
        "Jobs were submitted after ``newest_seen`` (only with ``newest_seen``)"))


class WaitResponse(BaseModel):
    """States of the requested jobs; the call returns once any of them is terminal."""

    jobs: list[dict[str, Any]]


# ----- controller protocol -----------------------------------------------------------------
class LeaseRef(_Wire):
    job_id: str = Field(max_length=64)
    lease_id: str = Field(max_length=64)


# A controller holds at most one lease per slot; the bound keeps one request's SQL within the
# database's limit on bound variables (SQLite: 32766) and its work bounded.
MAX_LEASES_PER_REQUEST = 10_000


class ControllerRegister(_Wire):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    slots: int = Field(ge=1, le=4096)
    cores_per_job: int = Field(default=1, ge=1, le=1024)
    capacity: int | None = Field(default=None, ge=1,
                                 description="Outstanding jobs accepted; default from slots")
    engines: dict[str, str] = Field(description="Engine name -> version")
    hostname: str = ""
    holding: list[LeaseRef] | None = Field(
        default=None, max_length=MAX_LEASES_PER_REQUEST,
        description="The leases this process holds (running jobs, spooled results). The "
                    "controller's other leases belonged to an earlier process and end now. "
                    "None: say nothing, end nothing")
    pool: str | None = Field(
        default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Join this pool: a controller of that name in the same workspace, whose "
                    "jobs this one claims too, never more at once than its free slots")


class ControllerRegistered(BaseModel):
    controller_id: str
    name: str
    token: str
    heartbeat_seconds: float


class ClaimRequest(_Wire):
    max_jobs: int = Field(ge=1, le=1000)
    wait_seconds: float = Field(default=20.0, ge=0, le=60)


class ClaimedJob(BaseModel):
    job_id: str
    lease_id: str
    attempt: int
    job: dict[str, Any]
    walltime_seconds: float


class ClaimResponse(BaseModel):
    jobs: list[ClaimedJob]


class HeartbeatRequest(_Wire):
    running: list[LeaseRef] = Field(default_factory=list, max_length=MAX_LEASES_PER_REQUEST)


class HeartbeatResponse(BaseModel):
    cancelled: list[str] = Field(description="Jobs to stop now: cancelled by the user")
    lost: list[str] = Field(description="Jobs whose lease this controller no longer holds")
    drain: bool = Field(default=False, description="Stop claiming, finish, hand back, exit")


class JobReport(_Wire):
    job_id: str
    lease_id: str
    ok: bool
    result: dict[str, Any] | None = None
    error: str | None = None
    error_type: ErrorType | None = None


class CompleteRequest(_Wire):
    reports: list[JobReport] = Field(max_length=10_000)


class CompleteResponse(BaseModel):
    accepted: list[str]
    rejected: list[str]


class ErrorBody(BaseModel):
    """Every error response: ``detail`` is one human-readable line naming the field and the
    reason; validation errors add the full list in ``errors``."""

    detail: str
    errors: list[dict[str, Any]] | None = None
