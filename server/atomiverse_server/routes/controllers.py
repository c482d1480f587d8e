"""The controller protocol: register, claim (long-poll), heartbeat, complete, release."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from atomiverse_core import jsonio
from atomiverse_core.schema import (
    MAX_LEASES_PER_REQUEST,
    ClaimRequest,
    ClaimResponse,
    CompleteRequest,
    CompleteResponse,
    ControllerRegister,
    ControllerRegistered,
    HeartbeatRequest,
    HeartbeatResponse,
    LeaseRef,
)
from fastapi import APIRouter, Body, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool

from .. import embedded, handoff, metrics
from ..db import read_tx, write_tx
from ..deps import (
    CurrentController,
    CurrentWorkspace,
    EngineDep,
    NotifierDep,
    Registrant,
    SettingsDep,
)
from ..jsonroute import FastJSONRoute
from ..notify import Notifier
from ..settings import Settings
from ..store import controllers as controller_store
from ..store import pools
from ..store.claimcheck import claim_check
from ..store.controllers import Controller
from ..store.workspaces import Workspace
from .errors import CONTROLLER
from .longpoll import first, until_disconnected

router = APIRouter(prefix="/api/v1/controllers", tags=["controllers"], responses=CONTROLLER,
                   route_class=FastJSONRoute)

# A controller accepts this many outstanding jobs per slot unless it says otherwise.
DEFAULT_CAPACITY_PER_SLOT = 1000


@router.post("/register", response_model=ControllerRegistered)
def register(body: ControllerRegister, registrant: Registrant, engine: EngineDep,
             settings: SettingsDep, request: Request, notifier: NotifierDep) -> dict[str, Any]:
    """With a workspace API key: register (or take over) a controller of that name and get a
    new token. With a controller token: the same controller comes back, token unchanged."""
    capacity = body.capacity or body.slots * DEFAULT_CAPACITY_PER_SLOT
    with write_tx(engine) as conn:
        pool_id = _pool_to_join(conn, registrant, body.pool, body.name)
        if isinstance(registrant, Controller):
            ctl = controller_store.refresh_controller(
                conn, controller_id=registrant.id, slots=body.slots,
                cores_per_job=body.cores_per_job, capacity=capacity, engines=body.engines,
                hostname=body.hostname)
            token = request.state.controller_token
        else:
            serves_managed = _is_embedded_local_controller(settings, registrant, body.name)
            ctl, token = controller_store.register_controller(
                conn, workspace_id=registrant.id, name=body.name, slots=body.slots,
                cores_per_job=body.cores_per_job, capacity=capacity, engines=body.engines,
                hostname=body.hostname, serves_managed=serves_managed, pool_id=pool_id)
        ended = 0 if body.holding is None else controller_store.end_leases_not_held(
            conn, controller=ctl, holding={ref.lease_id for ref in body.holding},
            max_attempts=settings.max_attempts)
    if body.holding is not None:  # a new process: the polls of the one before are stale
        notifier.claim_waiters.evict(ctl.id)
    if ended:
        notifier.jobs_pending.fire()
        notifier.finished(None)  # some may have failed for good: wake their waiters
    # Composites may wait for this target's engines (workflows._settled), or for children
    # whose leases just ended.
    notifier.controller_registered()
    return {"controller_id": ctl.id, "name": ctl.name, "token": token,
            "heartbeat_seconds": settings.heartbeat_seconds}


def _pool_to_join(conn: Any, registrant: Workspace | Controller, pool: str | None,
                  name: str) -> str | None:
    """The pool controller a registration joins: one of the same workspace (the workspace's
    key is the grant), itself no member of a pool. A controller coming back with its own token
    stays in the pool it joined."""
    if isinstance(registrant, Controller):
        return registrant.pool_id
    if pool is None:
        return None
    if pool == name:
        raise HTTPException(422, "pool: a controller cannot be a member of its own pool")
    ctl = controller_store.controller_by_name(conn, workspace_id=registrant.id, name=pool)
    if ctl is None:
        raise HTTPException(422, f"pool: no controller named {pool!r} in this workspace "
                                 "(`atomiverse scale` registers it)")
    if ctl.pool_id is not None:
        raise HTTPException(422, f"pool: {pool!r} is itself a member of a pool")
    return ctl.id


@router.get("/pool")
def pool_state(controller: CurrentController, engine: EngineDep,
               settings: SettingsDep) -> dict[str, Any]:
    """With a pool's controller token: its pending jobs and its members (slots, jobs held),
    what ``atomiverse scale`` sizes the batch scheduler's allocations by. A member not heard
    from for a lease period is gone (its jobs are back in the queue)."""
    with read_tx(engine) as conn:
        return pools.pool_state(conn, controller, seen_within_seconds=settings.lease_seconds)


def _is_embedded_local_controller(settings: Settings, registrant: Workspace, name: str) -> bool:
    """The managed pool is joined by grant, never by name: in embedded mode only the local
    workspace (whose key the server keeps 0600 in its home for its own controller) may register
    the local controller. Another workspace calling its controller ``local-<hostname>`` claimed
    other workspaces' managed jobs (issue 23)."""
    return (settings.embedded and name == settings.local_controller_name
            and registrant.name == embedded.LOCAL_WORKSPACE)


