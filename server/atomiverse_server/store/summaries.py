"""List pages that read only what can change: a job's unchanging half is remembered.

A list page of 100 jobs read each job's id, type, submission time and molecule preview (about
a kilobyte of JSON) on every request, although none of them changes after submission. On
SQLite the preview is read from the row's overflow pages and turned into a Python string,
100 times a page: half the server's CPU for a page (issue 22). Here a page first reads the
columns that do change (name, state, billed core-seconds) and takes the rest from memory;
only a page with a job not yet remembered reads the whole summary, and remembers it.

The remembered half is keyed by ``seq`` and checked against the job's ``id`` read with the
page, so a ``seq`` that names another job (SQLite can hand out the number of a deleted newest
row again) is never answered with the old job's preview. Only rows the page's own
workspace-filtered query returned are looked up, so nothing crosses workspaces. Bounded: past
``MAX_REMEMBERED`` jobs it starts again empty (a few MB of previews at most)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from ..db import jobs
from ._time import iso

# The summary's columns a page reads every time (the others a job keeps for life).
CHANGING_COLUMNS = (jobs.c.seq, jobs.c.id, jobs.c.name, jobs.c.state,
                    jobs.c.billed_core_seconds)
MAX_REMEMBERED = 8192


class Lasting(NamedTuple):
    job_id: str
    job_type: str
    created_at: str | None
    preview: Any  # the stored JSON, passed through as is


class Summaries:
    """The unchanging half of each job summary a page has shown (one engine's)."""

    def __init__(self, max_remembered: int = MAX_REMEMBERED) -> None:
        self._known: dict[int, Lasting] = {}
        self._max = max_remembered

    def known(self, rows: Sequence[Any]) -> list[Lasting] | None:
        """The lasting half of each of these (changing-column) rows, or None if any is not
        remembered (the caller then reads the whole summaries and :meth:`remember`\\ s them)."""
        out = []
        for row in rows:
            lasting = self._known.get(row.seq)
            if lasting is None or lasting.job_id != row.id:
                return None
            out.append(lasting)
        return out

    def remember(self, rows: Sequence[Any]) -> None:
        """Rows with the full summary's columns."""
        if len(self._known) + len(rows) > self._max:
            self._known = {}  # a new dict: a reader on another thread keeps the old one
        known = self._known
        for row in rows:
            known[row.seq] = lasting_of(row)


def lasting_of(row: Any) -> Lasting:
    """The unchanging half of a row with the full summary's columns."""
    return Lasting(row.id, row.job_type, iso(row.created_at), row.preview)


def summary_of(row: Any, lasting: Lasting) -> dict[str, Any]:
    """A job's summary as lists and pages show it, from its changing columns and its lasting
    half."""
    return {
        "job_id": row.id,
        "name": row.name,
        "state": row.state,
        "job_type": lasting.job_type,
        "created_at": lasting.created_at,
        "billed_core_seconds": row.billed_core_seconds,
        "molecule_preview": lasting.preview,
    }
