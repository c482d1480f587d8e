"""User routes for jobs: submit, read, list, wait, rename, cancel, delete."""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from atomiverse_core import jobtypes, jsonio
from atomiverse_core.schema import (
    BatchRequest,
    BatchResponse,
    JobPublic,
    JobRename,
    JobsPage,
    JobSubmitRequest,
    WaitRequest,
    WaitResponse,
)
from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from .. import handoff, workflows
from ..db import read_tx, write_tx
from ..deps import CurrentWorkspace, EngineDep, NotifierDep, SettingsDep
from ..jsonroute import FastJSONRoute
from ..notify import Notifier, TooManyWatches
from ..ratelimit import BatchSubmitter, JobSubmitter
from ..settings import Settings
from ..store import composites, limits
from ..store import jobs as job_store
from ..submission import InsufficientBalance, prepare_entries, submit_entries
from .errors import USER
from .longpoll import coalesced_until
from .watch import MissingJobs, raise_if_missing

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], responses=USER,
                   route_class=FastJSONRoute)
MAX_NAME_LENGTH = 120
COMPOSITES = frozenset(t.name for t in jobtypes.all_types() if t.is_composite)
IdempotencyKeyHeader = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]
LocalControllerHeader = Annotated[str | None, Header(alias="X-Atomiverse-Local-Controller",
                                                     max_length=100)]


@router.post("/submit-batch", response_model=BatchResponse)
def submit_batch(body: BatchRequest, workspace: BatchSubmitter, engine: EngineDep,
                 settings: SettingsDep, notifier: NotifierDep,
                 local_controller: LocalControllerHeader = None,
                 idempotency_key: IdempotencyKeyHeader = None) -> dict[str, Any]:
    """Up to ``max_batch_size`` jobs, each accepted or refused on its own. Sent again with
    the same ``Idempotency-Key``, the first response comes back and nothing new is stored."""
    if len(body.jobs) > settings.max_batch_size:
        raise HTTPException(413, f"Batch of {len(body.jobs)} jobs exceeds the maximum batch "
                                 f"size of {settings.max_batch_size}: send several batches")
    digest = limits.request_hash(body.jobs) if idempotency_key else ""
    prepared = prepare_entries(body.jobs, settings)
    try:
        with write_tx(engine) as conn:
            if idempotency_key:
                earlier = _earlier_response(conn, workspace.id, idempotency_key, digest)
                if earlier is not None:
                    return earlier
            response, claimable, new_composites = submit_entries(
                conn, workspace_id=workspace.id, prepared=prepared, settings=settings,
                local_controller=local_controller)
            started, finished = workflows.advance_new(conn, new_composites, settings)
            if idempotency_key:
                limits.save_response(conn, workspace_id=workspace.id, key=idempotency_key,
                                     digest=digest, response=response)
    except InsufficientBalance as e:
        raise HTTPException(402, str(e)) from None
    except IntegrityError:
        # The same key raced in from another request and won: answer as it was answered.
        with read_tx(engine) as conn:
            earlier = _earlier_response(conn, workspace.id, idempotency_key or "", digest)
        if earlier is None:
            raise
        return earlier
    _announce_new_work(engine, settings, notifier, claimable | started, workspace.id)
    if finished:
        notifier.finished(finished)
    return response


def _earlier_response(conn: Any, workspace_id: str, key: str,
                      digest: str) -> dict[str, Any] | None:
    found = limits.find_response(conn, workspace_id=workspace_id, key=key)
    if found is None:
        return None
    if found[0] != digest:
        raise HTTPException(422, "Idempotency-Key: already used for a different batch")
    return found[1]


@router.post("", response_model=JobPublic, status_code=201)
def submit_job(body: JobSubmitRequest, workspace: JobSubmitter, engine: EngineDep,
               settings: SettingsDep, notifier: NotifierDep,
               local_controller: LocalControllerHeader = None) -> dict[str, Any]:
    prepared = prepare_entries([{"job": body.job, "compute_target": body.compute_target}],
                               settings)
    try:
        # The controllers already waiting are handed the job by a claim in this same
        # transaction (one commit less on a calculation's path), once it has committed.
        with handoff.Handing(notifier.claim_waiters, settings.lease_seconds) as handing, \
                write_tx(engine) as conn:
            stored: list[dict[str, Any]] = []
            response, claimable, new_composites = submit_entries(
                conn, workspace_id=workspace.id, prepared=prepared, settings=settings,
                local_controller=local_controller, stored=stored)
            started, finished = workflows.advance_new(conn, new_composites, settings)
            (result,) = response["jobs"]
            if result["status"] == "failed":
                raise HTTPException(422, result["error"])
            # The record from the row just stored, not read back (a statement and the
            # payload's JSON decoded again, every calculation); a composite, which its
            # start has changed since, is read.
            record = job_store.get_job(conn, workspace_id=workspace.id,
                                       job_id=result["job_id"]) \
                if new_composites else job_store.stored_record(stored[0])
            handing.claim(conn, claimable | started)
    except InsufficientBalance as e:
        raise HTTPException(402, str(e)) from None
    if claimable | started:  # the polls not handed a job look for themselves
        notifier.jobs_pending.fire()
    notifier.jobs_submitted.fire([workspace.id])  # pages showing the newest jobs (watch)
    if finished:
        notifier.finished(finished)
    return record  # type: ignore[return-value]


