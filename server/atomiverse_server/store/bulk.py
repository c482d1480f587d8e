"""Many rows of ``jobs`` updated, each with its own values, in one statement.

An ``executemany`` of an UPDATE is one statement per row for PostgreSQL: a claim of 64 jobs
or a report of 500 results paid the server's parse, plan and execute that many times, in the
database process and in the driver. On PostgreSQL the rows go instead as one
``UPDATE jobs SET c = v.c ... FROM unnest(:ids, ...) AS v(id, ...) WHERE jobs.id = v.id``:
one statement, one round trip, one plan, one array parameter per column, so its text is the
same whatever the number of rows (a ``VALUES`` list cost SQLAlchemy more to compile per
call than it saved). SQLite runs in the server's own process, where an ``executemany`` of a
prepared statement is already the cheap way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from atomiverse_core import jsonio
from sqlalchemy.engine import Connection

from ..db import is_postgres, jobs

_PG_ARRAY = {sa.String: "text", sa.Text: "text", sa.Float: "float8", sa.Integer: "int8",
             sa.JSON: "text"}


def update_jobs(conn: Connection, rows: Sequence[dict[str, Any]], *, match: Sequence[str],
                values: dict[str, Any]) -> int:
    """Update the job rows matching each of ``rows`` on the columns ``match`` (all equal),
    setting each column of ``values``: a column name maps to None (the row's key
    ``b_<column>`` gives its value), or to ``SameValue(v)`` (one value for every row), or to
    a SQL expression over the row's own columns as text (``"attempts + 1"``). Returns how
    many rows changed."""
    if not rows:
        return 0
    if not is_postgres(conn.engine):
        same = {f"s_{c}": e.value for c, e in values.items() if isinstance(e, SameValue)}
        return conn.execute(_sqlite_update(match, values),
                            [{**r, **same} for r in rows] if same else list(rows)).rowcount
    per_row = list(dict.fromkeys([*match, *(c for c, e in values.items() if e is None)]))
    # One array parameter per column, whatever the number of rows: the statement's text
    # depends only on the columns, so PostgreSQL and the driver see few distinct statements.
    sets = ", ".join(f"{c} = {_pg_set(c, e)}" for c, e in values.items())
    arrays = ", ".join(f"CAST(:a_{c} AS {_pg_type(c)}[])" for c in per_row)
    where = " AND ".join(f"jobs.{c} = v.{c}" for c in match)
    sql = (f"UPDATE jobs SET {sets} FROM unnest({arrays}) AS v({', '.join(per_row)}) "
           f"WHERE {where}")
    params: dict[str, Any] = {f"a_{c}": [_pg_param(c, r[f"b_{c}"]) for r in rows]
                              for c in per_row}
    params.update({f"s_{c}": _pg_param(c, e.value) for c, e in values.items()
                   if isinstance(e, SameValue)})
    return conn.execute(sa.text(sql), params).rowcount


_sqlite_updates: dict[tuple[Any, ...], Any] = {}


def _sqlite_update(match: Sequence[str], values: dict[str, Any]) -> Any:
    """The UPDATE for these columns, built once per shape (the callers have a few): building
    a Core statement cost more than SQLAlchemy's cached run of it, on every claim and report."""
    shape = (tuple(match), tuple((c, "row" if e is None else "same" if isinstance(e, SameValue)
                                  else e) for c, e in values.items()))
    stmt = _sqlite_updates.get(shape)
    if stmt is None:
        if len(_sqlite_updates) >= 64:  # not expected: bounded all the same
            _sqlite_updates.clear()
        stmt = _sqlite_updates[shape] = jobs.update() \
            .where(*(jobs.c[c] == sa.bindparam(f"b_{c}") for c in match)) \
            .values({c: _sqlite_value(c, expr) for c, expr in values.items()})
    return stmt


class SameValue:
    """A value set on every row of :func:`update_jobs`."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _sqlite_value(column: str, expr: Any) -> Any:
    if expr is None:
        return sa.bindparam(f"b_{column}", type_=jobs.c[column].type)
    if isinstance(expr, SameValue):
        return sa.bindparam(f"s_{column}", type_=jobs.c[column].type)
    return sa.text(expr)


def _pg_type(column: str) -> str:
    for kind, name in _PG_ARRAY.items():
        if isinstance(jobs.c[column].type, kind):
            return name
    raise TypeError(f"update_jobs: no array type for jobs.{column}")


def _is_json(column: str) -> bool:
    return isinstance(jobs.c[column].type, sa.JSON)


def _pg_set(column: str, expr: Any) -> str:
    if expr is None:
        value = f"v.{column}"
    elif isinstance(expr, SameValue):
        value = f"CAST(:s_{column} AS {_pg_type(column)})"
    else:
        return f"{expr}"
    return f"CAST({value} AS json)" if _is_json(column) else value


def _pg_param(column: str, value: Any) -> Any:
    if _is_json(column) and value is not None:
        return jsonio.dumps_str(value)
    return value
