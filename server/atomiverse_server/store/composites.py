"""Composite jobs (chains, ...) and their children: the queries the workflow pass needs."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from atomiverse_core import jobtypes
from atomiverse_core.jobtypes.spec import Child
from sqlalchemy.engine import Connection

from ..db import is_postgres, jobs
from ._time import now

ACTIVE = ("pending", "running")
_MAX_PARENTS_PER_PASS = 200


def composite_names() -> list[str]:
    return [t.name for t in jobtypes.all_types() if t.is_composite]


def ready_parents(conn: Connection, exclude: Collection[str] = ()) -> list[str]:
    """Running composite jobs none of whose children is pending or running: each waits for
    its ``advance`` (just submitted, a step finished, or a restart came between). Those in
    ``exclude`` are left out."""
    child = jobs.alias("child")
    busy = sa.exists().where(child.c.parent_id == jobs.c.id, child.c.state.in_(ACTIVE))
    q = (sa.select(jobs.c.id)
         .where(jobs.c.job_type.in_(composite_names()), jobs.c.state == "running", ~busy)
         .order_by(jobs.c.seq).limit(_MAX_PARENTS_PER_PASS))
    if exclude:
        q = q.where(jobs.c.id.not_in(list(exclude)))
    return list(conn.execute(q).scalars())


def lock_parent(conn: Connection, parent_id: str) -> Any:
    """The parent's row if it still waits for its ``advance``, locked against another server
    process doing the same (PostgreSQL; SQLite's write transactions are one at a time)."""
    q = sa.select(jobs.c.id, jobs.c.workspace_id, jobs.c.job_type, jobs.c.payload,
                  jobs.c.compute_target, jobs.c.state).where(jobs.c.id == parent_id)
    if is_postgres(conn.engine):
        q = q.with_for_update()
    row = conn.execute(q).first()
    if row is None or row.state != "running":
        return None
    busy = conn.execute(sa.select(jobs.c.id).where(jobs.c.parent_id == parent_id,
                                                   jobs.c.state.in_(ACTIVE)).limit(1)).first()
    return None if busy else row


def children(conn: Connection, parent_id: str) -> list[Child]:
    rows = conn.execute(sa.select(jobs.c.id, jobs.c.step, jobs.c.job_type, jobs.c.state,
                                  jobs.c.payload, jobs.c.result, jobs.c.error,
                                  jobs.c.error_type)
                        .where(jobs.c.parent_id == parent_id).order_by(jobs.c.step, jobs.c.seq))
    return [Child(r.id, r.step or 0, r.job_type, r.state, r.payload, r.result, r.error,
                  r.error_type) for r in rows]


def child_summaries(conn: Connection, *, workspace_id: str,
                    parent_id: str) -> list[dict[str, Any]]:
    """What the parent's page lists: each child's id, step, type, state and energy."""
    rows = conn.execute(sa.select(jobs.c.id, jobs.c.step, jobs.c.job_type, jobs.c.state,
                                  jobs.c.name, jobs.c.result, jobs.c.error)
                        .where(jobs.c.workspace_id == workspace_id,
                               jobs.c.parent_id == parent_id)
                        .order_by(jobs.c.step, jobs.c.seq))
    return [{"job_id": r.id, "step": (r.step or 0) + 1, "job_type": r.job_type,
             "state": r.state, "name": r.name, "error": r.error,
             "energy_hartree": (r.result or {}).get("energy_hartree"),
             "core_seconds": (r.result or {}).get("core_seconds")} for r in rows]


def set_payload(conn: Connection, parent_id: str, payload: dict[str, Any]) -> None:
    """The composite's input with its target's engine-dependent defaults settled."""
    conn.execute(jobs.update().where(jobs.c.id == parent_id).values(payload=payload))


def finish(conn: Connection, parent_id: str, result: dict[str, Any]) -> None:
    conn.execute(jobs.update().where(jobs.c.id == parent_id, jobs.c.state == "running")
                 .values(state="done", result=result, finished_at=now(), error=None,
                         error_type=None))


def fail(conn: Connection, parent_id: str, error: str, error_type: str) -> None:
    conn.execute(jobs.update().where(jobs.c.id == parent_id, jobs.c.state == "running")
                 .values(state="failed", finished_at=now(), error=error, error_type=error_type))


def active_children(conn: Connection, parent_id: str) -> list[str]:
    return list(conn.execute(sa.select(jobs.c.id).where(
        jobs.c.parent_id == parent_id, jobs.c.state.in_(ACTIVE))).scalars())


def all_children(conn: Connection, parent_id: str) -> list[str]:
    return list(conn.execute(sa.select(jobs.c.id).where(jobs.c.parent_id == parent_id))
                .scalars())
