"""The caller's workspace and its limits; health."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from .. import __name__ as _pkg
from ..deps import CurrentWorkspace, SettingsDep
from .errors import errors

router = APIRouter(tags=["account"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok", "service": _pkg}


@router.get("/api/v1/account", responses=errors(400, 401, 413, 422))
def account(workspace: CurrentWorkspace, settings: SettingsDep) -> dict[str, Any]:
    return {
        "workspace": workspace.name,
        "balance": workspace.balance,
        "limits": {
            "max_batch_size": settings.max_batch_size,
            "batch_rate_per_minute": settings.batch_rate_per_minute,
            "job_rate_per_minute": settings.job_rate_per_minute,
            "max_atoms": settings.max_atoms,
        },
        "managed_compute": settings.managed_enabled or settings.embedded,
        "managed_rate_per_core_hour": settings.managed_rate_per_core_hour,
    }
