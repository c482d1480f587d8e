"""A SELECT compiled once and run on the database driver directly.

SQLAlchemy builds, caches and executes a Core statement in about half a millisecond of CPU;
the driver runs a primary-key lookup in a few hundredths of that. For the reads that clients
repeat most (``fastreads``) the statement is compiled once per engine, and each call checks
out a pooled connection, executes, and hands back rows with the same attribute names and
values a Core query gives, so the same functions turn them into records. JSON columns are
selected as text and decoded here, as the engine's own JSON type would (``jsonio.loads``).

One statement, no transaction of its own, on a connection each thread keeps for these reads
alone: checking one out of the pool and back (a rollback, and on PostgreSQL a ping) cost more
than the query. It is in autocommit mode (SQLite's connections are; on PostgreSQL this one is
set so), so a single SELECT reads one snapshot and no transaction stays open between reads. A
connection that fails is closed and replaced on the next read; the failure is raised as
:class:`Unavailable` for the caller to answer the slow way."""

from __future__ import annotations

import threading
from collections import namedtuple
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from atomiverse_core import jsonio
from sqlalchemy.engine import Engine


class Unavailable(Exception):
    """The database did not answer this read (a restart, a dropped connection)."""


class FastQuery:
    def __init__(self, engine: Engine, columns: Sequence[Any], build: Any, *,
                 passthrough: frozenset[str] = frozenset()) -> None:
        """``build(select)`` adds FROM, WHERE, ORDER BY and LIMIT, with ``sa.bindparam``s for
        every value; ``columns`` are what it selects (JSON ones are read as text).
        ``passthrough``: JSON columns whose values stay the stored text, to be spliced into a
        response by ``jsonio.dumps`` (values only passed on, never looked into)."""
        self._engine = engine
        selected = [sa.cast(c, sa.Text).label(c.name) if isinstance(c.type, sa.JSON) else c
                    for c in columns]
        self._json = [(i, jsonio.raw if c.name in passthrough else jsonio.loads)
                      for i, c in enumerate(columns) if isinstance(c.type, sa.JSON)]
        self._row_type = namedtuple("Row", [c.name for c in columns])  # type: ignore[misc]
        compiled = build(sa.select(*selected)).compile(dialect=engine.dialect)
        self._sql = str(compiled)
        self._order = list(compiled.positiontup or ()) if compiled.positional else None
        # Values the dialect adds itself (SQLite writes LIMIT ? OFFSET ? with OFFSET 0).
        self._fixed = {k: v for k, v in compiled.params.items() if v is not None}
        self._local = threading.local()

    def rows(self, **params: Any) -> list[Any]:
        values = {**self._fixed, **params}
        args: Any = values if self._order is None else tuple(values[k] for k in self._order)
        raw = self._connection()
        try:
            cursor = raw.cursor()
            try:
                cursor.execute(self._sql, args)
                fetched = cursor.fetchall()
            finally:
                cursor.close()
        except Exception as exc:
            self._local.raw = None
            raw.invalidate()  # closed, never handed back to the pool in autocommit mode
            raise Unavailable(str(exc)) from exc
        return [self._row(values) for values in fetched]

    def _connection(self) -> Any:
        raw = getattr(self._local, "raw", None)
        if raw is None:
            try:
                raw = self._engine.raw_connection()
            except Exception as exc:
                raise Unavailable(str(exc)) from exc
            if self._engine.dialect.name == "postgresql":
                raw.driver_connection.autocommit = True
            self._local.raw = raw
        return raw

    def _row(self, values: Sequence[Any]) -> Any:
        if self._json:
            values = list(values)
            for i, decode in self._json:
                if values[i] is not None:
                    values[i] = decode(values[i])
        return self._row_type._make(values)
