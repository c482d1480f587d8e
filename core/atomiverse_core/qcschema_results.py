"""Finished jobs' records as QCSchema results, through qcelemental's models (v1): an
``AtomicResult`` for a single point, a Hessian or frequencies job, an ``OptimizationResult`` for a
geometry optimisation, a ``FailedOperation`` for a failed or cancelled job. The SDK's
``atomiverse.qcschema`` returns these models; the server's download route writes them as JSON.

What maps is documented in :mod:`atomiverse_core.qcschema` (inputs) and the SDK module
(results); a frequencies job's frequencies, IR intensities, normal modes and thermochemistry,
which QCSchema has no fields for, are in ``extras["atomiverse"]``.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import numpy as np

from . import qcschema as _convert
from .jobs import Job
from .jobtypes import input_models
from .qcschema import QCSchemaError

OPTIMISATION_JOB_TYPE = "opt"
# The job types a record of maps to QCSchema (the composites have no single calculation).
MAPPED_JOB_TYPES = frozenset({"single_point_energy", "hessian", "frequencies",
                              OPTIMISATION_JOB_TYPE})
_EXTRA_KEYS = ("homo_lumo_gap_ev", "partial_charges_e", "orbital_energies_hartree",
               "orbital_occupations", "homo_hartree", "lumo_hartree", "wiberg_bond_orders",
               "engine", "engine_version", "level_of_theory", "warnings", "wall_time_seconds")
# A frequencies job's own fields, where its result has them.
_FREQUENCY_KEYS = ("frequencies_cm1", "ir_intensities_km_per_mol", "normal_modes_angstrom",
                   "imaginary_frequencies_cm1", "n_imaginary", "zero_point_energy_hartree",
                   "enthalpy_hartree", "gibbs_energy_hartree", "entropy_hartree_per_kelvin",
                   "temperature_kelvin", "pressure_pascal", "symmetry_number", "geometry",
                   "final_positions_angstrom")


def _models() -> Any:
    import qcelemental.models as m  # v1: the models QCEngine's compute() takes and returns

    return m


def _version() -> str:
    try:
        return metadata.version("atomiverse")
    except metadata.PackageNotFoundError:
        return "unknown"


def record_as_qcschema(record: dict[str, Any]) -> Any:
    """The record as the QCSchema model its job type maps to (see the module's docstring)."""
    if record.get("job_type") == OPTIMISATION_JOB_TYPE:
        return to_optimization_result(record)
    return to_atomic_result(record)


def to_atomic_result(record: dict[str, Any], driver: str | None = None) -> Any:
    """The finished job's record (``get_job``'s: it carries the job's input) as an
    ``AtomicResult``; a failed or cancelled one as a ``FailedOperation`` carrying its error."""
    m = _models()
    payload = _input_of(record)
    driver = driver or driver_of(payload)
    inp = _convert.atomic_input_from_payload(payload, driver)
    if record.get("state") != "done":
        return m.FailedOperation(id=record.get("job_id"), input_data=inp, success=False,
                                 error={"error_type": record.get("error_type") or "unknown",
                                        "error_message": record.get("error") or
                                        f"the job is {record.get('state')}"})
    result = record["result"]
    if result.get("final_positions_angstrom") is not None:  # frequencies after optimising
        payload = {**payload, "atoms": {**payload["atoms"],
                                        "positions": result["final_positions_angstrom"]}}
        inp = _convert.atomic_input_from_payload(payload, driver)
    gradient = np.asarray(result["gradient_hartree_per_bohr"], dtype=float)
    properties = {"return_energy": result["energy_hartree"], "return_gradient": gradient,
                  "calcinfo_natom": len(gradient)}
    if result.get("dipole_au") is not None:
        properties["scf_dipole_moment"] = result["dipole_au"]
    returned: Any = result["energy_hartree"] if driver == "energy" else gradient
    if driver == "hessian":
        returned = properties["return_hessian"] = np.asarray(
            result["hessian_hartree_per_bohr2"], dtype=float)
    return m.AtomicResult(
        **inp, id=record.get("job_id"), properties=properties, success=True,
        return_result=returned,
        provenance=_provenance(result), extras={"atomiverse": _extras(record, result)})


def to_optimization_input(job: Job) -> Any:
    """A GeometryOptimization as an ``OptimizationInput`` (keywords: optimizer, fmax in
    eV/Angstrom, max_steps)."""
    m = _models()
    payload = job.model_dump(mode="json")
    atomic = _convert.atomic_input_from_payload(payload)
    return m.OptimizationInput(
        initial_molecule=atomic["molecule"],
        input_specification={"driver": "gradient", "model": atomic["model"],
                             "keywords": atomic["keywords"]},
        keywords={k: payload[k] for k in ("optimizer", "fmax", "max_steps") if k in payload},
        protocols={"trajectory": "all"})


def to_optimization_result(record: dict[str, Any]) -> Any:
    """A finished GeometryOptimization's record as an ``OptimizationResult`` (the final
    molecule, every step's energy, and a trajectory of AtomicResults for the stored steps);
    a failed one as a ``FailedOperation``."""
    m = _models()
    job = _input_of(record)
    inp = to_optimization_input(input_models()["GeometryOptimization"].model_validate(job))
    if record.get("state") != "done":
        return m.FailedOperation(id=record.get("job_id"), input_data=inp.dict(),
                                 success=False, error={"error_type": record.get("error_type")
                                                       or "unknown",
                                                       "error_message": record.get("error")})
    result = record["result"]
    final = _molecule(job, result["final_positions_angstrom"])
    return m.OptimizationResult(
        **inp.dict(exclude={"schema_name", "schema_version", "provenance", "extras"}),
        final_molecule=final, energies=result["energies_hartree"],
        trajectory=_trajectory(record), success=True, provenance=_provenance(result),
        extras={"atomiverse": _extras(record, result)})


def driver_of(payload: dict[str, Any]) -> str:
    """A job payload's QCSchema driver: hessian for a Hessian job, else gradient."""
    return "hessian" if "hessian" in payload.get("job_type", "") else "gradient"


def _input_of(record: dict[str, Any]) -> dict[str, Any]:
    if "job" not in record:
        raise QCSchemaError("record: it has no 'job' (the input): pass the full record, "
                            "as Client.get_job returns it (wait_jobs' records are shorter)")
    return record["job"]


def _trajectory(record: dict[str, Any]) -> list[Any]:
    result, job = record["result"], record["job"]
    steps = zip(result.get("trajectory_positions_angstrom") or [],
                result.get("trajectory_energies_hartree") or [],
                result.get("trajectory_gradients_hartree_per_bohr") or [], strict=True)
    frames = []
    for positions, energy, gradient in steps:
        frame = {**job, "atoms": {**job["atoms"], "positions": positions}}
        frames.append(to_atomic_result(
            {"job_id": record.get("job_id"), "state": "done", "job": frame,
             "result": {**result, "energy_hartree": energy,
                        "gradient_hartree_per_bohr": gradient, "dipole_au": None}}))
    return frames


def _molecule(job: dict[str, Any], positions_angstrom: Any) -> Any:
    payload = {**job, "atoms": {**job["atoms"], "positions": positions_angstrom}}
    return _models().Molecule(**_convert.atomic_input_from_payload(payload)["molecule"])


def _provenance(result: dict[str, Any]) -> dict[str, Any]:
    return {"creator": "atomiverse", "version": _version(),
            "routine": f"atomiverse ({result.get('engine')} {result.get('engine_version')})"}


def _extras(record: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    extras = {"job_id": record.get("job_id"), **{k: result.get(k) for k in _EXTRA_KEYS}}
    extras.update({k: result[k] for k in _FREQUENCY_KEYS if result.get(k) is not None})
    return extras


__all__ = ["MAPPED_JOB_TYPES", "driver_of", "record_as_qcschema", "to_atomic_result", "to_optimization_input",
           "to_optimization_result"]
