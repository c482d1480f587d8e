"""Controllers and the job lifecycle they drive: claim with a lease, heartbeat, complete,
and the sweep that takes back leases nobody renewed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from atomiverse_core import jsonio
from sqlalchemy.engine import Connection

from .. import security
from ..db import controllers, is_postgres, jobs, state_filter, state_is, workspaces
from ..result_check import result_problem
from . import bulk, pools
from . import jobs as job_store
from ._time import iso, now
from .claimsql import claim_query

# Failures that say nothing about the job itself: the attempt is worth repeating.
RETRYABLE_ERROR_TYPES = frozenset({"lost", "resource"})


@dataclass(frozen=True)
class Controller:
    id: str
    workspace_id: str
    name: str
    slots: int
    cores_per_job: int
    capacity: int
    engines: dict[str, str]
    serves_managed: bool
    status: str
    pool_id: str | None = None  # a pool member also claims the pool's jobs


def _controller(row: Any) -> Controller:
    return Controller(row.id, row.workspace_id, row.name, row.slots, row.cores_per_job,
                      row.capacity, row.engines, row.serves_managed, row.status, row.pool_id)


def register_controller(conn: Connection, *, workspace_id: str, name: str, slots: int,
                        cores_per_job: int, capacity: int, engines: dict[str, str],
                        hostname: str, serves_managed: bool,
                        pool_id: str | None = None) -> tuple[Controller, str]:
    """Register (or re-register) a controller by name; returns it and a fresh token."""
    token = security.new_controller_token()
    values = dict(token_hash=security.hash_secret(token), slots=slots,
                  cores_per_job=cores_per_job, capacity=capacity, engines=engines,
                  hostname=hostname, serves_managed=serves_managed, status="online",
                  last_seen_at=now(), registered_at=now(), pool_id=pool_id)
    existing = conn.execute(sa.select(controllers.c.id).where(
        controllers.c.workspace_id == workspace_id, controllers.c.name == name)).first()
    if existing:
        cid = existing.id
        conn.execute(controllers.update().where(controllers.c.id == cid).values(**values))
    else:
        cid = security.new_id()
        conn.execute(controllers.insert().values(id=cid, workspace_id=workspace_id, name=name,
                                                 **values))
    row = conn.execute(sa.select(controllers).where(controllers.c.id == cid)).one()
    return _controller(row), token


def refresh_controller(conn: Connection, *, controller_id: str, slots: int, cores_per_job: int,
                       capacity: int, engines: dict[str, str], hostname: str) -> Controller:
    """A controller coming back with its own token: same identity, new capabilities."""
    conn.execute(controllers.update().where(controllers.c.id == controller_id).values(
        slots=slots, cores_per_job=cores_per_job, capacity=capacity, engines=engines,
        hostname=hostname, status="online", last_seen_at=now(), registered_at=now()))
    return _controller(conn.execute(sa.select(controllers)
                                    .where(controllers.c.id == controller_id)).one())


def controller_for_token(conn: Connection, *, token: str) -> Controller | None:
    if not token.startswith(security.CONTROLLER_TOKEN_PREFIX):
        return None
    row = conn.execute(sa.select(controllers).where(
        controllers.c.token_hash == security.hash_secret(token))).first()
    if row is None or not security.secret_matches(token, row.token_hash):
        return None
    return _controller(row)


# Statements of the hot paths (every submission, claim and report), built once: constructing
# a Core statement costs more than SQLAlchemy's cached run of it.
_BY_NAME = sa.select(controllers).where(controllers.c.workspace_id == sa.bindparam("ws"),
                                        controllers.c.name == sa.bindparam("name"))
_SEEN = controllers.update().where(controllers.c.id == sa.bindparam("ctl")) \
    .values(last_seen_at=sa.bindparam("seen_at"))
# A claim says its controller is alive. Written at most once a second per controller (by
# this process): what reads it (offline controllers, a pool's members, metrics) works in
# heartbeats of many seconds, and the write was one statement in ten of a calculation.
SEEN_WRITE_SECONDS = 1.0
_seen_written: dict[str, float] = {}


def controller_by_name(conn: Connection, *, workspace_id: str, name: str) -> Controller | None:
    row = conn.execute(_BY_NAME, {"ws": workspace_id, "name": name}).first()
    return _controller(row) if row else None


@dataclass(frozen=True)
class ManagedPool:
    engines: dict[str, str]
    cores_per_job: int


def managed_pool(conn: Connection) -> ManagedPool:
    """What the managed pool can run: the union of its online controllers' engines (the
    most recently seen controller's default first) and their largest cores per job."""
    rows = conn.execute(sa.select(controllers.c.engines, controllers.c.cores_per_job)
                        .where(controllers.c.serves_managed.is_(True),
                               controllers.c.status == "online")
                        .order_by(controllers.c.last_seen_at.desc())).all()
    engines: dict[str, str] = {}
    for r in rows:
        for name, version in r.engines.items():
            engines.setdefault(name, version)
    return ManagedPool(engines, max((r.cores_per_job for r in rows), default=1))


