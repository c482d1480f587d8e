"""The SQL of a claim: which jobs a controller claims, and the statement that leases them,
built once per kind of controller (a pool's member or not, serving the managed pool or not;
the database). Constructing a Core statement cost more than SQLAlchemy's cached run of it,
on every claim. ``claimcheck`` asks the same question without a write transaction."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..db import CLAIM_ORDER, jobs, state_is

_claim_queries: dict[tuple[bool, bool, bool], sa.Select] = {}


def claimable(controller_id: Any, pool_id: Any, serves_managed: bool) -> Any:
    """The jobs a controller claims: pending, not following a cached leader, routed to it,
    to its pool (``pool_id``, if a member) or to the managed pool (if it serves it). The ids
    are values or bind parameters."""
    routed = jobs.c.controller_id == controller_id
    if pool_id is not None:
        routed = jobs.c.controller_id.in_([controller_id, pool_id])
    if serves_managed:
        routed = sa.or_(routed, sa.and_(jobs.c.controller_id.is_(None),
                                        jobs.c.compute_target == "managed"))
    return sa.and_(state_is("pending"), routed, jobs.c.cached_from.is_(None))


def claim_query(in_pool: bool, serves_managed: bool, postgres: bool) -> sa.Select:
    """The pending jobs a controller claims, oldest batch first, each batch's costliest jobs
    first (``db.CLAIM_ORDER``). Parameters: ``ctl`` (its id), ``pool`` (its pool's id, for a
    member) and ``max_jobs``."""
    shape = (in_pool, serves_managed, postgres)
    q = _claim_queries.get(shape)
    if q is None:
        if postgres or not (in_pool or serves_managed):
            q = (sa.select(*_CLAIMED)
                 .where(claimable(sa.bindparam("ctl"), sa.bindparam("pool") if in_pool else None,
                                  serves_managed))
                 .order_by(*CLAIM_ORDER).limit(sa.bindparam("max_jobs", type_=sa.Integer)))
            if postgres:
                q = q.with_for_update(skip_locked=True)
        else:
            q = _claim_by_route(in_pool, serves_managed)
        _claim_queries[shape] = q
    return q


# The payload goes out as stored (JSON text spliced into the answer), never parsed.
_CLAIMED = (jobs.c.id, sa.cast(jobs.c.payload, sa.Text).label("payload"), jobs.c.attempts,
            jobs.c.walltime_seconds)


def _claim_by_route(in_pool: bool, serves_managed: bool) -> sa.Select:
    """SQLite, for a controller reached by more than one route (its own id, its pool's, the
    managed pool): the first ``max_jobs`` of each route in claim order, each read in order
    from ``ix_jobs_claim``, then the first ``max_jobs`` of those. Asked with the routes
    joined by OR, SQLite (which keeps no statistics here) read every pending job of those
    routes and sorted them all, on every claim: a queue of 100,000 pending jobs cost each
    claim a sort of 100,000 rows."""
    firsts = [sa.select(*_CLAIMED, *CLAIM_ORDER)
              .where(state_is("pending"), route, jobs.c.cached_from.is_(None))
              .order_by(*CLAIM_ORDER).limit(sa.bindparam("max_jobs", type_=sa.Integer)).subquery()
              for route in _routes(in_pool, serves_managed)]
    each = sa.union_all(*(sa.select(first) for first in firsts)).subquery()
    return (sa.select(each.c.id, each.c.payload, each.c.attempts, each.c.walltime_seconds)
            .order_by(*(each.c[c.name] for c in CLAIM_ORDER))
            .limit(sa.bindparam("max_jobs", type_=sa.Integer)))


def first_claimable(select: sa.Select, in_pool: bool, serves_managed: bool) -> sa.Select:
    """``select`` (of ``jobs`` columns) narrowed to at most one job the controller would
    claim, each of its routes looked up in ``ix_jobs_claim`` on its own. Asked with the
    routes joined by OR, SQLite walked the pending jobs by state until one matched: an idle
    managed-pool controller's every poll read a whole backlog queued for other controllers.
    Parameters: ``ctl``, and ``pool`` for a member."""
    firsts = [select.where(state_is("pending"), route, jobs.c.cached_from.is_(None)).limit(1)
              for route in _routes(in_pool, serves_managed)]
    if len(firsts) == 1:
        return firsts[0]
    return sa.select(sa.union_all(*(sa.select(first.subquery()) for first in firsts))
                     .subquery()).limit(1)


def _routes(in_pool: bool, serves_managed: bool) -> list[Any]:
    """How jobs reach a controller: its own id, its pool's, the managed pool."""
    routes = [jobs.c.controller_id == sa.bindparam("ctl")]
    if in_pool:
        routes.append(jobs.c.controller_id == sa.bindparam("pool"))
    if serves_managed:
        routes.append(sa.and_(jobs.c.controller_id.is_(None), jobs.c.compute_target == "managed"))
    return routes
