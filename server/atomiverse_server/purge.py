"""``atomiverse admin purge``: delete (and optionally archive) old finished jobs in bounded
chunks, so a database that has run millions of jobs stays the size of what is still wanted.

Each chunk (``chunk`` jobs, default 500) is its own short write transaction: on SQLite the
write lock is held for one chunk's DELETE only, so claims and reports interleave with a purge;
on PostgreSQL only the purged (finished, so never claimable) rows are locked. Rows are found
per workspace and state through ``ix_jobs_workspace_state_seq``, oldest first; a child of a
composite job is never purged on its own, only with its parent.

With an archive, a chunk's rows are appended to the JSON-lines file and flushed to disk
(fsync) before the transaction that deletes them commits: a crash in between leaves a job in
both the archive and the database (purged again next time), never in neither. A composite job
goes with its children, which are finished when it is. A purged job no longer answers the
result cache."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .db import jobs, read_tx, workspaces, write_tx

PURGEABLE = ("done", "failed", "cancelled")
DEFAULT_CHUNK = 500


def purge(engine: Engine, *, states: Iterable[str], before: float,
          workspace_id: str | None = None, archive: Path | None = None,
          chunk: int = DEFAULT_CHUNK, pause_seconds: float = 0.0) -> dict[str, Any]:
    """Delete the top-level jobs in ``states`` that finished before ``before`` (Unix
    seconds), with their children; returns how many jobs went, per state."""
    states = list(dict.fromkeys(states))
    bad = [s for s in states if s not in PURGEABLE]
    if bad or not states:
        raise ValueError(f"state: only finished jobs can be purged ({', '.join(PURGEABLE)}); "
                         f"got {bad or 'none'}")
    if not 1 <= chunk <= 10_000:
        raise ValueError(f"chunk: between 1 and 10000 jobs, got {chunk}")
    with read_tx(engine) as conn:
        ids = [workspace_id] if workspace_id else list(
            conn.execute(sa.select(workspaces.c.id).order_by(workspaces.c.id)).scalars())
    counts = dict.fromkeys(states, 0)
    out: IO[str] | None = None
    try:
        if archive is not None:
            fd = os.open(archive, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            out = os.fdopen(fd, "a", encoding="utf-8")
        for ws in ids:
            for state in states:
                after = 0
                while True:
                    n, after = _purge_chunk(engine, ws, state, before, after, chunk, out)
                    counts[state] += n
                    if after is None:
                        break
                    if pause_seconds:
                        time.sleep(pause_seconds)  # leave the database to others between chunks
    finally:
        if out is not None:
            out.close()
    return {"purged": sum(counts.values()), "by_state": counts,
            "archive": str(archive) if archive else None}


def _purge_chunk(engine: Engine, workspace_id: str, state: str, before: float, after: int,
                 chunk: int, out: IO[str] | None) -> tuple[int, int | None]:
    """One transaction: up to ``chunk`` jobs after ``seq`` ``after``. Returns the jobs deleted
    and the seq to go on from (None: this workspace and state are done)."""
    with write_tx(engine) as conn:
        rows = conn.execute(
            sa.select(jobs.c.seq, jobs.c.id, jobs.c.finished_at, jobs.c.parent_id)
            .where(jobs.c.workspace_id == workspace_id, jobs.c.state == state,
                   jobs.c.seq > after)
            .order_by(jobs.c.seq).limit(chunk)).all()
        if not rows:
            return 0, None
        ids = [r.id for r in rows if r.parent_id is None and r.finished_at is not None
               and r.finished_at < before]
        n = 0
        if ids:
            children = sa.select(jobs.c.id).where(jobs.c.parent_id.in_(ids),
                                                  jobs.c.state.in_(PURGEABLE))
            doomed = ids + list(conn.execute(children).scalars())
            if out is not None:
                _archive(conn, doomed, out)
            res = conn.execute(jobs.delete().where(jobs.c.id.in_(doomed),
                                                   jobs.c.state.in_(PURGEABLE)))
            n = res.rowcount
    return n, (rows[-1].seq if len(rows) == chunk else None)


def _archive(conn: sa.Connection, ids: list[str], out: IO[str]) -> None:
    for row in conn.execute(sa.select(jobs).where(jobs.c.id.in_(ids))):
        # Some stored JSON has integer keys (per-atom maps): written as strings, as JSON must.
        out.write(orjson.dumps(row._asdict(), option=orjson.OPT_NON_STR_KEYS).decode() + "\n")
    out.flush()
    os.fsync(out.fileno())
