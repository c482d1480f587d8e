"""The caller's workspace and its limits; health."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from .. import __name__ as _pkg
from ..db import read_tx
from ..deps import CurrentWorkspace, EngineDep, SettingsDep
from ..jsonroute import FastJSONRoute
from ..store import jobs as job_store
from .errors import errors

router = APIRouter(tags=["account"], route_class=FastJSONRoute)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok", "service": _pkg}


@router.get("/api/v1/account", responses=errors(400, 401, 413, 422))
def account(workspace: CurrentWorkspace, settings: SettingsDep,
            engine: EngineDep) -> dict[str, Any]:
    with read_tx(engine) as conn:  # the balance as of now, not as of the last sign-in
        balance = job_store.workspace_balance(conn, workspace_id=workspace.id)
    return {
        "workspace": workspace.name,
        "balance": balance,
        "limits": {
            "max_batch_size": settings.max_batch_size,
            "batch_rate_per_minute": settings.batch_rate_per_minute,
            "job_rate_per_minute": settings.job_rate_per_minute,
            "max_atoms": settings.max_atoms,
        },
        "managed_compute": settings.managed_enabled or settings.embedded,
        "managed_rate_per_core_hour": settings.managed_rate_per_core_hour,
    }
