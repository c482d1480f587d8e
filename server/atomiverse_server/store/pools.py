"""Controller pools: the controllers a batch scheduler starts for one target (``atomiverse
scale``). Jobs are routed to the pool's own controller (its name is the compute target); its
members claim them, each never more at once than its free slots, so jobs are never held by an
allocation that cannot run them yet. The pool's controller token reads the pool's state, which
is all the scaler needs: pending work and the capacity that is running."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..db import controllers, jobs
from ._time import iso, now


def free_slots(conn: Connection, member: Any) -> int:
    """The member's slots less the jobs it holds now (claimed and not yet reported)."""
    held = conn.execute(sa.select(sa.func.count()).select_from(jobs).where(
        jobs.c.state == "running", jobs.c.claimed_by == member.id)).scalar_one()
    return max(member.slots - held, 0)


# Members listed at most: far more than any site's nodes, a bound on the answer all the same.
MAX_MEMBERS_LISTED = 10_000


def pool_state(conn: Connection, pool: Any, *, seen_within_seconds: float) -> dict[str, Any]:
    """Pending jobs routed to the pool, and each member not gone (online or draining, and
    heard from within ``seen_within_seconds``) with the jobs it holds. Members that
    deregistered (one per allocation, over months) or died unheard (their leases have run
    out) are left out: they hold nothing and run nothing."""
    pending = conn.execute(sa.select(sa.func.count()).select_from(jobs).where(
        jobs.c.state == "pending", jobs.c.controller_id == pool.id,
        jobs.c.cached_from.is_(None))).scalar_one()
    held = (sa.select(jobs.c.claimed_by, sa.func.count().label("n"))
            .where(jobs.c.state == "running").group_by(jobs.c.claimed_by).subquery())
    rows = conn.execute(
        sa.select(controllers.c.name, controllers.c.status, controllers.c.slots,
                  controllers.c.hostname, controllers.c.last_seen_at,
                  sa.func.coalesce(held.c.n, 0).label("running"))
        .outerjoin(held, held.c.claimed_by == controllers.c.id)
        .where(controllers.c.pool_id == pool.id, controllers.c.status != "offline",
               controllers.c.last_seen_at >= now() - seen_within_seconds)
        .order_by(controllers.c.name).limit(MAX_MEMBERS_LISTED)).all()
    t = now()  # the server's clock only: a scaler with a skewed clock still reads liveness
    return {"name": pool.name, "pending": pending,
            "members": [{"name": r.name, "status": r.status, "slots": r.slots,
                         "running": r.running, "hostname": r.hostname,
                         "last_seen_at": iso(r.last_seen_at),
                         "seen_seconds_ago": max(t - r.last_seen_at, 0.0)} for r in rows]}
