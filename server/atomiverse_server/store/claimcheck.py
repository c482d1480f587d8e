"""Whether a controller may have jobs to claim, read without a write transaction.

A controller that is handed a job comes straight back with its next claim long-poll, and
most of those find nothing: the claim was a write transaction (on SQLite the database's one
writer) and a hop to a thread, only to park the poll. One SELECT of at most one row through
a statement compiled once (:class:`~.fastquery.FastQuery`) on the event loop says whether the
claim is worth making. The caller takes the pending signal's event before asking, so a job
committed after this read still wakes the poll."""

from __future__ import annotations

import weakref

from sqlalchemy.engine import Engine

from ..db import jobs
from .claimsql import first_claimable
from .controllers import Controller
from .fastquery import FastQuery, Unavailable


class ClaimCheck:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._queries: dict[tuple[bool, bool], FastQuery] = {}

    def may_claim(self, controller: Controller) -> bool:
        """False only if the database has no job this controller would claim now; True when
        it has, or when it cannot tell (the claim itself then finds out)."""
        shape = (controller.pool_id is not None, controller.serves_managed)
        query = self._queries.get(shape)
        if query is None:
            query = self._queries[shape] = FastQuery(
                self._engine, [jobs.c.id], lambda q: first_claimable(q, *shape))
        params = {"ctl": controller.id}
        if shape[0]:
            params["pool"] = controller.pool_id
        try:
            return bool(query.rows(**params))
        except Unavailable:
            return True


_checks: weakref.WeakKeyDictionary[Engine, ClaimCheck] = weakref.WeakKeyDictionary()


def claim_check(engine: Engine) -> ClaimCheck:
    """The engine's one :class:`ClaimCheck` (its statements compiled once)."""
    check = _checks.get(engine)
    if check is None:
        check = _checks[engine] = ClaimCheck(engine)
    return check
