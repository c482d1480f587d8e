"""A job's files, as the dashboard's download buttons fetch them: the structure as XYZ and the
record as QCSchema JSON (``atomiverse_core.qcschema_results``). Authenticated like the other
job routes (an API key, or the dashboard's session cookie); a job of another workspace is not
found."""

from __future__ import annotations

import re
from typing import Any

from atomiverse_core.qcschema_results import MAPPED_JOB_TYPES, record_as_qcschema
from fastapi import APIRouter, HTTPException, Response

from ..db import read_tx
from ..deps import CurrentWorkspace, EngineDep
from ..store import jobs as job_store
from .errors import USER

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], responses=USER)
_UNSAFE_IN_FILENAME = re.compile(r"[^A-Za-z0-9_.-]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _record(engine: Any, workspace_id: Any, job_id: str) -> dict[str, Any]:
    with read_tx(engine) as conn:
        record = job_store.get_job(conn, workspace_id=workspace_id, job_id=job_id)
    if record is None:
        raise HTTPException(404, f"Job {job_id[:64]} not found")
    return record


def _attachment(body: str | bytes, media_type: str, job_id: str, extension: str) -> Response:
    filename = _UNSAFE_IN_FILENAME.sub("_", job_id[:64]) + extension
    return Response(body, media_type=media_type, headers={
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"})


def xyz_text(record: dict[str, Any]) -> str:
    """The job's structure in Angstrom: the final geometry where the result has one (an
    optimisation, frequencies after optimising), else the input; the comment line names the
    job, the geometry and its energy."""
    from ase.data import chemical_symbols

    atoms = record["job"].get("atoms") or {}
    result = record.get("result") or {}
    final = result.get("final_positions_angstrom")
    positions = final if final else atoms.get("positions") or []
    numbers = atoms.get("numbers") or []
    comment = [_CONTROL.sub(" ", record.get("name") or record["job_id"]),
               "final geometry" if final else "input geometry",
               f"job_id={record['job_id']}"]
    if result.get("energy_hartree") is not None:
        comment.insert(2, f"energy_hartree={result['energy_hartree']:.10f}")
    lines = [str(len(numbers)), "; ".join(comment)]
    lines += [f"{chemical_symbols[z]:<2} {x:16.10f} {y:16.10f} {z_:16.10f}"
              for z, (x, y, z_) in zip(numbers, positions, strict=True)]
    return "\n".join(lines) + "\n"


@router.get("/{job_id}/download.xyz", response_class=Response)
def download_xyz(job_id: str, workspace: CurrentWorkspace, engine: EngineDep) -> Response:
    """The job's structure as an XYZ file (Angstrom)."""
    record = _record(engine, workspace.id, job_id)
    return _attachment(xyz_text(record), "chemical/x-xyz", record["job_id"], ".xyz")


@router.get("/{job_id}/download.json", response_class=Response)
def download_qcschema(job_id: str, workspace: CurrentWorkspace, engine: EngineDep) -> Response:
    """The job's record as QCSchema JSON: an AtomicResult (an OptimizationResult for an
    optimisation, a FailedOperation for a failed or cancelled job)."""
    record = _record(engine, workspace.id, job_id)
    if record["job_type"] not in MAPPED_JOB_TYPES:
        raise HTTPException(422, f"job_type: a {record['job_type']} job has no QCSchema form "
                                 f"(those that do: {', '.join(sorted(MAPPED_JOB_TYPES))})")
    if record["state"] in ("pending", "running"):
        raise HTTPException(409, f"The job is {record['state']}: its record has no result yet")
    return _attachment(record_as_qcschema(record).json(), "application/json",
                       record["job_id"], ".json")
