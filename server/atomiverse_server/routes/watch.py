"""Watch jobs: one long-poll per client over all the jobs it follows.

The SDK's informer keeps one such watch open per process and answers ``status()`` from what
it brings, so a script that polls its jobs in a loop costs the server one request per change,
not one per call. The client says which version of each job it has seen; the answer carries
the full record of every job whose version differs, as soon as there is one.

Between database reads the watch sleeps on the in-process change signal, which names the jobs
that changed: a signal naming none of the watched jobs costs no read. Every
``fallback_seconds`` it reads anyway (another server process on the same database may have
changed them).

A page showing the newest jobs also names the newest one it shows (``newest_seen``): the watch
then answers ``newer: true`` as soon as the workspace has a later job, so the page fetches
itself again on a submission, not on a timer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from atomiverse_core import jsonio
from atomiverse_core.schema import WatchRequest, WatchResponse
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.engine import Engine

from ..db import read_tx
from ..deps import CurrentWorkspace, EngineDep, NotifierDep
from ..jsonroute import FastJSONRoute
from ..notify import Notifier, TooManyWatches
from ..store import jobs as job_store
from ..store.hotreads import hot_reads
from .errors import USER
from .longpoll import coalesced_until, first, until_disconnected

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], responses=USER,
                   route_class=FastJSONRoute)
# How many unknown ids a 404 names: enough to act on, bounded for a 10 000-id request.
MAX_NAMED_MISSING = 20


@router.post("/watch", response_model=WatchResponse)
async def watch_jobs(body: WatchRequest, workspace: CurrentWorkspace, engine: EngineDep,
                     notifier: NotifierDep, request: Request) -> Response:
    """Long-poll: the records of the given jobs whose version is not the one given, as soon
    as there is one, or ``{"jobs": []}`` after ``timeout_seconds`` (or when a newer watch with
    the same ``watch_id`` starts). Unknown ids, or another workspace's: 404 naming them."""
    try:
        superseded = notifier.watches.enter(workspace.id, body.watch_id)
    except TooManyWatches as e:
        raise HTTPException(429, str(e), headers={"Retry-After": "1"}) from None
    try:
        changed, newer = await _wait_for_change(body, workspace.id, engine, notifier, request,
                                                superseded)
        records = await run_in_threadpool(_records, engine, workspace.id, changed, body.brief)
    except MissingJobs as e:
        return e.response()
    finally:
        notifier.watches.leave(workspace.id, body.watch_id, superseded)
    # Encoded here: results are passed through as stored, not re-validated.
    answer: dict[str, Any] = {"jobs": records}
    if body.newest_seen is not None:
        answer["newer"] = newer
    return Response(jsonio.dumps(answer), media_type="application/json")


