"""The job-type registry: every module of this package declares one job type as ``JOB_TYPE``
(a :class:`~atomiverse_core.jobtypes.spec.JobType`), and this package collects them.

Adding a job type is adding a module here (and its tests): its input and result models, cost
estimate, cache-key options, driver, dashboard rows and CLI name are all in it; nothing in the
SDK, the server or the controller names it.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Annotated, Any, Union

from pydantic import BaseModel, Field, TypeAdapter

from ..jobs import Job, describe_model_error
from .spec import CliColumn, JobType, ResultRow

# helpers of job types
_NOT_JOB_TYPES = {"spec", "conformer_ensemble", "conformer_prescreen", "conformer_views"}


def _discover() -> tuple[JobType, ...]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name in _NOT_JOB_TYPES:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        job_type = getattr(module, "JOB_TYPE", None)
        if not isinstance(job_type, JobType):
            raise TypeError(f"{module.__name__} declares no JOB_TYPE")
        found.append(job_type)
    return tuple(sorted(found, key=lambda t: (t.listing_order, t.name)))


_TYPES = _discover()
_BY_NAME = {t.name: t for t in _TYPES}
_BY_CLI_NAME = {t.cli_name: t for t in _TYPES if t.cli_name}
if len(_BY_NAME) != len(_TYPES) or \
        len(_BY_CLI_NAME) != sum(1 for t in _TYPES if t.cli_name):
    raise ValueError("two job types share a name or a CLI name")
_ADAPTER: TypeAdapter[Job] = TypeAdapter(Annotated[
    Union[tuple(t.input_model for t in _TYPES)],  # type: ignore[valid-type]  # noqa: UP007
    Field(discriminator="job_type")])


def input_models() -> dict[str, type[Job]]:
    """Every job type's input model by its class name (``SinglePointEnergy``, ...), but the
    internal ones."""
    return {t.input_model.__name__: t.input_model for t in _TYPES if not t.internal}


def result_models() -> dict[str, type[BaseModel]]:
    """Every job type's result model by its class name (``SinglePointResult``, ...), but the
    internal ones."""
    return {t.result_model.__name__: t.result_model for t in _TYPES if not t.internal}


def models() -> dict[str, type[BaseModel]]:
    """Input and result models by class name: what this package and the SDK re-export."""
    return {**input_models(), **result_models()}


globals().update(models())


def all_types() -> tuple[JobType, ...]:
    """Every job type, in listing order."""
    return _TYPES


def names() -> tuple[str, ...]:
    return tuple(_BY_NAME)


def find(name: Any) -> JobType | None:
    """The job type called ``name`` on the wire, or None."""
    return _BY_NAME.get(name) if isinstance(name, str) else None


def get(name: str) -> JobType:
    """The job type called ``name``; KeyError naming the known ones if there is none."""
    job_type = find(name)
    if job_type is None:
        raise KeyError(f"job_type: must be one of {', '.join(names())}, not {name!r}")
    return job_type


def by_cli_name(cli_name: str) -> JobType:
    return _BY_CLI_NAME[cli_name]


def cli_names() -> tuple[str, ...]:
    return tuple(_BY_CLI_NAME)


def of(job: Job) -> JobType:
    """The job type of a job model instance."""
    return _BY_NAME[job.job_type]


def parse_job(payload: Any) -> Job:
    """Validate a job payload into its model; raises pydantic.ValidationError."""
    return _ADAPTER.validate_python(payload)


def describe_validation_error(exc: Exception) -> str:
    """``<field>: <reason>`` for the first problem of a job payload."""
    return describe_model_error(exc, names())


__all__ = ["CliColumn", "JobType", "ResultRow", "all_types", "by_cli_name", "cli_names",
           "describe_validation_error", "find", "get", "input_models", "models", "names", "of",
           "parse_job", "result_models"]
__all__ += list(models())
