"""QCSchema in and out, through qcelemental's models (v1, the schema QCEngine and QCFractal
exchange): what maps and how is documented in :mod:`atomiverse_core.qcschema`.

    inp = atomiverse.qcschema.to_atomic_input(job)               # an AtomicInput (Bohr)
    job = atomiverse.qcschema.from_atomic_input(inp)             # a SinglePointEnergy
    atomiverse.submit_batch([inp.dict(), job.model_dump()])      # AtomicInput dicts go as they are
    res = atomiverse.qcschema.to_atomic_result(record)           # AtomicResult or FailedOperation
                                            # (get_job's record, or wait_jobs' read in full)

A result's ``properties`` carry ``return_energy``, ``return_gradient``, ``calcinfo_natom`` and
``scf_dipole_moment`` (e*Bohr); the xtb-specific values (HOMO-LUMO gap in eV, partial charges,
orbital energies and occupations, Wiberg bond orders, engine and version, the job id) are in
``extras["atomiverse"]``. Geometry optimisations map to ``OptimizationInput`` and
``OptimizationResult`` (the trajectory as AtomicResults of each stored step). A frequencies
job is an ``AtomicResult`` at the geometry its frequencies were computed at, with the
frequencies, IR intensities, normal modes and thermochemistry in ``extras["atomiverse"]``
(the conversions are :mod:`atomiverse_core.qcschema_results`, which the dashboard's download
uses too).
"""

from __future__ import annotations

from typing import Any

from atomiverse_core import qcschema as _convert
from atomiverse_core import qcschema_results as _results
from atomiverse_core.jobs import Job
from atomiverse_core.qcschema import BOHR_ANGSTROM, QCSchemaError
from atomiverse_core.qcschema_results import driver_of, to_optimization_input

from ._fullrecords import full_record


def _models() -> Any:
    import qcelemental.models as m  # v1: the models QCEngine's compute() takes and returns

    return m


def to_atomic_input(job: Job, driver: str | None = None) -> Any:
    """The job as a qcelemental ``AtomicInput`` (geometry in Bohr). ``driver``: energy or
    gradient (default) for a single point; a Hessian job's is hessian."""
    payload = job.model_dump(mode="json")
    return _models().AtomicInput(**_convert.atomic_input_from_payload(
        payload, driver or driver_of(payload)))


def from_atomic_input(model_or_dict: Any) -> Job:
    """A SinglePointEnergy (a Hessian for the hessian driver) from an AtomicInput (model or
    dict); QCSchemaError (a ValueError) naming the field this platform does not support."""
    from atomiverse_core.jobtypes import parse_job

    return parse_job(_convert.payload_from_atomic_input(_as_dict(model_or_dict)))


def to_atomic_result(record: dict[str, Any], driver: str | None = None, *,
                     client: Any = None) -> Any:
    """The finished job's record as an ``AtomicResult``; a failed or cancelled one as a
    ``FailedOperation`` carrying its error. A short record (``wait_jobs``', ``list_jobs``')
    is read again in full with ``get_job`` (the default client's, or ``client``'s)."""
    return _results.to_atomic_result(full_record(record, client), driver)


def to_optimization_result(record: dict[str, Any], *, client: Any = None) -> Any:
    """An optimisation's record as an ``OptimizationResult`` (short records as above)."""
    return _results.to_optimization_result(full_record(record, client))


def _as_dict(model_or_dict: Any) -> dict[str, Any]:
    if isinstance(model_or_dict, dict):
        return model_or_dict
    if hasattr(model_or_dict, "model_dump"):
        return model_or_dict.model_dump()
    if hasattr(model_or_dict, "dict"):
        return model_or_dict.dict()
    raise QCSchemaError("input: an AtomicInput model or dict is needed")


__all__ = ["BOHR_ANGSTROM", "QCSchemaError", "from_atomic_input", "to_atomic_input",
           "to_atomic_result", "to_optimization_input", "to_optimization_result"]