def set_status(conn: Connection, *, controller_id: str, status: str) -> None:
    conn.execute(controllers.update().where(controllers.c.id == controller_id)
                 .values(status=status, last_seen_at=now()))


def list_controllers(conn: Connection, *, workspace_id: str) -> list[dict[str, Any]]:
    running = (sa.select(jobs.c.claimed_by, sa.func.count().label("n"))
               .where(jobs.c.state == "running").group_by(jobs.c.claimed_by).subquery())
    rows = conn.execute(
        sa.select(controllers, sa.func.coalesce(running.c.n, 0).label("running"))
        .outerjoin(running, running.c.claimed_by == controllers.c.id)
        .where(controllers.c.workspace_id == workspace_id)
        .order_by(controllers.c.name)).all()
    return [{"name": r.name, "status": r.status, "slots": r.slots, "running": r.running,
             "free_slots": max(r.slots - r.running, 0), "capacity": r.capacity,
             "cores_per_job": r.cores_per_job, "engines": r.engines, "hostname": r.hostname,
             "serves_managed": r.serves_managed, "last_seen_at": iso(r.last_seen_at),
             "registered_at": iso(r.registered_at)}
            for r in rows]


# ----- claim ------------------------------------------------------------------------------
def claim_jobs(conn: Connection, *, controller: Controller, max_jobs: int,
               lease_seconds: float) -> list[dict[str, Any]]:
    """Lease up to ``max_jobs`` pending jobs routed to this controller (or to the managed
    pool, if it serves it): the oldest batch first, each batch's costliest jobs first
    (``db.CLAIM_ORDER``). A draining controller gets nothing new."""
    if controller.status == "draining":
        return []
    if controller.pool_id is not None:
        # A member holds no more than it runs: the pool's other members (and allocations
        # about to start) get the rest, instead of waiting behind this one's queue.
        max_jobs = min(max_jobs, pools.free_slots(conn, controller))
        if max_jobs <= 0:
            return []
    rows = conn.execute(claim_query(controller.pool_id is not None, controller.serves_managed,
                                    is_postgres(conn.engine)),
                        {"ctl": controller.id, "pool": controller.pool_id,
                         "max_jobs": max_jobs}).all()
    if not rows:
        return []
    t = now()
    # One statement for the lot: the rows are ours alone (locked on PostgreSQL, the write
    # lock on SQLite), so every one of them is still pending.
    claimed = [{"job_id": row.id, "lease_id": security.new_id(), "attempt": row.attempts + 1,
                "job": jsonio.raw(row.payload), "walltime_seconds": row.walltime_seconds}
               for row in rows]
    bulk.update_jobs(conn, [{"b_id": c["job_id"], "b_lease_id": c["lease_id"]}
                            for c in claimed],
                     match=("id",), state="pending",
                     values={"state": bulk.SameValue("running"),
                             "claimed_by": bulk.SameValue(controller.id), "lease_id": None,
                             "lease_expires_at": bulk.SameValue(t + lease_seconds),
                             "attempts": "attempts + 1", "started_at": bulk.SameValue(t)})
    _note_seen(conn, controller.id, t)
    return claimed


