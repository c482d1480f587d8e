"""Submission rate limits, taken before the body is validated: a batch over its limit was
refused with 429 only after every job in it had been checked (~5 s of server CPU for a large
one), and requests refused as invalid did not count at all (issue 23). As route dependencies
these run after authentication and before FastAPI validates the body, so every authenticated
submission counts, valid or not. Before them, the cheapest check of all: a server whose disk is
nearly full takes no new work (``diskspace``)."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.engine import Engine

from .db import write_tx
from .deps import CurrentWorkspace, EngineDep, SettingsDep
from .diskspace import refuse_new_work_if_disk_nearly_full
from .store import limits
from .store.workspaces import Workspace

_ReplayKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]


def _take(engine: Engine, kind: str, workspace_id: str, per_minute: int,
          replay_key: str | None) -> float | None:
    with write_tx(engine) as conn:
        # A retry of a batch already answered gets that answer back without spending more.
        if replay_key and limits.find_response(conn, workspace_id=workspace_id,
                                               key=replay_key) is not None:
            return None
        return limits.take(conn, key=f"{kind}:{workspace_id}", per_minute=per_minute)


async def _enforce(kind: str, workspace: Workspace, engine: Engine, settings: Any,
                   per_minute: int, replay_key: str | None = None) -> Workspace:
    refuse_new_work_if_disk_nearly_full(settings)
    # One user on one machine: the embedded server has no one to share with.
    if settings.embedded:
        return workspace
    wait = await run_in_threadpool(_take, engine, kind, workspace.id, per_minute, replay_key)
    if wait is not None:
        seconds = max(1, math.ceil(wait))
        raise HTTPException(429, f"Rate limit: at most {per_minute} {kind} submissions per "
                                 f"minute; retry in {seconds} s",
                            headers={"Retry-After": str(seconds)})
    return workspace


async def _batch_submitter(workspace: CurrentWorkspace, engine: EngineDep,
                           settings: SettingsDep, replay_key: _ReplayKey = None) -> Workspace:
    return await _enforce("batch", workspace, engine, settings,
                          settings.batch_rate_per_minute, replay_key)


async def within_job_rate(workspace: Workspace, engine: Engine, settings: Any) -> Workspace:
    """The workspace, if it may submit one more job now (else 429, or 507 for a full disk):
    the route's dependency, and ``fastwrites``'s check before it submits."""
    return await _enforce("job", workspace, engine, settings, settings.job_rate_per_minute)


async def _job_submitter(workspace: CurrentWorkspace, engine: EngineDep,
                         settings: SettingsDep) -> Workspace:
    return await within_job_rate(workspace, engine, settings)


# The workspace of a submission that is within its rate limit (checked before the body).
BatchSubmitter = Annotated[Workspace, Depends(_batch_submitter)]
JobSubmitter = Annotated[Workspace, Depends(_job_submitter)]
