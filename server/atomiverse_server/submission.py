"""Turning submitted entries into stored jobs: per-entry validation, routing, capacity.

Partial success: each entry is judged on its own; accepted ones are stored together in one
transaction, so a batch the client sees accepted is stored whole or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from atomiverse.jobs import Job, describe_validation_error, parse_job
from pydantic import ValidationError
from sqlalchemy.engine import Connection

from . import security
from .settings import Settings
from .store import controllers as controller_store
from .store import jobs as job_store
from .store._time import now

MANAGED = "managed"


class EntryRejected(Exception):
    """One entry cannot be accepted; the message is what the user sees."""


@dataclass
class Route:
    compute_target: str  # "managed" or a controller name
    controller_id: str | None
    capacity_left: int | None = None


class Router:
    """Resolves ``compute_target`` values for one request, remembering capacity used so far
    so that it is tracked cumulatively across a batch."""

    def __init__(self, conn: Connection, *, workspace_id: str, settings: Settings,
                 local_controller: str | None) -> None:
        self.conn = conn
        self.workspace_id = workspace_id
        self.settings = settings
        self.local_controller = local_controller
        self._routes: dict[str | None, Route | str] = {}

    def route(self, target: Any) -> Route:
        if target is not None and not isinstance(target, str):
            raise EntryRejected("compute_target: must be a string or null")
        if target not in self._routes:
            try:
                self._routes[target] = self._resolve(target)
            except EntryRejected as e:
                self._routes[target] = str(e)
        route = self._routes[target]
        if isinstance(route, str):
            raise EntryRejected(route)
        return route

    def take_capacity(self, route: Route) -> None:
        if route.capacity_left is None:
            return
        if route.capacity_left <= 0:
            raise EntryRejected(f"BYOC controller at capacity: '{route.compute_target}' accepts "
                                f"no more outstanding jobs")
        route.capacity_left -= 1

    def _resolve(self, target: str | None) -> Route:
        if target is None or target == MANAGED:
            if not (self.settings.managed_enabled or self.settings.embedded):
                raise EntryRejected("Managed compute disabled on this server: use "
                                    "compute_target='local' or a controller name")
            return Route(MANAGED, None)
        name = self._local_name() if target == "local" else target
        ctl = controller_store.controller_by_name(self.conn, workspace_id=self.workspace_id,
                                                  name=name)
        if ctl is None:
            if target == "local":
                raise EntryRejected("No local controller is registered for this workspace: "
                                    "start one with `atomiverse controller --server URL`")
            raise EntryRejected(f"Unknown compute target '{target}': no controller of that "
                                f"name is registered in this workspace")
        used = job_store.outstanding_by_controller(self.conn, controller_ids=[ctl.id])
        return Route(ctl.name, ctl.id, ctl.capacity - used.get(ctl.id, 0))

    def _local_name(self) -> str:
        if self.local_controller and controller_store.controller_by_name(
                self.conn, workspace_id=self.workspace_id, name=self.local_controller):
            return self.local_controller
        return self.settings.local_controller_name or (self.local_controller or "local")


def validate_job(payload: Any, settings: Settings) -> Job:
    if not isinstance(payload, dict):
        raise EntryRejected("Invalid job payload: job: must be an object")
    try:
        job = parse_job(payload)
    except ValidationError as e:
        raise EntryRejected(f"Invalid job payload: {describe_validation_error(e)}") from None
    if len(job.atoms) > settings.max_atoms:
        raise EntryRejected(f"Invalid job payload: atoms: {len(job.atoms)} atoms is more than "
                            f"the maximum of {settings.max_atoms}")
    return job


def job_row(job: Job, *, workspace_id: str, route: Route, settings: Settings) -> dict[str, Any]:
    return {
        "id": security.new_id(),
        "workspace_id": workspace_id,
        "name": job.name,
        "job_type": job.job_type,
        "state": "pending",
        "payload": job.model_dump(mode="json"),
        "compute_target": route.compute_target,
        "controller_id": route.controller_id,
        "attempts": 0,
        "walltime_seconds": job.walltime_seconds or settings.default_walltime_seconds,
        "created_at": now(),
        "billed_core_seconds": 0.0,
        "preview": job.atoms.preview(),
    }


def submit_entries(conn: Connection, *, workspace_id: str, entries: list[Any],
                   settings: Settings, local_controller: str | None) -> dict[str, Any]:
    """Validate, route and store a batch; returns the response body of submit-batch."""
    router = Router(conn, workspace_id=workspace_id, settings=settings,
                    local_controller=local_controller)
    results: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for entry in entries:
        try:
            job, target = _unpack(entry)
            route = router.route(target)
            job_model = validate_job(job, settings)
            router.take_capacity(route)
        except EntryRejected as e:
            results.append({"job_id": None, "state": None, "status": "failed", "error": str(e)})
            continue
        row = job_row(job_model, workspace_id=workspace_id, route=route, settings=settings)
        rows.append(row)
        results.append({"job_id": row["id"], "state": "pending", "status": "submitted"})
    job_store.insert_jobs(conn, rows)
    submitted = sum(r["status"] == "submitted" for r in results)
    cache_hits = sum(r["status"] == "cache_hit" for r in results)
    return {"total": len(results), "submitted": submitted + cache_hits,
            "failed": len(results) - submitted - cache_hits, "cache_hits": cache_hits,
            "jobs": results}


def _unpack(entry: Any) -> tuple[Any, Any]:
    if not isinstance(entry, dict) or "job" not in entry:
        raise EntryRejected("Invalid job payload: entry: must be an object "
                            "{\"job\": {...}, \"compute_target\": ...}")
    extra = set(entry) - {"job", "compute_target"}
    if extra:
        raise EntryRejected(f"Invalid job payload: {sorted(extra)[0]}: unknown field")
    return entry["job"], entry.get("compute_target")
