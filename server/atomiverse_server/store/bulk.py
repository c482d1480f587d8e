"""Many rows of ``jobs`` updated, each with its own values, in one statement.

An ``executemany`` of an UPDATE is one statement per row for PostgreSQL: a claim of 64 jobs
or a report of 500 results paid the server's parse, plan and execute that many times, in the
database process and in the driver. On PostgreSQL the rows go instead as one
``UPDATE jobs SET c = v.c ... FROM (VALUES ...) AS v WHERE jobs.id = v.id AND ...``: one
statement, one round trip, one plan. SQLite runs in the server's own process, where an
``executemany`` of a prepared statement is already the cheap way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..db import is_postgres, jobs

# Bound parameters per statement stay well under PostgreSQL's 65,535.
_MAX_PARAMS = 30_000


def update_jobs(conn: Connection, rows: Sequence[dict[str, Any]], *, match: Sequence[str],
                values: dict[str, Any]) -> int:
    """Update the job rows matching each of ``rows`` on the columns ``match`` (all equal),
    setting each column of ``values``: a column name (the row's key ``b_<column>`` gives its
    value) maps to None, or to a SQL expression of ``jobs`` set the same on every row.
    Returns how many rows changed."""
    if not rows:
        return 0
    per_row = [c for c, expr in values.items() if expr is None]
    if not is_postgres(conn.engine):
        stmt = (jobs.update().where(*(jobs.c[c] == sa.bindparam(f"b_{c}") for c in match))
                .values({c: sa.bindparam(f"b_{c}", type_=jobs.c[c].type) if expr is None
                         else expr for c, expr in values.items()}))
        return conn.execute(stmt, list(rows)).rowcount
    names = list(dict.fromkeys([*match, *per_row]))
    step = max(1, _MAX_PARAMS // len(names))
    changed = 0
    for i in range(0, len(rows), step):
        chunk = rows[i:i + step]
        v = sa.values(*(sa.column(f"b_{c}", jobs.c[c].type) for c in names), name="v") \
            .data([tuple(r[f"b_{c}"] for c in names) for r in chunk])
        stmt = (jobs.update()
                .where(*(jobs.c[c] == sa.cast(v.c[f"b_{c}"], jobs.c[c].type) for c in match))
                .values({c: sa.cast(v.c[f"b_{c}"], jobs.c[c].type) if expr is None else expr
                         for c, expr in values.items()}))
        changed += conn.execute(stmt).rowcount
    return changed
