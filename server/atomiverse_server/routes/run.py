"""``POST /api/v1/jobs/run``: submit one job and wait for it in the same request, answering
with its record once it is finished (or, when ``timeout_seconds`` runs out first, as it then
is: the client waits on with ``/wait``).

The same submission as ``POST /api/v1/jobs`` (its rate limit, checks and body limit) and the
same wait as ``POST /api/v1/jobs/wait``. It is for callers that submit one job and need its
result before anything else, as the ASE calculator does for every energy and force: one
round trip a calculation instead of two (a request, its authentication and a read saved)."""

from __future__ import annotations

from typing import Annotated, Any

from atomiverse_core import jsonio
from atomiverse_core.schema import JobPublic, JobSubmitRequest, WaitRequest
from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from ..db import read_tx
from ..deps import EngineDep, NotifierDep, SettingsDep
from ..jsonroute import FastJSONRoute
from ..notify import Notifier, TooManyWatches
from ..ratelimit import JobSubmitter
from ..settings import Settings
from ..store import jobs as job_store
from ..store.hotreads import hot_reads
from ..store.workspaces import Workspace
from .errors import USER
from .jobs import LocalControllerHeader, submit_job, wait_states

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], responses=USER,
                   route_class=FastJSONRoute)  # the credential before the body
RUN_PATH = "/api/v1/jobs/run"
MAX_WAIT_SECONDS = 60.0
DEFAULT_WAIT_SECONDS = 20.0


@router.post("/run", response_model=JobPublic, status_code=201)
async def run_job(body: JobSubmitRequest, workspace: JobSubmitter, engine: EngineDep,
                  settings: SettingsDep, notifier: NotifierDep, request: Request,
                  timeout_seconds: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS)] = DEFAULT_WAIT_SECONDS,
                  local_controller: LocalControllerHeader = None) -> Response:
    """Submit one job (as ``POST /api/v1/jobs``) and answer when it is finished, with its
    result, or after ``timeout_seconds`` with the record as it then is."""
    return await submit_and_wait(body, workspace, engine, settings, notifier, request,
                                 timeout_seconds, local_controller)


async def submit_and_wait(body: JobSubmitRequest, workspace: Workspace, engine: Any,
                          settings: Settings, notifier: Notifier, request: Request,
                          timeout_seconds: float, local_controller: str | None) -> Response:
    """The route's answer, once its workspace is within its rate limit; also
    ``fastwrites``'s, which reaches it without FastAPI."""
    # Taken before the submission commits: a finish from then on wakes the wait, which so
    # needs no first read of the job it has just stored.
    since = notifier.jobs_finished.snapshot()
    record = await run_in_threadpool(submit_job, body, workspace, engine, settings, notifier,
                                     local_controller)
    if record["state"] not in job_store.TERMINAL and timeout_seconds > 0:
        record = await _finished(record, since, timeout_seconds, workspace.id, engine,
                                 notifier, request)
    # Encoded here, as the fast reads do: the stored result is not validated again.
    return Response(jsonio.dumps(record), status_code=201, media_type="application/json")


async def _finished(record: dict[str, Any], since: Any, timeout_seconds: float,
                    workspace_id: str, engine: Any, notifier: Notifier,
                    request: Request) -> dict[str, Any]:
    """The record once the job is finished, or as it is when the wait runs out."""
    try:
        parked = notifier.watches.enter(workspace_id, None)
    except TooManyWatches:
        return record  # submitted all the same: the client waits on with /wait
    job_id = record["job_id"]

    async def read() -> list[dict[str, Any]]:
        found = await _read_record(engine, workspace_id, job_id)
        return [] if found is None else [found]

    try:
        states = await wait_states(WaitRequest(job_ids=[job_id], timeout_seconds=timeout_seconds,
                                               include_result=True),
                                   workspace_id, engine, notifier, request, known=[record],
                                   since=since, reader=read)
    finally:
        notifier.watches.leave(workspace_id, None, parked)
    return states[0] if states else record  # none: deleted meanwhile, as it was submitted


async def _read_record(engine: Any, workspace_id: str, job_id: str) -> dict[str, Any] | None:
    """The job's record as ``GET /api/v1/jobs/{id}`` gives it. Read on the event loop, as the
    fast reads are: one primary-key lookup through a statement compiled once is shorter than
    the hop to a thread; if the database does not answer it, the ordinary read in a thread
    does (and raises what the app answers)."""
    try:
        return hot_reads(engine).get_job(workspace_id=workspace_id, job_id=job_id)
    except job_store.Unavailable:
        return await run_in_threadpool(_job_record, engine, workspace_id, job_id)


def _job_record(engine: Any, workspace_id: str, job_id: str) -> dict[str, Any] | None:
    with read_tx(engine) as conn:
        return job_store.get_job(conn, workspace_id=workspace_id, job_id=job_id)
