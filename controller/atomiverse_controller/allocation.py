"""When the batch scheduler's allocation this controller runs in ends. A controller a
scheduler started (``atomiverse scale``) stops claiming a margin before then and finishes or
hands back what it holds, so nothing is left leased when the scheduler kills the allocation.

SLURM gives the end time in ``SLURM_JOB_END_TIME`` (Unix seconds, Slurm 23.02 and later);
older versions only through ``squeue -o %e`` (local time, ISO 8601). Outside an allocation, or
when the scheduler sets no end, there is none."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from datetime import datetime

log = logging.getLogger("atomiverse.controller")
SQUEUE_TIMEOUT_SECONDS = 30


def allocation_end(environ: dict[str, str] | None = None) -> float | None:
    """Unix time the current allocation ends, or None if not in one or it has no end."""
    env = os.environ if environ is None else environ
    if env.get("SLURM_JOB_END_TIME", "").isdigit():
        return float(env["SLURM_JOB_END_TIME"])
    job_id = env.get("SLURM_JOB_ID")
    if not job_id:
        return None
    return _end_from_squeue(job_id)


def _end_from_squeue(job_id: str) -> float | None:
    squeue = shutil.which("squeue")
    if squeue is None:
        log.warning("event=allocation_end_unknown job=%s reason=no_squeue", job_id)
        return None
    try:
        out = subprocess.run([squeue, "-h", "-j", job_id, "-o", "%e"], check=False,
                             capture_output=True, text=True, timeout=SQUEUE_TIMEOUT_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("event=allocation_end_unknown job=%s reason=%s", job_id, e)
        return None
    return parse_squeue_time(out.stdout.strip())


def parse_squeue_time(text: str) -> float | None:
    """``2026-12-04T10:00:00`` (the local time zone, as squeue prints it) in Unix seconds;
    None for NONE, Unknown or anything else."""
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def drain_time(end: float | None, margin_seconds: float | None) -> float | None:
    """When to stop claiming: ``margin_seconds`` before the allocation's end."""
    if end is None or margin_seconds is None:
        return None
    return end - margin_seconds
