"""The result cache's lookup: which job answers a submission whose cache key is known."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..db import jobs, state_is
from .jobs import ACTIVE

_IN_CHUNK = 500


def _cached_in(states: Any) -> sa.Select:
    """The jobs of the given keys in ``states``: one branch of the lookup, one index each
    (migration 0009). The states are written as literals: SQLite, and PostgreSQL in a
    prepared statement's generic plan, use a partial index only for a query that repeats its
    condition."""
    return (sa.select(jobs.c.seq, jobs.c.id, jobs.c.cache_key, jobs.c.state, jobs.c.result,
                      jobs.c.cached_from)
            .where(jobs.c.workspace_id == sa.bindparam("ws"),
                   jobs.c.cache_key.in_(sa.bindparam("keys", expanding=True)), states))


# Built once, as _OUTSTANDING: building it anew cost every submission (each ASE calculation)
# more than SQLAlchemy's cached run of it.
_CACHED = sa.union_all(_cached_in(state_is("done")),
                       _cached_in(sa.or_(*(state_is(s) for s in ACTIVE))))


def find_cached(conn: Connection, *, workspace_id: str,
                cache_keys: set[str]) -> dict[str, dict[str, Any]]:
    """For each key, a job to answer from: a done one (with its result), else the oldest
    one still pending or running that computes for itself (result None). Failed and
    cancelled jobs never answer."""
    found: dict[str, dict[str, Any]] = {}
    keys = list(cache_keys)
    for i in range(0, len(keys), _IN_CHUNK):
        rows = conn.execute(_CACHED, {"ws": workspace_id,
                                      "keys": keys[i:i + _IN_CHUNK]}).all()
        # Oldest first, sorted here: an ORDER BY seq would steer the planner off the
        # cache index onto the workspace listing index.
        for r in sorted(rows, key=lambda r: r.seq):
            best = found.get(r.cache_key)
            if r.state == "done" and (best is None or best["result"] is None):
                found[r.cache_key] = {"job_id": r.id, "result": r.result}
            elif r.state != "done" and r.cached_from is None and best is None:
                found[r.cache_key] = {"job_id": r.id, "result": None}
    return found
