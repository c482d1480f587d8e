"""QCSchema in and out, through qcelemental's models (v1, the schema QCEngine and QCFractal
exchange): what maps and how is documented in :mod:`atomiverse_core.qcschema`.

    inp = atomiverse.qcschema.to_atomic_input(job)               # an AtomicInput (Bohr)
    job = atomiverse.qcschema.from_atomic_input(inp)             # a SinglePointEnergy
    atomiverse.submit_batch([inp.dict(), job.model_dump()])      # AtomicInput dicts go as they are
    res = atomiverse.qcschema.to_atomic_result(record)           # AtomicResult or FailedOperation

A result's ``properties`` carry ``return_energy``, ``return_gradient``, ``calcinfo_natom`` and
``scf_dipole_moment`` (e*Bohr); the xtb-specific values (HOMO-LUMO gap in eV, partial charges,
orbital energies and occupations, Wiberg bond orders, engine and version, the job id) are in
``extras["atomiverse"]``. Geometry optimisations map to ``OptimizationInput`` and
``OptimizationResult`` (the trajectory as AtomicResults of each stored step).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from atomiverse_core import qcschema as _convert
from atomiverse_core.jobs import Job
from atomiverse_core.jobtypes import input_models
from atomiverse_core.qcschema import BOHR_ANGSTROM, QCSchemaError

from ._version import __version__

_PROVENANCE = {"creator": "atomiverse", "version": __version__, "routine": "atomiverse"}


def _models() -> Any:
    import qcelemental.models as m  # v1: the models QCEngine's compute() takes and returns

    return m


def to_atomic_input(job: Job, driver: str | None = None) -> Any:
    """The job as a qcelemental ``AtomicInput`` (geometry in Bohr). ``driver``: energy or
    gradient (default) for a single point; a Hessian job's is hessian."""
    payload = job.model_dump(mode="json")
    return _models().AtomicInput(**_convert.atomic_input_from_payload(
        payload, driver or _driver_of(payload)))


def from_atomic_input(model_or_dict: Any) -> Job:
    """A SinglePointEnergy (a Hessian for the hessian driver) from an AtomicInput (model or
    dict); QCSchemaError (a ValueError) naming the field this platform does not support."""
    from atomiverse_core.jobtypes import parse_job

    return parse_job(_convert.payload_from_atomic_input(_as_dict(model_or_dict)))


def to_atomic_result(record: dict[str, Any], driver: str | None = None) -> Any:
    """The finished job's record (``get_job``'s: it carries the job's input) as an
    ``AtomicResult``; a failed or cancelled one as a ``FailedOperation`` carrying its error."""
    m = _models()
    payload = _input_of(record)
    driver = driver or _driver_of(payload)
    inp = _convert.atomic_input_from_payload(payload, driver)
    if record.get("state") != "done":
        return m.FailedOperation(id=record.get("job_id"), input_data=inp, success=False,
                                 error={"error_type": record.get("error_type") or "unknown",
                                        "error_message": record.get("error") or
                                        f"the job is {record.get('state')}"})
    result = record["result"]
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


def _driver_of(payload: dict[str, Any]) -> str:
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
    return {**_PROVENANCE, "routine": f"atomiverse ({result.get('engine')} "
                                      f"{result.get('engine_version')})"}


def _extras(record: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    keys = ("homo_lumo_gap_ev", "partial_charges_e", "orbital_energies_hartree",
            "orbital_occupations", "homo_hartree", "lumo_hartree", "wiberg_bond_orders",
            "engine", "engine_version", "level_of_theory", "warnings", "wall_time_seconds")
    return {"job_id": record.get("job_id"), **{k: result.get(k) for k in keys}}


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
