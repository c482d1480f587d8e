"""Many rows of ``jobs`` updated, each with its own values, in one statement.

An ``executemany`` of an UPDATE is one statement per row for PostgreSQL: a claim of 64 jobs
or a report of 500 results paid the server's parse, plan and execute that many times, in the
database process and in the driver. On PostgreSQL the rows go instead as one
``UPDATE jobs SET c = v.c ... FROM json_to_recordset(:rows) AS v(id text, ...) WHERE
jobs.id = v.id``: one statement, one round trip, one plan, one JSON parameter for all the
rows, so its text is the same whatever the number of rows (a ``VALUES`` list cost
SQLAlchemy more to compile per call than it saved; an array parameter per column cost
psycopg more to quote, element by element, than the rest of a report). SQLite runs in the server's own process, where an ``executemany`` of a
prepared statement is already the cheap way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from atomiverse_core import jsonio
from sqlalchemy.engine import Connection

from ..db import is_postgres, jobs, state_is

_PG_TYPES = {sa.JSON: "json", sa.String: "text", sa.Text: "text", sa.Float: "float8",
             sa.Integer: "int8"}


def update_jobs(conn: Connection, rows: Sequence[dict[str, Any]], *, match: Sequence[str],
                values: dict[str, Any], state: str | None = None) -> int:
    """Update the job rows matching each of ``rows`` on the columns ``match`` (all equal),
    and in ``state`` if given (written into the statement: see ``db.state_is``), setting
    each column of ``values``: a column name maps to None (the row's key ``b_<column>``
    gives its value), or to ``SameValue(v)`` (one value for every row), or to a SQL
    expression over the row's own columns as text (``"attempts + 1"``). Returns how many
    rows changed."""
    if not rows:
        return 0
    if not is_postgres(conn.engine):
        same = {f"s_{c}": e.value for c, e in values.items() if isinstance(e, SameValue)}
        return conn.execute(_sqlite_update(match, values, state),
                            [{**r, **same} for r in rows] if same else list(rows)).rowcount
    per_row = list(dict.fromkeys([*match, *(c for c, e in values.items() if e is None)]))
    # The rows go as one JSON document, whatever their number: orjson writes it in one C call
    # and PostgreSQL reads it with json_to_recordset. One array parameter per column (the
    # previous form) cost psycopg a Python loop per element, and a regular-expression
    # substitution per quote of every result's JSON text it escaped into the array literal.
    rows_json = jsonio.dumps_str([{c: r[f"b_{c}"] for c in per_row} for r in rows])
    params: dict[str, Any] = {"rows": rows_json}
    params.update({f"s_{c}": _pg_param(c, e.value) for c, e in values.items()
                   if isinstance(e, SameValue)})
    return conn.execute(_pg_update(match, values, per_row, state), params).rowcount


_statements: dict[tuple[Any, ...], Any] = {}


def _statement(backend: str, match: Sequence[str], values: dict[str, Any], state: str | None,
               build: Callable[[], Any]) -> Any:
    """The UPDATE for these columns, built once per shape and database (the callers have a
    few): building a statement cost more than SQLAlchemy's cached run of it, on every claim
    and report. Its text depends only on the columns, so PostgreSQL and the driver see few
    distinct statements."""
    shape = (backend, tuple(match), state, tuple(
        (c, "row" if e is None else "same" if isinstance(e, SameValue) else e)
        for c, e in values.items()))
    stmt = _statements.get(shape)
    if stmt is None:
        if len(_statements) >= 64:  # not expected: bounded all the same
            _statements.clear()
        stmt = _statements[shape] = build()
    return stmt


def _pg_update(match: Sequence[str], values: dict[str, Any], per_row: list[str],
               state: str | None) -> Any:
    """``UPDATE jobs SET ... FROM json_to_recordset(:rows) AS v(...) WHERE ...``."""
    def build() -> Any:
        sets = ", ".join(f"{c} = {_pg_set(c, e)}" for c, e in values.items())
        record = ", ".join(f"{c} {_pg_type(c)}" for c in per_row)
        where = " AND ".join([f"jobs.{c} = v.{c}" for c in match]
                             + ([] if state is None else [_state_sql(state)]))
        return sa.text(f"UPDATE jobs SET {sets} FROM json_to_recordset(CAST(:rows AS json)) "
                       f"AS v({record}) WHERE {where}")

    return _statement("postgresql", match, values, state, build)


def _sqlite_update(match: Sequence[str], values: dict[str, Any], state: str | None) -> Any:
    """``UPDATE jobs SET ... WHERE ...`` with a parameter per column, run as an
    ``executemany``."""
    in_state = [] if state is None else [state_is(state)]
    return _statement("sqlite", match, values, state, lambda: jobs.update()
                      .where(*(jobs.c[c] == sa.bindparam(f"b_{c}") for c in match), *in_state)
                      .values({c: _sqlite_value(c, expr) for c, expr in values.items()}))


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


def _state_sql(state: str) -> str:
    return str(state_is(state).compile(compile_kwargs={"literal_binds": True}))


def _pg_type(column: str) -> str:
    for kind, name in _PG_TYPES.items():
        if isinstance(jobs.c[column].type, kind):
            return name
    raise TypeError(f"update_jobs: no PostgreSQL type for jobs.{column}")


def _is_json(column: str) -> bool:
    return isinstance(jobs.c[column].type, sa.JSON)


def _pg_set(column: str, expr: Any) -> str:
    if expr is None:
        return f"v.{column}"  # typed by the record's column list
    if isinstance(expr, SameValue):
        return f"CAST(:s_{column} AS {_pg_type(column)})"
    return f"{expr}"


def _pg_param(column: str, value: Any) -> Any:
    if _is_json(column) and value is not None:
        return jsonio.dumps_str(value)
    return value
