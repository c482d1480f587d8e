"""What a job type declares, in one place: the :class:`JobType` record each module of
:mod:`atomiverse_core.jobtypes` exports as ``JOB_TYPE``.

The SDK, the server and the controller read these records and never spell a job type's name:
the server validates inputs and results and estimates costs with them, the controller runs a
job through its ``run`` driver, the dashboard and the CLI show it through its display fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import BaseModel

from ..jobs import Job

if TYPE_CHECKING:
    from ..drivers.contract import EngineHarness, Molecule

# Everything but these is part of what a job computes, so of its cache key.
BOOKKEEPING_FIELDS = frozenset({"name", "use_cache", "walltime_seconds", "engine", "atoms"})

Payload = Mapping[str, Any]
Driver = Callable[["EngineHarness", "Molecule", dict[str, Any]], dict[str, Any]]


class ResultRow(NamedTuple):
    """One line of a result as the dashboard shows it."""

    label: str
    value: Any
    unit: str = ""
    key: str = ""  # a stable name for the row (tests and page scripts find it by this)
    note: str = ""


class Child(NamedTuple):
    """A composite job's child as its ``advance`` sees it."""

    job_id: str
    step: int
    job_type: str
    state: str
    payload: Mapping[str, Any]
    result: Mapping[str, Any] | None
    error: str | None
    error_type: str | None = None


class Spawn(NamedTuple):
    """Submit these job payloads as the composite's children of step ``step``."""

    step: int
    payloads: list[dict[str, Any]]


class Finish(NamedTuple):
    result: dict[str, Any]


class Fail(NamedTuple):
    error: str
    error_type: str = "internal"


Advance = Callable[[Payload, list[Child]], Spawn | Finish | Fail | None]


class Frame(NamedTuple):
    """A geometry a result gives (Angstrom), with its energy (Hartree)."""

    positions_angstrom: list[Any]
    energy_hartree: float
    note: str = ""  # for an .xyz comment line: "key=value ..."


class Table(NamedTuple):
    """A table of a result's own, for the job page (an ensemble's conformers, ...)."""

    title: str
    headers: list[str]
    rows: list[list[Any]]


class CliColumn(NamedTuple):
    """A column of ``atomiverse run``'s table: a result field and how to print it."""

    header: str
    field: str
    format: str = "{}"


def cache_options(job: Job) -> dict[str, Any]:
    """The default cache-key part of a job: every option except bookkeeping."""
    return job.model_dump(mode="json", exclude=set(BOOKKEEPING_FIELDS))


def no_rows(record: Payload, result: Payload) -> list[ResultRow]:
    return []


def no_table(result: Payload) -> Table | None:
    return None


def final_frame(result: Payload) -> list[Frame]:
    """The final geometry, if the result has one."""
    positions = result.get("final_positions_angstrom")
    return [Frame(positions, result["energy_hartree"])] if positions else []


def no_note(job: Payload) -> str:
    return ""


def no_cli_options(args: Any) -> dict[str, Any]:
    return {}


def not_run(*args: Any) -> dict[str, Any]:
    raise RuntimeError("a composite job type runs on the server as its children, not on an "
                       "engine")


@dataclass(frozen=True)
class JobType:
    """A job type: its models, its cost, its cache key, its driver and how people see it.

    ``estimate_gradients(job)``: how many energy+gradient evaluations the job takes, roughly
    (the server ranks a batch's jobs by it; only comparisons mean anything).
    ``run(engine, molecule, payload)``: the driver; the result model as a dict.
    ``flat_surface_result(point, molecule, payload)``: the result on a flat surface from a
    single point's result, with no further evaluation (the instant engine, a named fake that
    measures the platform's own cost, answers with it).
    ``result_rows(record, result)``: this type's own lines on the job page, after the energy,
    gap, dipole and gradient every type shows.
    ``run`` and ``flat_surface_result`` of a composite type are never called (no controller
    runs it): :func:`not_run` says so if they are.
    """

    name: str  # on the wire: the payload's job_type
    input_model: type[Job]
    result_model: type[BaseModel]
    title: str  # for people: "Geometry optimisation"
    cli_name: str | None  # `atomiverse run --job NAME`; None: not offered there
    cli_help: str
    estimate_gradients: Callable[[Any], int]
    run: Driver
    flat_surface_result: Callable[[dict[str, Any], Any, Payload], dict[str, Any]]
    cache_options: Callable[[Any], dict[str, Any]] = cache_options
    result_rows: Callable[[Payload, Payload], list[ResultRow]] = no_rows
    options_note: Callable[[Payload], str] = no_note
    energy_label: str = "Total energy"
    moves_geometry: bool = False  # the result has final_positions_angstrom
    cli_columns: tuple[CliColumn, ...] = field(default_factory=tuple)
    cli_options: Callable[[Any], dict[str, Any]] = no_cli_options
    listing_order: int = 100  # where lists of job types (menus, errors) put it
    # The geometries a result gives, for `atomiverse run`'s .xyz and the job page's viewer;
    # with a frame noun ("conformer") the viewer steps through them as alternatives.
    frames: Callable[[Payload], list[Frame]] = final_frame
    frame_noun: str = ""
    result_table: Callable[[Payload], Table | None] = no_table
    # A composite job type runs no calculation itself: the server calls ``advance(payload,
    # children)`` when it is submitted and whenever none of its children is pending or
    # running, and does what it answers (None: nothing yet). Its children are ordinary jobs.
    advance: Advance | None = None
    internal: bool = False  # submitted by a composite job, not by people: not re-exported
    # Defaults that depend on what the target can run: ``for_engines(job, engines)`` is
    # called at submission with the target's engine names (when a controller has said them;
    # a composite's are settled before its first ``advance`` otherwise, once one has) and
    # answers the job to store, the same one if nothing changes.
    for_engines: Callable[[Any, tuple[str, ...]], Any] | None = None

    @property
    def is_composite(self) -> bool:
        return self.advance is not None

    def __post_init__(self) -> None:
        declared = self.input_model.model_fields["job_type"].default
        if declared != self.name:
            raise ValueError(f"job type {self.name!r}: its input model "
                             f"{self.input_model.__name__} says job_type={declared!r}")