def _note_seen(conn: Connection, controller_id: str, t: float) -> None:
    if t - _seen_written.get(controller_id, -SEEN_WRITE_SECONDS) < SEEN_WRITE_SECONDS:
        return
    if len(_seen_written) > 10_000:  # one entry per controller: bounded all the same
        _seen_written.clear()
    conn.execute(_SEEN, {"ctl": controller_id, "seen_at": t})
    _seen_written[controller_id] = t


# ----- heartbeat --------------------------------------------------------------------------
def heartbeat(conn: Connection, *, controller: Controller, running: list[tuple[str, str]],
              lease_seconds: float) -> dict[str, list[str]]:
    """Extend the leases this controller still holds; tell it which of its jobs were
    cancelled and which it no longer holds."""
    t = now()
    conn.execute(controllers.update().where(controllers.c.id == controller.id)
                 .values(last_seen_at=t))
    status = conn.execute(sa.select(controllers.c.status)
                          .where(controllers.c.id == controller.id)).scalar_one()
    drain = status == "draining"
    if not running:
        return {"cancelled": [], "lost": [], "drain": drain}
    leases = dict(running)
    rows = conn.execute(sa.select(jobs.c.id, jobs.c.state, jobs.c.lease_id, jobs.c.claimed_by)
                        .where(jobs.c.id.in_(list(leases)))).all()
    held, cancelled = [], []
    for r in rows:
        if r.state == "running" and r.lease_id == leases[r.id] and r.claimed_by == controller.id:
            held.append(r.id)
        elif r.state == "cancelled" and r.claimed_by == controller.id:
            cancelled.append(r.id)
    if held:
        conn.execute(jobs.update().where(jobs.c.id.in_(held), state_filter("running"))
                     .values(lease_expires_at=t + lease_seconds))
    lost = [j for j in leases if j not in held and j not in cancelled]
    return {"cancelled": cancelled, "lost": lost, "drain": drain}


# Built once, as _BY_NAME: the jobs a report names that this controller holds, and which of
# those finished jobs others wait on (pending jobs following them).
_HELD = (sa.select(jobs.c.id, jobs.c.lease_id, jobs.c.workspace_id, jobs.c.compute_target,
                   jobs.c.attempts, jobs.c.attempt_errors, jobs.c.job_type, jobs.c.parent_id)
         .where(jobs.c.id.in_(sa.bindparam("ids", expanding=True)), state_filter("running"),
                jobs.c.claimed_by == sa.bindparam("ctl")))
_HELD_FOR_UPDATE = _HELD.with_for_update()
_LEADERS = (sa.select(jobs.c.cached_from).distinct()
            .where(jobs.c.cached_from.in_(sa.bindparam("ids", expanding=True)),
                   state_filter("pending")))


