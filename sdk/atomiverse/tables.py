"""Job records as a table and as files.

    df = atomiverse.to_dataframe(records)              # pandas: one row per job
    atomiverse.export(records, "results.extxyz")       # the format from the extension

``records`` are job records as ``get_job`` returns them (with ``job`` and ``result``), the
shorter ones of ``wait_jobs``, ``as_completed`` and ``list_jobs`` (each read again in full with
``get_job``: the default client's, or ``client=``), or submitted
:class:`~atomiverse.jobs.Job` objects. The columns: job id, name, job type, state,
formula, atoms, charge, multiplicity, level of theory, the energy (Hartree), HOMO-LUMO gap (eV),
dipole (Debye, and its components in e*Bohr), the optimisation's steps and convergence, the
Gibbs energy and imaginary modes of a frequency job, engine, wall time and core-seconds, the
error, and the created/started/finished times (UTC).

Formats by extension: ``.extxyz`` (ASE's extended XYZ: energy in eV and forces in eV/Angstrom
per frame, the Hartree values in the comment line), ``.xyz`` (plain XYZ, energy in the
comment line), ``.csv``, ``.parquet`` (the table), ``.jsonl`` (the records as the API returned
them, one per line) and ``.db`` (an ASE database, a row per job, key-value pairs from the
table). Finished jobs without a structure to write (failed ones) appear in the tables only.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from atomiverse_core.jobs import Job
from atomiverse_core.units import DEBYE_PER_ATOMIC_UNIT

from . import results
from ._fullrecords import full_record

COLUMNS = ("job_id", "name", "job_type", "state", "formula", "n_atoms", "charge", "multiplicity",
           "level_of_theory", "energy_hartree", "homo_lumo_gap_ev", "dipole_debye",
           "dipole_x_au", "dipole_y_au", "dipole_z_au", "n_steps", "converged",
           "gibbs_energy_hartree", "n_imaginary", "engine", "wall_time_seconds", "core_seconds",
           "error", "created_at", "started_at", "finished_at")
FORMATS = (".extxyz", ".xyz", ".csv", ".parquet", ".jsonl", ".db")
_STRUCTURE_FORMATS = (".extxyz", ".xyz", ".db")


def _record(job: Job | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(job, Job):
        return {**job.record, "job": job.model_dump(mode="json")}
    if not isinstance(job, Mapping) or "job" not in job:
        raise TypeError("expected a Job or a job record with 'job' (as get_job returns it; "
                        "to_dataframe and export also take wait_jobs' and list_jobs' records)")
    return dict(job)


def _records(jobs: Iterable[Job | Mapping[str, Any]], client: Any) -> list[dict[str, Any]]:
    return [_record(full_record(j, client)) for j in jobs]


def row(job: Job | Mapping[str, Any]) -> dict[str, Any]:
    """One job as a flat row of plain values (the columns of :func:`to_dataframe`)."""
    record = _record(job)
    payload, result = record["job"], record.get("result") or {}
    atoms = payload["atoms"]
    dipole = result.get("dipole_au")
    level = payload.get("level_of_theory") or {}
    solvation = level.get("solvation")
    return {
        "job_id": record.get("job_id"), "name": record.get("name", payload.get("name")),
        "job_type": payload["job_type"], "state": record.get("state"),
        "formula": (record.get("molecule_preview") or {}).get("formula"),
        "n_atoms": len(atoms["numbers"]), "charge": atoms.get("charge", 0),
        "multiplicity": atoms.get("multiplicity", 1),
        "level_of_theory": result.get("level_of_theory") or level.get("method", "") + (
            f"/{solvation['model'].upper()}({solvation['solvent']})" if solvation else ""),
        "energy_hartree": result.get("energy_hartree"),
        "homo_lumo_gap_ev": result.get("homo_lumo_gap_ev"),
        "dipole_debye": None if dipole is None else math.sqrt(sum(c * c for c in dipole))
        * DEBYE_PER_ATOMIC_UNIT,
        "dipole_x_au": None if dipole is None else dipole[0],
        "dipole_y_au": None if dipole is None else dipole[1],
        "dipole_z_au": None if dipole is None else dipole[2],
        "n_steps": result.get("n_steps"), "converged": result.get("converged"),
        "gibbs_energy_hartree": result.get("gibbs_energy_hartree"),
        "n_imaginary": result.get("n_imaginary"), "engine": result.get("engine"),
        "wall_time_seconds": result.get("wall_time_seconds"),
        "core_seconds": result.get("core_seconds"), "error": record.get("error"),
        "created_at": record.get("created_at"), "started_at": record.get("started_at"),
        "finished_at": record.get("finished_at"),
    }


def to_dataframe(jobs: Iterable[Job | Mapping[str, Any]], *, client: Any = None) -> Any:
    """A pandas DataFrame, one row per job (see the module documentation for the columns)."""
    pd = _pandas()
    frame = pd.DataFrame([row(j) for j in _records(jobs, client)], columns=COLUMNS)
    for column in ("created_at", "started_at", "finished_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    return frame


def export(jobs: Iterable[Job | Mapping[str, Any]], path: str | os.PathLike[str], *,
           client: Any = None) -> Path:
    """Write the jobs to ``path`` in the format its extension names; returns the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path.name}: unknown extension {suffix or '(none)'!r}; supported: "
                         f"{', '.join(FORMATS)}")
    records = _records(jobs, client)
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif suffix in (".csv", ".parquet"):
        table = to_dataframe(records)
        table.to_csv(path, index=False) if suffix == ".csv" else table.to_parquet(path)
    else:
        _write_structures(path, suffix, [r for r in records if r.get("result")])
    return path


def _write_structures(path: Path, suffix: str, records: list[dict[str, Any]]) -> None:
    if suffix == ".extxyz":
        results.write_extxyz(records, path)
        return
    if suffix == ".xyz":
        text = "".join(results.final_atoms(r).to_xyz(
            f"{r.get('name') or r.get('job_id')} energy_hartree="
            f"{r['result']['energy_hartree']:.10f}") for r in records)
        path.write_text(text)
        return
    from ase.db import connect
    from ase.db.core import reserved_keys

    if path.exists():
        path.unlink()  # a new database, as the other formats write a new file
    with connect(str(path)) as db:
        for r in records:
            values = {k: v for k, v in row(r).items()
                      if isinstance(v, int | float | str | bool) and k not in reserved_keys}
            db.write(results.to_ase(r), key_value_pairs=values)


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError('to_dataframe and .csv/.parquet exports need pandas: pip install '
                          '"atomiverse[tables]"') from None
    return pandas


__all__ = ["COLUMNS", "FORMATS", "export", "row", "to_dataframe"]
