"""The result cache key.

Two jobs share a key, and so a result, when all of these are equal:

- job type, level of theory (method and any solvation), and the job type's cache options
  (``JobType.cache_options``: by default every job option except bookkeeping, ``name``,
  ``use_cache``, ``walltime_seconds``);
- the engine that will run it *and its version*: xtb-python and tblite differ by up to
  1e-4 Hartree on large molecules, so one engine's result never answers for the other;
- charge and multiplicity;
- the atoms: the same elements in the same order, and positions equal to 1e-5 Angstrom.

Normalisation: positions are rounded to 5 decimals (1e-5 Angstrom) and ``-0.0`` becomes
``0.0``; no reordering, recentring or rotation is applied, so a translated or permuted copy
of a molecule is a different key (its gradient and charges come back in its own frame and
order). The key is the SHA-256 of the canonical JSON of those fields.
"""

from __future__ import annotations

import hashlib

import numpy as np
from atomiverse_core import jobtypes, jsonio
from atomiverse_core.jobs import Job

POSITION_DECIMALS = 5


def cache_key(job: Job, *, engine: str, engine_version: str) -> str:
    atoms = job.atoms
    positions = (np.round(np.asarray(atoms.positions, dtype=float), POSITION_DECIMALS)
                 + 0.0).tolist()  # + 0.0 turns -0.0 into 0.0
    body = {
        "job_type": job.job_type,
        "options": jobtypes.of(job).cache_options(job),
        "engine": engine,
        "engine_version": engine_version,
        "charge": atoms.charge,
        "multiplicity": atoms.multiplicity,
        "numbers": atoms.numbers,
        "positions": positions,
    }
    return hashlib.sha256(jsonio.dumps(body, sort_keys=True)).hexdigest()