@router.get("")
def list_controllers(workspace: CurrentWorkspace, engine: EngineDep) -> dict[str, Any]:
    with read_tx(engine) as conn:
        return {"controllers": controller_store.list_controllers(conn,
                                                                 workspace_id=workspace.id)}


@router.post("/{name}/drain")
def drain(name: str, workspace: CurrentWorkspace, engine: EngineDep) -> dict[str, str]:
    """Ask a controller to drain: on its next heartbeat it stops claiming, finishes what it
    runs within its grace period, hands back the rest and exits."""
    with write_tx(engine) as conn:
        ctl = controller_store.controller_by_name(conn, workspace_id=workspace.id, name=name)
        if ctl is None:
            raise HTTPException(404, f"No controller named {name[:100]!r} in this workspace")
        controller_store.set_status(conn, controller_id=ctl.id, status="draining")
    return {"name": name, "status": "draining"}


@router.post("/claim", response_model=ClaimResponse)
async def claim(body: ClaimRequest, controller: CurrentController, engine: EngineDep,
                settings: SettingsDep, notifier: NotifierDep,
                request: Request) -> Response:
    """Long-poll: returns as soon as there is work for this controller, or empty-handed
    after ``wait_seconds``. While it waits, a submission may claim for it (``handoff``)."""
    return await answer_claim(body, controller, engine, settings, notifier, request)


async def answer_claim(body: ClaimRequest, controller: Controller, engine: Any,
                       settings: Settings, notifier: Notifier, request: Request) -> Response:
    """The claim route's answer; also ``fastwrites``'s, which reaches it without FastAPI."""
    deadline = time.monotonic() + body.wait_seconds
    generation = notifier.claim_waiters.generation(controller.id)
    while True:
        if notifier.claim_waiters.generation(controller.id) != generation:
            return Response(jsonio.dumps({"jobs": []}), media_type="application/json")
        event = notifier.jobs_pending.snapshot()  # before the look: later work wakes it
        freed = notifier.claim_waiters.freed(controller.id)  # and a slot freed later
        started = time.perf_counter()
        claimed = []
        # Most polls find nothing (a controller comes back as soon as it is handed a job):
        # a read on the event loop says so without the write transaction and the thread.
        if claim_check(engine).may_claim(controller):
            claimed = await run_in_threadpool(handoff.claim, engine, controller,
                                              body.max_jobs, settings.lease_seconds)
        if claimed:
            metrics.CLAIM_LATENCY.observe(time.perf_counter() - started)
        remaining = deadline - time.monotonic()
        if not claimed and remaining > 0 and not notifier.stopping:
            # Parked until the pending signal (this process's submissions and requeues, and
            # scheduler.PendingWatch for other server processes'), the poll's end, or the
            # client gone. The park itself notices a client already gone: no separate
            # ``is_disconnected`` first, whose cancel scope formatted the task's repr on
            # every poll (a claim poll a calculation, issue 28).
            parked = await _park(notifier, controller, body.max_jobs, (event, freed),
                                 remaining, request)
            if parked is None:  # the client went away: nobody to answer
                return Response(jsonio.dumps({"jobs": []}), media_type="application/json")
            claimed = parked
            if not claimed:
                continue
        metrics.JOBS_CLAIMED.inc(len(claimed))
        if claimed:
            notifier.jobs_changed.fire([job["job_id"] for job in claimed])
        # Encoded here: payloads are spliced in as stored, not parsed and re-validated.
        return Response(jsonio.dumps({"jobs": claimed}), media_type="application/json")