def _announce_new_work(engine: Engine, settings: Settings, notifier: Notifier,
                       claimable: frozenset[str | None], workspace_id: str) -> None:
    handoff.announce_new_work(engine, settings.lease_seconds, notifier, claimable)
    notifier.jobs_submitted.fire([workspace_id])  # pages showing the newest jobs (watch)


@router.get("", response_model=JobsPage)
def list_jobs(workspace: CurrentWorkspace, engine: EngineDep,
              limit: Annotated[int, Query(ge=1, le=200)] = 50,
              cursor: Annotated[str | None, Query(max_length=200)] = None,
              state: Annotated[str | None, Query(
                  pattern="^(pending|running|done|failed|cancelled)$")] = None,
              name: Annotated[str | None, Query(max_length=MAX_NAME_LENGTH)] = None,
              ) -> dict[str, Any]:
    try:
        with read_tx(engine) as conn:
            return job_store.list_jobs(conn, workspace_id=workspace.id, limit=limit,
                                       cursor=cursor, state=state, name_contains=name)
    except job_store.InvalidCursor as e:
        raise HTTPException(422, str(e)) from None


@router.post("/wait", response_model=WaitResponse)
async def wait_jobs(body: WaitRequest, workspace: CurrentWorkspace, engine: EngineDep,
                    notifier: NotifierDep, request: Request) -> Response:
    """Long-poll: returns the states of the given jobs as soon as any of them is terminal
    (with results if asked), or when ``timeout_seconds`` runs out.

    The database is read when the poll starts and when it answers. In between, the jobs
    the finish signal names are taken as finished without asking. The waiter goes back to
    the database only for a signal that names no jobs, or once a fallback period has passed
    since it last looked: another server process may have finished them. Ids that are not
    jobs of this workspace: 404 naming them."""
    try:
        parked = notifier.watches.enter(workspace.id, None)
    except TooManyWatches as e:
        raise HTTPException(429, str(e), headers={"Retry-After": "1"}) from None
    try:
        return await _wait(body, workspace.id, engine, notifier, request)
    except MissingJobs as e:
        return e.response()
    finally:
        notifier.watches.leave(workspace.id, None, parked)


async def _wait(body: WaitRequest, workspace_id: str, engine: Engine, notifier: Notifier,
                request: Request) -> Response:
    states = await wait_states(body, workspace_id, engine, notifier, request)
    # Encoded here: results are spliced in as stored, not parsed and re-validated.
    return Response(jsonio.dumps({"jobs": states}), media_type="application/json")


Reader = Callable[[], Awaitable[list[dict[str, Any]]]]


async def wait_states(body: WaitRequest, workspace_id: str, engine: Engine,
                      notifier: Notifier, request: Request, *,
                      known: list[dict[str, Any]] | None = None, since: Any = None,
                      reader: Reader | None = None) -> list[dict[str, Any]]:
    """The jobs' states once one is finished or the wait is over (``/wait``'s answer).
    ``known``: the jobs' records as the caller has just read them, with ``since``, the finish
    signal's event taken before that read (``/run``: before its submission): the first read
    is then skipped, and the answer is read afresh once anything happened or the time is
    up. ``reader``: how to read them instead of :func:`job_store.job_states` in a thread."""
    started = time.monotonic()
    deadline = started + body.timeout_seconds
    signal = notifier.jobs_finished
    event = signal.snapshot() if since is None else since

    async def read() -> list[dict[str, Any]]:
        nonlocal read_at
        read_at = time.monotonic()
        if reader is not None:
            return await reader()
        return await run_in_threadpool(_job_states, engine, workspace_id, body.job_ids,
                                       body.include_result)

    read_at = 0.0
    if known is None:
        states = await read()
        raise_if_missing(set(body.job_ids), {s["job_id"] for s in states})
    else:
        states, read_at = known, time.monotonic()
    active = _active(states)
    coalesce_until: float | None = None
    woken = False
    stale = known is not None  # a record, not job_states' answer: always read for the answer
    while True:
        finished = len(states) - len(active)
        now = time.monotonic()
        if woken and finished and active and body.coalesce_seconds:
            # Let the rest of the wave land and answer once, but no longer than it takes
            # the last of these jobs to finish.
            coalesce_until = coalesce_until or coalesced_until(started, body.coalesce_seconds,
                                                               deadline)
        holding = coalesce_until is not None and now < coalesce_until and bool(active)
        # The client's connection is looked at only before waiting on: its cancel scope
        # formats the task's repr, which /run paid again after every finish (issue 28).
        if notifier.stopping or not holding and (
                not body.job_ids or now >= deadline or finished) \
                or await request.is_disconnected():
            return await read() if stale else states
        until = coalesce_until if holding else min(deadline, now + notifier.fallback_seconds)
        with notifier.watches.sleeping():
            await signal.wait(event, until - now)
        woken = True
        named, event = signal.named_since(event)
        if named is None or not holding and \
                time.monotonic() - read_at >= notifier.fallback_seconds:
            states = await read()
            active, stale = _active(states), False
        elif named & active:
            active -= named
            stale = True