async def _wait_for_change(body: WatchRequest, workspace_id: str, engine: Engine,
                           notifier: Notifier, request: Request,
                           superseded: asyncio.Event) -> tuple[list[str], bool]:
    """The watched jobs that changed, and whether jobs newer than ``newest_seen`` exist."""
    started = time.monotonic()
    deadline = started + body.timeout_seconds
    signal, submitted = notifier.jobs_changed, notifier.jobs_submitted
    event, submitted_event = signal.snapshot(), submitted.snapshot()
    ids = set(body.jobs)
    if not ids and body.newest_seen is None:
        return [], False  # nothing can change; such a watch only ends an older one of its id
    versions, newer = await run_in_threadpool(_read, engine, workspace_id, ids,
                                              body.newest_seen)
    raise_if_missing(ids, versions)
    read_at = time.monotonic()
    gone = asyncio.ensure_future(until_disconnected(request))
    hold_until: float | None = None
    unread: set[str] | None = set()  # named by signals since the last read (None: unknown)
    try:
        while True:
            changed = [job_id for job_id, v in versions.items() if not _same(body.jobs[job_id], v)]
            now = time.monotonic()
            if changed and body.coalesce_seconds and len(changed) < len(ids):
                hold_until = hold_until or coalesced_until(started, body.coalesce_seconds,
                                                           deadline)
            holding = hold_until is not None and now < hold_until
            if (changed or newer) and not holding or now >= deadline \
                    or superseded.is_set() or notifier.stopping or gone.done():
                return changed, newer
            until = hold_until if holding else min(deadline, read_at + notifier.fallback_seconds)
            with notifier.watches.sleeping():
                await first(signal.wait(event, until - now), superseded.wait(), gone,
                            *([submitted.wait(submitted_event, until - now)]
                              if body.newest_seen is not None else []))
            named, event = signal.named_since(event)
            unread = None if named is None or unread is None else unread | (named & ids)
            workspaces, submitted_event = submitted.named_since(submitted_event)
            new_jobs = body.newest_seen is not None and (
                workspaces is None or workspace_id in workspaces)
            if holding and time.monotonic() < hold_until and not new_jobs:
                continue  # read once when the hold ends, not on every change meanwhile
            if new_jobs or unread is None or time.monotonic() - read_at >= \
                    notifier.fallback_seconds:
                versions, newer = await run_in_threadpool(_read, engine, workspace_id, ids,
                                                          body.newest_seen)
                read_at, unread = time.monotonic(), set()
            elif unread:
                # Only the jobs the signals named can have changed: four processes each
                # watching 50 jobs would otherwise read 200 rows per job that changes.
                named, unread = unread, set()
                fresh, _ = await run_in_threadpool(_read, engine, workspace_id, named, None)
                versions.update(fresh)
    finally:
        gone.cancel()


def _same(known: str | None, current: str) -> bool:
    """A version is ``state:attempts``; a client that knows only the state (a page listing
    jobs) may send just that, and hears of a change of state."""
    return known == current or known is not None and ":" not in known \
        and current.partition(":")[0] == known


class MissingJobs(Exception):
    """Some of the ids asked for are not jobs of this workspace."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(missing)
        self.missing = missing

    def response(self) -> Response:
        """404 naming them, in ``detail`` for people and in ``missing`` for programs (whether
        an id is a job of another workspace is not told)."""
        shown = ", ".join(self.missing[:MAX_NAMED_MISSING])
        more = f" and {len(self.missing) - MAX_NAMED_MISSING} more" \
            if len(self.missing) > MAX_NAMED_MISSING else ""
        return Response(jsonio.dumps({
            "detail": f"job_ids: no such job in this workspace: {shown}{more}",
            "missing": self.missing}), status_code=404, media_type="application/json")


def raise_if_missing(asked: set[str], found: Any) -> None:
    missing = sorted(asked.difference(found))
    if missing:
        raise MissingJobs(missing)


def _read(engine: Engine, workspace_id: str, job_ids: set[str],
          newest_seen: str | None) -> tuple[dict[str, str], bool]:
    """The watched jobs' versions, and whether the workspace has jobs after ``newest_seen``."""
    with read_tx(engine) as conn:
        versions = job_store.job_versions(conn, workspace_id=workspace_id,
                                          job_ids=list(job_ids)) if job_ids else {}
        newer = newest_seen is not None and job_store.has_newer(
            conn, workspace_id=workspace_id, job_id=newest_seen)
    return versions, newer


def _records(engine: Engine, workspace_id: str, job_ids: list[str],
             brief: bool) -> list[dict[str, Any]]:
    if not job_ids:
        return []
    if not brief:
        try:
            return hot_reads(engine).get_jobs(workspace_id=workspace_id,
                                                        job_ids=job_ids)
        except job_store.Unavailable:
            pass  # the ordinary read below raises what the app answers
    read = job_store.brief_jobs if brief else job_store.get_jobs
    with read_tx(engine) as conn:
        return read(conn, workspace_id=workspace_id, job_ids=job_ids)
