"""The reads clients repeat most, without a transaction: :class:`HotReads` answers
``jobs.get_job`` and ``jobs.list_jobs``'s records through statements compiled once
(:class:`FastQuery`), for ``fastreads``, the watch and ``/run``."""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.engine import Engine

from .cursors import cursor_key, decode_with, encode_with
from .fastquery import FastQuery
from .jobs import (
    JOB_COLUMNS,
    SUMMARY_COLUMNS,
    one_job,
    page,
    page_params,
    page_query,
    public_record,
)
from .summaries import CHANGING_COLUMNS, Summaries, summary_of


class HotReads:
    """:func:`get_job` and :func:`list_jobs` without a transaction, through statements
    compiled once (:class:`FastQuery`): the same records, for ``fastreads``."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # The payload, result and preview go out as stored; attempt_errors is looked into.
        self._job = FastQuery(engine, JOB_COLUMNS, one_job,
                              passthrough=frozenset({"payload", "result", "preview"}))
        self._pages: dict[tuple[tuple[bool, bool, bool], Sequence[Any]], FastQuery] = {}
        self._summaries = Summaries()
        self._cursor_key: bytes | None = None

    def get_job(self, *, workspace_id: str, job_id: str) -> dict[str, Any] | None:
        rows = self._job.rows(ws=workspace_id, id=job_id)
        return public_record(rows[0]) if rows else None

    def list_jobs(self, *, workspace_id: str, limit: int, cursor: str | None = None,
                  state: str | None = None, name_contains: str | None = None) -> dict[str, Any]:
        before = None if cursor is None else decode_with(
            self._key(), workspace_id=workspace_id, cursor=cursor)
        flags, params = page_params(workspace_id, limit, before, state, name_contains)
        changing = self._statement(flags, CHANGING_COLUMNS).rows(**params)
        lasting = self._summaries.known(changing[:limit])
        cursor_for = lambda seq: encode_with(  # noqa: E731
            self._key(), workspace_id=workspace_id, seq=seq)
        if lasting is None:  # a job this page has not shown before: read whole summaries
            rows = self._statement(flags, SUMMARY_COLUMNS).rows(**params)
            self._summaries.remember(rows)
            return page(rows, limit, cursor_for)
        return page(changing, limit, cursor_for,
                    summaries=[summary_of(r, k) for r, k in zip(changing, lasting)])

    def _statement(self, flags: tuple[bool, bool, bool], columns: Sequence[Any]) -> FastQuery:
        query = self._pages.get((flags, columns))
        if query is None:
            query = self._pages[(flags, columns)] = FastQuery(
                self._engine, columns, lambda q: page_query(q, *flags),
                passthrough=frozenset({"preview"}))
        return query

    def get_jobs(self, *, workspace_id: str, job_ids: Iterable[str]) -> list[dict[str, Any]]:
        """:func:`get_jobs` by a compiled lookup a job, payload and result passed through."""
        found = (self.get_job(workspace_id=workspace_id, job_id=j) for j in job_ids)
        return [r for r in found if r is not None]

    def _key(self) -> bytes:
        if self._cursor_key is None:
            with self._engine.connect() as conn:
                self._cursor_key = cursor_key(conn)
        return self._cursor_key


_hot_reads: weakref.WeakKeyDictionary[Engine, HotReads] = weakref.WeakKeyDictionary()


def hot_reads(engine: Engine) -> HotReads:
    """The engine's :class:`HotReads` (its statements are compiled once per engine)."""
    if engine not in _hot_reads:
        _hot_reads[engine] = HotReads(engine)
    return _hot_reads[engine]