# ----- complete ---------------------------------------------------------------------------
def complete_jobs(conn: Connection, *, controller: Controller, reports: list[dict[str, Any]],
                  max_attempts: int, managed_rate_per_core_hour: float) -> dict[str, Any]:
    """Record results. Only the attempt that holds the lease is heard: a late or duplicate
    report changes nothing, so no job is ever recorded done twice."""
    accepted, rejected = [], []
    t = now()
    ids = list(dict.fromkeys(rep["job_id"] for rep in reports))
    # On PostgreSQL the rows are locked as they are read: a second report of the same attempt
    # (or the sweep) racing this one from another transaction waits, then no longer matches.
    q = _HELD_FOR_UPDATE if is_postgres(conn.engine) else _HELD
    current = {r.id: r for r in conn.execute(q, {"ids": ids, "ctl": controller.id})}
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    finished: dict[str, Any] = {}
    children_finished = False
    bill: dict[str, float] = {}
    for rep in reports:
        row = current.get(rep["job_id"])
        if row is None or row.lease_id != rep["lease_id"]:
            rejected.append(rep["job_id"])
            continue
        del current[rep["job_id"]]  # a duplicate within this request is not heard twice
        rep = _checked(rep, row.job_type)
        values = _completion_values(rep, row, t, max_attempts)
        groups.setdefault(tuple(sorted(values)), []).append(
            {**{f"b_{k}": v for k, v in values.items()},
             "b_id": rep["job_id"], "b_lease_id": rep["lease_id"]})
        if values.get("state") == "done" and row.compute_target == "managed":
            bill[row.workspace_id] = bill.get(row.workspace_id, 0.0) \
                + values["billed_core_seconds"]
        if values["state"] != "pending":
            finished[rep["job_id"]] = values.get("result") if values["state"] == "done" \
                else None
            children_finished = children_finished or row.parent_id is not None
        accepted.append(rep["job_id"])
    for cols, params in groups.items():
        bulk.update_jobs(conn, params, match=("id", "lease_id"),
                         # Every completion ends the lease: matched on it, then cleared.
                         values={**dict.fromkeys(c for c in cols if c != "lease_id"),
                                 "lease_id": "NULL"})
    for workspace_id, core_seconds in bill.items():
        _bill(conn, workspace_id=workspace_id, core_seconds=core_seconds,
              rate=managed_rate_per_core_hour)
    if finished:
        leaders = conn.execute(_LEADERS, {"ids": list(finished)}).scalars().all()
        for leader in leaders:
            job_store.settle_followers(conn, leader_id=leader, t=t, result=finished[leader])
    requeued = [r["b_id"] for params in groups.values() for r in params
                if r.get("b_state") == "pending"]
    return {"accepted": accepted, "rejected": rejected, "requeued": requeued,
            "finished": list(finished), "followers_settled": bool(finished and leaders),
            # A composite's child, or jobs that followed one, finished: its parent may move on.
            "children_finished": children_finished or bool(finished and leaders)}


def _checked(rep: dict[str, Any], job_type: str) -> dict[str, Any]:
    """A success whose result does not fit its job type's model becomes that job's failure,
    naming the field: the other reports of the request are stored as usual."""
    if not rep["ok"]:
        return rep
    problem = result_problem(job_type, rep["result"])
    if problem is None:
        return rep
    return {**rep, "ok": False, "result": None, "error_type": "internal",
            "error": f"The controller reported an invalid result: {problem}"}


def _completion_values(rep: dict[str, Any], row: Any, t: float,
                       max_attempts: int) -> dict[str, Any]:
    lease_cleared = dict(lease_id=None, lease_expires_at=None)
    if rep["ok"]:
        result = rep["result"] or {}
        core_seconds = float(result.get("core_seconds", 0.0))
        billed = core_seconds if row.compute_target == "managed" else 0.0
        return dict(state="done", result=result, finished_at=t, error=None, error_type=None,
                    billed_core_seconds=billed, **lease_cleared)
    history = [*(row.attempt_errors or []),
               {"attempt": row.attempts, "error_type": rep.get("error_type"),
                "error": rep.get("error"), "at": iso(t)}]
    if rep.get("error_type") in RETRYABLE_ERROR_TYPES and row.attempts < max_attempts:
        return dict(state="pending", claimed_by=None, attempt_errors=history, **lease_cleared)
    return dict(state="failed", finished_at=t, error=rep.get("error") or "failed",
                error_type=rep.get("error_type") or "internal", attempt_errors=history,
                **lease_cleared)