def _active(states: list[dict[str, Any]]) -> set[str]:
    return {s["job_id"] for s in states if s["state"] not in job_store.TERMINAL}


def _job_states(engine: Any, workspace_id: str, job_ids: list[str],
                include_result: bool) -> list[dict[str, Any]]:
    with read_tx(engine) as conn:
        return job_store.job_states(conn, workspace_id=workspace_id, job_ids=job_ids,
                                    include_result=include_result)


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: str, workspace: CurrentWorkspace, engine: EngineDep) -> dict[str, Any]:
    with read_tx(engine) as conn:
        return _found(job_store.get_job(conn, workspace_id=workspace.id, job_id=job_id), job_id)


@router.get("/{job_id}/children")
def job_children(job_id: str, workspace: CurrentWorkspace,
                 engine: EngineDep) -> dict[str, Any]:
    """A composite job's children (a chain's steps, a conformer search's jobs) in step order:
    id, step (from 1), job type, state, name, error, energy and core-seconds."""
    with read_tx(engine) as conn:
        if job_store.get_job(conn, workspace_id=workspace.id, job_id=job_id) is None:
            raise _not_found(job_id)
        return {"jobs": composites.child_summaries(conn, workspace_id=workspace.id,
                                                   parent_id=job_id)}


@router.patch("/{job_id}", response_model=JobPublic)
def rename_job(job_id: str, body: JobRename, workspace: CurrentWorkspace,
               engine: EngineDep) -> dict[str, Any]:
    name = _valid_name(body.name)
    with write_tx(engine) as conn:
        if not job_store.rename_job(conn, workspace_id=workspace.id, job_id=job_id, name=name):
            raise _not_found(job_id)
        return _found(job_store.get_job(conn, workspace_id=workspace.id, job_id=job_id), job_id)


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(job_id: str, workspace: CurrentWorkspace, engine: EngineDep,
               notifier: NotifierDep) -> dict[str, Any]:
    with write_tx(engine) as conn:
        before = job_store.cancel_job(conn, workspace_id=workspace.id, job_id=job_id)
        if before is None:
            raise _not_found(job_id)
        record = _found(job_store.get_job(conn, workspace_id=workspace.id, job_id=job_id),
                        job_id)
    if before in job_store.ACTIVE:
        # A composite's children were cancelled with it: say so without naming them.
        notifier.finished(None if record["job_type"] in COMPOSITES else [job_id])
        if record.get("parent_id"):  # a step of a chain: the chain fails, naming it
            notifier.children_finished()
    return record


@router.delete("/{job_id}", status_code=204)
def delete_job(job_id: str, workspace: CurrentWorkspace, engine: EngineDep) -> Response:
    with write_tx(engine) as conn:
        state = job_store.delete_job(conn, workspace_id=workspace.id, job_id=job_id)
    if state is None:
        raise _not_found(job_id)
    if state in job_store.ACTIVE:
        raise HTTPException(409, f"Job {job_id} is {state}: only done, failed or cancelled "
                                 f"jobs can be deleted; cancel it first")
    return Response(status_code=204)


def _valid_name(raw: str) -> str:
    name = raw.strip()
    if not name:
        raise HTTPException(422, "name: must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise HTTPException(422, f"name: {len(name)} characters is more than the maximum of "
                                 f"{MAX_NAME_LENGTH}")
    bad = next((c for c in name if not c.isprintable() or unicodedata.category(c) == "Cf"),
               None)
    if bad is not None:
        raise HTTPException(422, f"name: contains the non-printable character U+{ord(bad):04X}")
    return name


def _not_found(job_id: str) -> HTTPException:
    return HTTPException(404, f"Job {job_id[:64]} not found")


def _found(record: dict[str, Any] | None, job_id: str) -> dict[str, Any]:
    if record is None:
        raise _not_found(job_id)
    return record



