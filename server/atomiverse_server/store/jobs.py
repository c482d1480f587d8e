"""Jobs as users see them: insert, read, list (keyset), rename, cancel, delete."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from atomiverse_core import jsonio
from sqlalchemy.engine import Connection, Row

from ..db import controllers, jobs, state_filter, workspaces
from ._time import iso, now

# InvalidCursor: the routes catch it as job_store.InvalidCursor.
from .cursors import (  # noqa: F401
    InvalidCursor,
    cursor_key,
    decode_cursor,
    decode_with,
    encode_cursor,
    encode_with,
)
from .fastquery import Unavailable  # noqa: F401  (fastreads catches it)
from .summaries import lasting_of, summary_of

TERMINAL = ("done", "failed", "cancelled")
ACTIVE = ("pending", "running")
_IN_CHUNK = 500


def _these_jobs_of(workspace_id: str, ids: list[str]) -> tuple[Any, Any]:
    """WHERE terms for these ids, among the workspace's jobs. The workspace is compared as an
    expression (``workspace_id || ''``), which no index serves: given ``workspace_id = ?``,
    SQLite walked the workspace's index and all its jobs (5 ms for 3000 jobs, growing with
    the workspace) instead of looking the ids up by the unique index. The rows are the same."""
    return (jobs.c.workspace_id.concat("") == workspace_id, jobs.c.id.in_(ids))


SUMMARY_COLUMNS = (jobs.c.seq, jobs.c.id, jobs.c.name, jobs.c.state, jobs.c.job_type,
                   jobs.c.created_at, jobs.c.billed_core_seconds, jobs.c.preview)


def insert_jobs(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        conn.execute(jobs.insert(), list(rows))


def summary(row: Row[Any]) -> dict[str, Any]:
    return summary_of(row, lasting_of(row))


JOB_COLUMNS = (*jobs.c, controllers.c.name.label("controller_name"))


# A job and the controller that has (or had, or is routed) it.
_JOB_FROM = jobs.outerjoin(controllers, controllers.c.id == sa.func.coalesce(
    jobs.c.claimed_by, jobs.c.controller_id))


def one_job(q: sa.Select) -> sa.Select:
    return q.select_from(_JOB_FROM).where(jobs.c.workspace_id == sa.bindparam("ws"),
                                          jobs.c.id == sa.bindparam("id"))


# Built once: constructing a Core statement costs more than SQLAlchemy's cached run of it.
_GET_JOB = one_job(sa.select(*JOB_COLUMNS))


def get_job(conn: Connection, *, workspace_id: str, job_id: str) -> dict[str, Any] | None:
    row = conn.execute(_GET_JOB, {"ws": workspace_id, "id": job_id}).first()
    return None if row is None else public_record(row)


# What a row just inserted holds in the columns its insert did not name.
_INSERT_DEFAULTS = {c.name: None for c in jobs.c} | {"attempt_errors": None}


def stored_record(row: dict[str, Any]) -> dict[str, Any]:
    """The record :func:`get_job` reads for a job just inserted from ``row`` (every column
    its insert named, and none claimed yet), without reading it: the controller's name is
    the compute target the row was routed to (the submission's router took both from the
    controller's row), none for the managed pool."""
    values = _INSERT_DEFAULTS | row
    assert values["claimed_by"] is None, "only a row as inserted"
    controller_name = values["compute_target"] if values["controller_id"] else None
    return public_record(_Stored(values, controller_name))


class _Stored:
    """A stored row's values by attribute, as a result row gives them to :func:`_public`."""

    def __init__(self, values: dict[str, Any], controller_name: str | None) -> None:
        self.__dict__.update(values)
        self.controller_name = controller_name


def get_jobs(conn: Connection, *, workspace_id: str,
             job_ids: Iterable[str]) -> list[dict[str, Any]]:
    """:func:`get_job` for several jobs in a few queries; unknown ids are left out."""
    ids = list(job_ids)
    out: list[dict[str, Any]] = []
    for i in range(0, len(ids), _IN_CHUNK):
        rows = conn.execute(
            sa.select(*JOB_COLUMNS).select_from(_JOB_FROM)
            .where(*_these_jobs_of(workspace_id, ids[i:i + _IN_CHUNK])))
        out += [public_record(row) for row in rows]
    return out


def brief_jobs(conn: Connection, *, workspace_id: str,
               job_ids: Iterable[str]) -> list[dict[str, Any]]:
    """What a page showing jobs needs to update a row: state, version, billed core-seconds."""
    ids = list(job_ids)
    out: list[dict[str, Any]] = []
    for i in range(0, len(ids), _IN_CHUNK):
        rows = conn.execute(sa.select(jobs.c.id, jobs.c.state, jobs.c.attempts,
                                      jobs.c.billed_core_seconds).where(
            *_these_jobs_of(workspace_id, ids[i:i + _IN_CHUNK])))
        out += [{"job_id": r.id, "state": r.state, "version": version(r.state, r.attempts),
                 "billed_core_seconds": r.billed_core_seconds} for r in rows]
    return out


def version(state: str, attempts: int) -> str:
    """What a watcher compares: a job's state and how many times it was claimed, so a job
    that ran, lost its lease and runs again is a change although its state reads the same."""
    return f"{state}:{attempts}"


def job_versions(conn: Connection, *, workspace_id: str,
                 job_ids: Iterable[str]) -> dict[str, str]:
    """``{job_id: version}`` of each of these jobs that exists in the workspace."""
    ids = list(job_ids)
    out: dict[str, str] = {}
    for i in range(0, len(ids), _IN_CHUNK):
        rows = conn.execute(sa.select(jobs.c.id, jobs.c.state, jobs.c.attempts).where(
            *_these_jobs_of(workspace_id, ids[i:i + _IN_CHUNK])))
        out.update((row.id, version(row.state, row.attempts)) for row in rows)
    return out


def has_newer(conn: Connection, *, workspace_id: str, job_id: str) -> bool:
    """Whether the workspace has a job submitted after this one (True if it is gone); with
    ``job_id`` empty (none seen), whether it has any job."""
    if not job_id:
        return conn.execute(sa.select(jobs.c.seq).where(
            jobs.c.workspace_id == workspace_id).limit(1)).first() is not None
    seq = conn.execute(sa.select(jobs.c.seq).where(jobs.c.workspace_id == workspace_id,
                                                   jobs.c.id == job_id)).scalar()
    if seq is None:
        return True
    return conn.execute(sa.select(jobs.c.seq).where(
        jobs.c.workspace_id == workspace_id, jobs.c.seq > seq).limit(1)).first() is not None


def public_record(row: Row[Any]) -> dict[str, Any]:
    return summary(row) | {
        "compute_target": row.compute_target,
        "controller": row.controller_name,
        "started_at": iso(row.started_at),
        "finished_at": iso(row.finished_at),
        "attempts": row.attempts,
        "error": row.error,
        "error_type": row.error_type,
        "attempt_errors": row.attempt_errors or [],
        "cached_from": row.cached_from,
        "parent_id": row.parent_id,
        "job": row.payload,
        "result": row.result,
        "version": version(row.state, row.attempts),
    }


def list_jobs(conn: Connection, *, workspace_id: str, limit: int, cursor: str | None = None,
              state: str | None = None, name_contains: str | None = None) -> dict[str, Any]:
    """Newest first. The cursor is the last seen ``seq``: a job inserted while someone pages
    has a higher seq and so can neither shift nor duplicate later pages."""
    before = None if cursor is None else decode_cursor(conn, workspace_id=workspace_id,
                                                       cursor=cursor)
    flags, params = page_params(workspace_id, limit, before, state, name_contains)
    rows = conn.execute(page_query(sa.select(*SUMMARY_COLUMNS), *flags), params).all()
    return page(rows, limit, lambda seq: encode_cursor(conn, workspace_id=workspace_id,
                                                        seq=seq))


def page_params(workspace_id: str, limit: int, before: int | None, state: str | None,
                 name_contains: str | None) -> tuple[tuple[bool, bool, bool], dict[str, Any]]:
    params: dict[str, Any] = {"ws": workspace_id, "lim": limit + 1}
    if before is not None:
        params["before"] = before
    if state is not None:
        params["state"] = state
    if name_contains:
        escaped = name_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params["pattern"] = f"%{escaped}%"
    return ("before" in params, "state" in params, "pattern" in params), params


def page_query(q: sa.Select, after: bool, by_state: bool, by_name: bool) -> sa.Select:
    q = q.where(jobs.c.workspace_id == sa.bindparam("ws"))
    if after:
        q = q.where(jobs.c.seq < sa.bindparam("before"))
    if by_state:
        q = q.where(jobs.c.state == sa.bindparam("state"))
    if by_name:
        q = q.where(jobs.c.name.ilike(sa.bindparam("pattern"), escape="\\"))
    return q.order_by(jobs.c.seq.desc()).limit(sa.bindparam("lim", type_=sa.Integer))


def page(rows: Sequence[Any], limit: int, cursor_for: Callable[[int], str],
          summaries: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``summaries``: the page's records if the caller has made them from ``rows``."""
    has_more = len(rows) > limit
    rows = rows[:limit]
    return {
        "jobs": [summary(r) for r in rows] if summaries is None else summaries,
        "has_more": has_more,
        "next_cursor": cursor_for(rows[-1].seq) if has_more else None,
    }


def pending_signature(conn: Connection) -> tuple[int, int | None]:
    """How many jobs are pending and the newest of them: changes whenever work is queued,
    claimed or taken back, by any server process."""
    row = conn.execute(sa.select(sa.func.count(), sa.func.max(jobs.c.seq))
                       .where(jobs.c.state == "pending")).one()
    return int(row[0]), row[1]


def count_by_state(conn: Connection, *, workspace_id: str) -> dict[str, int]:
    rows = conn.execute(sa.select(jobs.c.state, sa.func.count())
                        .where(jobs.c.workspace_id == workspace_id)
                        .group_by(jobs.c.state)).all()
    counts = {s: 0 for s in ("pending", "running", *TERMINAL)}
    counts.update({r[0]: r[1] for r in rows})
    return counts


def job_states(conn: Connection, *, workspace_id: str, job_ids: Iterable[str],
               include_result: bool = False) -> list[dict[str, Any]]:
    """``{job_id, state}`` of each of these jobs that exists in the workspace. With
    ``include_result``, finished ones also carry ``result``, ``error``, ``cached_from`` and
    ``billed_core_seconds``, read in the same query. A result comes as the stored JSON text,
    wrapped to be spliced into the response by :func:`atomiverse_core.jsonio.dumps`: the server
    passes results through, it does not parse and re-encode them."""
    ids = list(job_ids)
    columns = [jobs.c.id, jobs.c.state]
    if include_result:
        columns += [sa.cast(jobs.c.result, sa.Text).label("result"), jobs.c.error,
                    jobs.c.cached_from, jobs.c.billed_core_seconds]
    out: list[dict[str, Any]] = []
    for i in range(0, len(ids), _IN_CHUNK):
        rows = conn.execute(sa.select(*columns).where(
            *_these_jobs_of(workspace_id, ids[i:i + _IN_CHUNK])))
        out += [_state_with_result(row) if include_result and row.state in TERMINAL
                else {"job_id": row.id, "state": row.state} for row in rows]
    return out


def _state_with_result(row: Row) -> dict[str, Any]:
    return {"job_id": row.id, "state": row.state,
            "result": None if row.result is None else jsonio.raw(row.result),
            "error": row.error, "cached_from": row.cached_from,
            "billed_core_seconds": row.billed_core_seconds}


def rename_job(conn: Connection, *, workspace_id: str, job_id: str, name: str) -> bool:
    res = conn.execute(jobs.update().where(jobs.c.workspace_id == workspace_id,
                                           jobs.c.id == job_id).values(name=name))
    return res.rowcount == 1


def cancel_job(conn: Connection, *, workspace_id: str, job_id: str) -> str | None:
    """Cancel a pending or running job; a terminal one stays as it is. Returns the state
    before, or None if there is no such job. A running job keeps ``claimed_by`` so that its
    controller learns of the cancellation on its next heartbeat."""
    row = conn.execute(sa.select(jobs.c.state).where(jobs.c.workspace_id == workspace_id,
                                                     jobs.c.id == job_id)).first()
    if row is None:
        return None
    if row.state in ACTIVE:
        conn.execute(jobs.update()
                     .where(jobs.c.id == job_id, jobs.c.state.in_(ACTIVE))
                     .values(state="cancelled", finished_at=now(), lease_id=None,
                             lease_expires_at=None, error_type="cancelled",
                             error="cancelled by the user"))
        settle_followers(conn, leader_id=job_id, result=None, t=now())
        for child in _active_children(conn, job_id):  # a chain's running step, ...
            cancel_job(conn, workspace_id=workspace_id, job_id=child)
    return row.state


def _active_children(conn: Connection, job_id: str) -> list[str]:
    return list(conn.execute(sa.select(jobs.c.id).where(jobs.c.parent_id == job_id,
                                                        jobs.c.state.in_(ACTIVE))).scalars())


def delete_job(conn: Connection, *, workspace_id: str, job_id: str) -> str | None:
    """Delete a terminal job. Returns its state (unchanged if not terminal), None if absent."""
    row = conn.execute(sa.select(jobs.c.state).where(jobs.c.workspace_id == workspace_id,
                                                     jobs.c.id == job_id)).first()
    if row is None:
        return None
    if row.state in TERMINAL:
        conn.execute(jobs.delete().where(jobs.c.id == job_id, jobs.c.state.in_(TERMINAL)))
        # A composite's children go with it (they are terminal once it is).
        conn.execute(jobs.delete().where(jobs.c.parent_id == job_id,
                                         jobs.c.state.in_(TERMINAL)))
    return row.state


_OUTSTANDING = (sa.select(jobs.c.controller_id, sa.func.count())
                .where(jobs.c.controller_id.in_(sa.bindparam("ids", expanding=True)),
                       jobs.c.state.in_(ACTIVE), jobs.c.cached_from.is_(None))
                .group_by(jobs.c.controller_id))  # built once, as _GET_JOB


def outstanding_by_controller(conn: Connection, *, controller_ids: Sequence[str]) -> dict[str, int]:
    if not controller_ids:
        return {}
    rows = conn.execute(_OUTSTANDING, {"ids": list(controller_ids)}).all()
    return {r[0]: r[1] for r in rows}


def workspace_balance(conn: Connection, *, workspace_id: str) -> float:
    return conn.execute(sa.select(workspaces.c.balance)
                        .where(workspaces.c.id == workspace_id)).scalar_one()


def settle_followers(conn: Connection, *, leader_id: str, result: dict[str, Any] | None,
                     t: float) -> int:
    """Identical jobs that waited for this one: done with its result, or, if it did not
    finish well, released to compute for themselves."""
    waiting = (jobs.c.cached_from == leader_id, state_filter("pending"))
    if result is not None:
        res = conn.execute(jobs.update().where(*waiting).values(
            state="done", result=result, started_at=t, finished_at=t, billed_core_seconds=0.0))
    else:
        res = conn.execute(jobs.update().where(*waiting).values(cached_from=None))
    return res.rowcount