def _bill(conn: Connection, *, workspace_id: str, core_seconds: float, rate: float) -> None:
    cost = core_seconds / 3600.0 * rate
    if cost:
        conn.execute(workspaces.update().where(workspaces.c.id == workspace_id)
                     .values(balance=workspaces.c.balance - cost))


def release_jobs(conn: Connection, *, controller: Controller, job_ids: list[str]) -> int:
    """Hand jobs back to pending without counting the attempt (drain, shutdown)."""
    if not job_ids:
        return 0
    res = conn.execute(jobs.update()
                       .where(jobs.c.id.in_(job_ids), jobs.c.claimed_by == controller.id,
                              jobs.c.state == "running")
                       .values(state="pending", claimed_by=None, lease_id=None,
                               lease_expires_at=None, attempts=jobs.c.attempts - 1))
    return res.rowcount


# ----- sweep ------------------------------------------------------------------------------
def any_expired_lease(conn: Connection) -> bool:
    return conn.execute(sa.select(jobs.c.id).where(
        jobs.c.state == "running", jobs.c.lease_expires_at < now()).limit(1)).first() is not None


def earliest_lease_expiry(conn: Connection) -> float | None:
    """When the first lease held runs out (epoch seconds), None if no job runs: one look
    at ``ix_jobs_lease``."""
    return conn.execute(sa.select(sa.func.min(jobs.c.lease_expires_at))
                        .where(jobs.c.state == "running")).scalar()


def sweep_expired_leases(conn: Connection, *, max_attempts: int) -> int:
    """Jobs whose lease ran out go back to pending, or fail after ``max_attempts``."""
    t = now()
    q = (sa.select(jobs.c.id, jobs.c.attempts, jobs.c.attempt_errors, jobs.c.lease_id)
         .where(jobs.c.state == "running", jobs.c.lease_expires_at < t))
    if is_postgres(conn.engine):
        q = q.with_for_update(skip_locked=True)
    rows = conn.execute(q).all()
    _lose(conn, rows, t=t, max_attempts=max_attempts,
          why="the controller stopped renewing its lease (died or lost the network)")
    return len(rows)


def end_leases_not_held(conn: Connection, *, controller: Controller, holding: set[str],
                        max_attempts: int) -> int:
    """A controller process registering says which leases it holds (none, when it has just
    started): every other lease of that controller belonged to a process that is gone, so its
    job goes back to the queue now instead of when the lease would have run out."""
    t = now()
    q = (sa.select(jobs.c.id, jobs.c.attempts, jobs.c.attempt_errors, jobs.c.lease_id)
         .where(jobs.c.state == "running", jobs.c.claimed_by == controller.id))
    if is_postgres(conn.engine):
        q = q.with_for_update(skip_locked=True)
    rows = [r for r in conn.execute(q).all() if r.lease_id not in holding]
    _lose(conn, rows, t=t, max_attempts=max_attempts,
          why="the controller restarted: its new process registered without this lease")
    return len(rows)


def _lose(conn: Connection, rows: list[Any], *, t: float, max_attempts: int, why: str) -> None:
    """The attempts of ``rows`` are lost: back to pending, or failed after ``max_attempts``."""
    for r in rows:
        history = [*(r.attempt_errors or []),
                   {"attempt": r.attempts, "error_type": "lost", "at": iso(t), "error": why}]
        if r.attempts < max_attempts:
            values = dict(state="pending", claimed_by=None)
        else:
            values = dict(state="failed", finished_at=t, error_type="lost",
                          error=f"job lost {r.attempts} times (max attempts {max_attempts}); "
                                f"the last time: {why}")
        conn.execute(jobs.update().where(jobs.c.id == r.id, jobs.c.lease_id == r.lease_id)
                     .values(lease_id=None, lease_expires_at=None, attempt_errors=history,
                             **values))
        if values["state"] == "failed":
            job_store.settle_followers(conn, leader_id=r.id, result=None, t=t)