async def _park(notifier: Notifier, controller: Controller, max_jobs: int,
                seen: tuple[Any, int], timeout: float,
                request: Request) -> handoff.Claimed | None:
    """Wait until new work may have come, or ``timeout``. Returns the jobs a submission
    claimed for this poll meanwhile, if one did; else nothing, and the poll looks itself;
    None if the client went away (and nothing was claimed for it). ``seen``: the pending
    signal's event and the controller's ``freed`` count, both read before the poll's look."""
    event, freed = seen
    waiters = notifier.claim_waiters
    waiter = handoff.ClaimWaiter(controller, max_jobs, asyncio.get_running_loop())
    if not waiters.park(waiter, freed):
        return []  # a slot came free since the look: look again now
    gone = asyncio.ensure_future(until_disconnected(request))
    try:
        await first(notifier.jobs_pending.wait(event, timeout), waiter.handed, gone)
    finally:
        gone.cancel()
        left = waiters.leave(waiter)
    if left:
        return None if gone.done() and not gone.cancelled() else []
    jobs = await waiter.handed  # taken: the submission is claiming for us
    metrics.JOBS_HANDED_OFF.inc(len(jobs))
    return jobs


@router.post("/heartbeat", response_model=HeartbeatResponse)
def heartbeat(body: HeartbeatRequest, controller: CurrentController, engine: EngineDep,
              settings: SettingsDep) -> dict[str, Any]:
    with write_tx(engine) as conn:
        out = controller_store.heartbeat(
            conn, controller=controller,
            running=[(r.job_id, r.lease_id) for r in body.running],
            lease_seconds=settings.lease_seconds)
    return out


@router.post("/complete", response_model=CompleteResponse)
def complete(body: CompleteRequest, controller: CurrentController, engine: EngineDep,
             settings: SettingsDep, notifier: NotifierDep) -> dict[str, Any]:
    return record_reports(body, controller, engine, settings, notifier)


def record_reports(body: CompleteRequest, controller: Controller, engine: Any,
                   settings: Settings, notifier: Notifier) -> dict[str, Any]:
    """The complete route's work (in a worker thread); also ``fastwrites``'s. Answers more
    than ``CompleteResponse`` holds: the route's response model keeps its two fields."""
    with write_tx(engine) as conn:
        out = controller_store.complete_jobs(
            conn, controller=controller, reports=[dict(r) for r in body.reports],
            max_attempts=settings.max_attempts,
            managed_rate_per_core_hour=settings.managed_rate_per_core_hour)
    metrics.JOBS_REPORTED.labels("accepted").inc(len(out["accepted"]))
    metrics.JOBS_REPORTED.labels("rejected").inc(len(out["rejected"]))
    if out["finished"] or out["followers_settled"]:
        notifier.finished(None if out["followers_settled"] else out["finished"])
    if out.pop("children_finished"):
        notifier.children_finished()
    if out["accepted"] and controller.pool_id is not None:
        notifier.claim_waiters.wake(controller.id)  # its freed slots: see ClaimWaiters.wake
    if out["requeued"]:  # a retryable failure put a job back in the queue
        notifier.jobs_pending.fire()
        notifier.jobs_changed.fire(out["requeued"])
    return out


@router.post("/release")
def release(body: Annotated[list[LeaseRef], Body(max_length=MAX_LEASES_PER_REQUEST)],
            controller: CurrentController, engine: EngineDep,
            notifier: NotifierDep) -> dict[str, int]:
    """Hand unfinished jobs back (drain or shutdown) without spending an attempt."""
    with write_tx(engine) as conn:
        n = controller_store.release_jobs(conn, controller=controller,
                                          job_ids=[r.job_id for r in body])
    # A controller hands jobs back when it stops or drains: a claim poll of its own still
    # parked here (the claimer's last, not yet closed) must not take them straight back.
    notifier.claim_waiters.evict(controller.id)
    if n:
        notifier.jobs_pending.fire()
        notifier.jobs_changed.fire([r.job_id for r in body])
    return {"released": n}


@router.post("/deregister")
def deregister(controller: CurrentController, engine: EngineDep,
               notifier: NotifierDep) -> dict[str, str]:
    with write_tx(engine) as conn:
        controller_store.set_status(conn, controller_id=controller.id, status="offline")
    # Its last claim poll, still parked here, must not take jobs for a process that is
    # exiting: they stayed leased to nobody until the lease ran out (a scancelled SLURM
    # allocation's controller, issue 29).
    notifier.claim_waiters.evict(controller.id)
    return {"status": "offline"}
