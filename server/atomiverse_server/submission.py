"""Turning submitted entries into stored jobs: per-entry validation, routing, capacity.

Partial success: each entry is judged on its own; accepted ones are stored together in one
transaction, so a batch the client sees accepted is stored whole or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from atomiverse_core import jobtypes, qcschema
from atomiverse_core.jobs import Job
from atomiverse_core.jobtypes import describe_validation_error, parse_job
from pydantic import ValidationError
from sqlalchemy.engine import Connection

from . import security
from .cache import cache_key
from .scheduling import claim_ranks, estimated_cost
from .settings import Settings
from .store import controllers as controller_store
from .store import jobs as job_store
from .store import resultcache
from .store._time import now

MANAGED = "managed"
MAX_TARGET_LENGTH = 100


class EntryRejected(Exception):
    """One entry cannot be accepted; the message is what the user sees."""


@dataclass
class Route:
    compute_target: str  # "managed" or a controller name
    controller_id: str | None
    capacity_left: int | None = None
    engines: dict[str, str] = field(default_factory=dict)  # first one is the default
    cores_per_job: int = 1

    def engine_for(self, job: Job) -> tuple[str, str] | None:
        """The engine and version that will run this job, or None if unknown (no
        controller has registered for the target yet)."""
        if not self.engines:
            return None
        # The default engine, unless the level needs another (ALPB: tblite; GFN-FF: xtb).
        fits = [e for e in self.engines if job.level_of_theory.runs_on(e)]
        if job.engine is None and not fits:
            raise EntryRejected(f"Invalid job payload: level_of_theory: "
                                f"{job.level_of_theory.engine_requirement()}, which "
                                f"'{self.compute_target}' does not have (it has: "
                                f"{', '.join(self.engines)})")
        name = job.engine or fits[0]
        if name not in self.engines:
            raise EntryRejected(f"Invalid job payload: engine: '{self.compute_target}' has no "
                                f"{name} engine (it has: {', '.join(self.engines)})")
        return name, self.engines[name]


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
            pool = controller_store.managed_pool(self.conn)
            return Route(MANAGED, None, engines=pool.engines, cores_per_job=pool.cores_per_job)
        ctl = self._local_controller() if target == "local" else None
        if ctl is None:
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
        return Route(ctl.name, ctl.id, ctl.capacity - used.get(ctl.id, 0), engines=ctl.engines,
                     cores_per_job=ctl.cores_per_job)

    def managed_cores_per_job(self) -> int:
        route = self._routes.get(None) or self._routes.get(MANAGED)
        return route.cores_per_job if isinstance(route, Route) else 1

    def _local_controller(self) -> Any:
        """The controller the client names as its local one, if this workspace has it."""
        if not self.local_controller:
            return None
        return controller_store.controller_by_name(self.conn, workspace_id=self.workspace_id,
                                                   name=self.local_controller)

    def _local_name(self) -> str:
        """'local' without a controller of the client's naming: the server's own."""
        return self.settings.local_controller_name or (self.local_controller or "local")


def _check_target_shape(target: Any) -> None:
    if target is not None and not isinstance(target, str):
        raise EntryRejected("compute_target: must be a string or null")
    if target is not None and len(target) > MAX_TARGET_LENGTH:
        raise EntryRejected(f"compute_target: at most {MAX_TARGET_LENGTH} characters")


def _check_atom_count_cheaply(payload: dict[str, Any], settings: Settings) -> None:
    """The cap on list lengths before the model parses (and checks distances of) every atom:
    a 100 000-atom job cost minutes of server CPU before it was refused (issue 23)."""
    atoms = payload.get("atoms")
    if not isinstance(atoms, dict):
        return  # the model names what is wrong
    for field in ("numbers", "positions"):
        items = atoms.get(field)
        if isinstance(items, list) and len(items) > settings.max_atoms:
            raise EntryRejected(f"Invalid job payload: atoms.{field}: {len(items)} atoms is "
                                f"more than the maximum of {settings.max_atoms}")


def validate_job(payload: Any, settings: Settings) -> Job:
    if not isinstance(payload, dict):
        raise EntryRejected("Invalid job payload: job: must be an object")
    if qcschema.is_atomic_input(payload):  # stored as the job it describes
        payload = _from_atomic_input(payload, settings)
    _check_atom_count_cheaply(payload, settings)
    try:
        job = parse_job(payload)
    except ValidationError as e:
        raise EntryRejected(f"Invalid job payload: {describe_validation_error(e)}") from None
    if len(job.atoms) > settings.max_atoms:
        raise EntryRejected(f"Invalid job payload: atoms: {len(job.atoms)} atoms is more than "
                            f"the maximum of {settings.max_atoms}")
    return job


def _from_atomic_input(data: dict[str, Any], settings: Settings) -> dict[str, Any]:
    molecule = data.get("molecule")
    symbols = molecule.get("symbols") if isinstance(molecule, dict) else None
    if isinstance(symbols, list) and len(symbols) > settings.max_atoms:
        raise EntryRejected(f"Invalid job payload: molecule.symbols: {len(symbols)} atoms is "
                            f"more than the maximum of {settings.max_atoms}")
    try:
        return qcschema.payload_from_atomic_input(data)
    except qcschema.QCSchemaError as e:
        raise EntryRejected(f"Invalid job payload: {e}") from None
    except (TypeError, ValueError) as e:
        raise EntryRejected(f"Invalid job payload: molecule: {e}") from None


def job_row(p: Prepared, *, workspace_id: str, route: Route, settings: Settings,
            key: str | None, created_at: float, claim_rank: int,
            parent: tuple[str, int] | None = None) -> dict[str, Any]:
    job = p.job
    assert job is not None
    composite = jobtypes.of(job).is_composite
    return {
        "id": security.new_id(),
        "workspace_id": workspace_id,
        "name": job.name,
        "job_type": job.job_type,
        # A composite is never claimed: it runs as its children (workflows.py).
        "state": "running" if composite else "pending",
        "payload": p.payload,
        "compute_target": route.compute_target,
        "controller_id": route.controller_id,
        "attempts": 0,
        "walltime_seconds": job.walltime_seconds or settings.default_walltime_seconds,
        "created_at": created_at,
        "claim_rank": claim_rank,
        "billed_core_seconds": 0.0,
        "preview": p.preview,
        "cache_key": key,
        # Every row names every column: one executemany needs one shape.
        "cached_from": None,
        "result": None,
        "started_at": created_at if composite else None,
        "finished_at": None,
        "parent_id": parent[0] if parent else None,
        "step": parent[1] if parent else None,
    }


@dataclass
class Prepared:
    """One entry after the checks that need no database."""

    job: Job | None
    target: Any = None
    error: str | None = None
    payload: dict[str, Any] | None = None
    preview: dict[str, Any] | None = None
    cost: float = 0.0  # scheduling.estimated_cost; a refused entry's is never used


def prepare_entries(entries: list[Any], settings: Settings) -> list[Prepared]:
    """Validate every entry on its own. Pure CPU: done before the write transaction, so
    other writers are not held up while a thousand molecules are checked."""
    prepared = []
    for entry in entries:
        try:
            job, target = _unpack(entry)
            _check_target_shape(target)
            model = validate_job(job, settings)
        except EntryRejected as e:
            prepared.append(Prepared(None, error=str(e)))
            continue
        prepared.append(Prepared(model, target, payload=model.model_dump(mode="json"),
                                 preview=model.atoms.preview(), cost=estimated_cost(model)))
    return prepared


def submit_entries(conn: Connection, *, workspace_id: str, prepared: list[Prepared],
                   settings: Settings, local_controller: str | None,
                   parent: tuple[str, int] | None = None,
                   stored: list[dict[str, Any]] | None = None
                   ) -> tuple[dict[str, Any], frozenset[str | None], list[str]]:
    """Route, answer from the cache, check capacity and balance, and store a prepared
    batch in one transaction. Returns the response body of submit-batch, where the new
    claimable jobs went (controller ids, None for the managed pool), and the new composite
    jobs, which ``workflows.advance_new`` starts. ``parent``: the composite job and step
    these entries are children of. ``stored``: given a list, the rows stored are added to
    it (every column the row was given)."""
    router = Router(conn, workspace_id=workspace_id, settings=settings,
                    local_controller=local_controller)
    results: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    keyed = _route_and_key(router, prepared)
    cache = ResultCache(conn, workspace_id=workspace_id,
                        keys={k for _, _, k, use in keyed if k and use})
    # One instant for the whole batch: claims take batches in created_at order, each in its
    # claim_rank order.
    created_at = now()
    ranks = claim_ranks([p.cost for p in prepared])
    for p, (route, error, key, use_cache), rank in zip(prepared, keyed, ranks, strict=True):
        if error is not None:
            results.append(_failed(error))
            continue
        composite = p.job is not None and jobtypes.of(p.job).is_composite
        hit = cache.lookup(key) if key and use_cache and not composite else None
        # A composite's children take the capacity, not the composite; and they are bounded
        # by their composite's own caps, so they do not wait on it.
        if hit is None and not composite and parent is None:
            try:
                router.take_capacity(route)
            except EntryRejected as e:
                results.append(_failed(str(e)))
                continue
        row = job_row(p, workspace_id=workspace_id, route=route, settings=settings,
                      key=None if composite else key, created_at=created_at, claim_rank=rank,
                      parent=parent)
        if hit is not None:
            row.update(hit.row_values(row["created_at"]))
            results.append({"job_id": row["id"], "state": row["state"], "status": "cache_hit",
                            "cached_from": hit.job_id})
        else:
            if not composite:
                cache.remember_leader(key, row["id"])
            results.append({"job_id": row["id"], "state": row["state"],
                            "status": "submitted"})
        rows.append(row)
    check_balance(conn, workspace_id=workspace_id, rows=rows, settings=settings,
                  cores_per_job=router.managed_cores_per_job())
    job_store.insert_jobs(conn, rows)
    if stored is not None:
        stored.extend(rows)
    submitted = sum(r["status"] == "submitted" for r in results)
    cache_hits = sum(r["status"] == "cache_hit" for r in results)
    claimable = frozenset(r["controller_id"] for r in rows
                          if r["state"] == "pending" and not r["cached_from"])
    new_composites = [r["id"] for r in rows if r["state"] == "running"]
    return {"total": len(results), "submitted": submitted + cache_hits,
            "failed": len(results) - submitted - cache_hits, "cache_hits": cache_hits,
            "jobs": results}, claimable, new_composites


def _failed(error: str) -> dict[str, Any]:
    return {"job_id": None, "state": None, "status": "failed", "error": error}


def _route_and_key(router: Router, prepared: list[Prepared]
                   ) -> list[tuple[Route | None, str | None, str | None, bool]]:
    """(route, error, cache key, use cache) per entry."""
    out: list[tuple[Route | None, str | None, str | None, bool]] = []
    for p in prepared:
        if p.job is None:
            out.append((None, p.error, None, False))
            continue
        try:
            route = router.route(p.target)
            engine = route.engine_for(p.job)
            settle = jobtypes.of(p.job).for_engines  # defaults that depend on the engines
            if settle and route.engines:
                p.job = settle(p.job, tuple(route.engines))
                p.payload = p.job.model_dump(mode="json")
        except (EntryRejected, ValueError) as e:  # ValueError: what the engines cannot do
            error = str(e) if isinstance(e, EntryRejected) else f"Invalid job payload: {e}"
            out.append((None, error, None, False))
            continue
        key = cache_key(p.job, engine=engine[0], engine_version=engine[1]) if engine else None
        out.append((route, None, key, p.job.use_cache))
    return out


class InsufficientBalance(Exception):
    """The whole request is refused (402) and nothing is stored."""


# The pre-flight estimate assumes every managed job runs this long.
ESTIMATED_SECONDS_PER_JOB = 3600.0


def check_balance(conn: Connection, *, workspace_id: str, rows: list[dict[str, Any]],
                  settings: Settings, cores_per_job: int) -> None:
    rate = settings.managed_rate_per_core_hour
    to_compute = sum(1 for r in rows if r["compute_target"] == MANAGED
                     and r["state"] == "pending" and not r.get("cached_from"))
    if not to_compute or rate <= 0:
        return
    estimate = to_compute * ESTIMATED_SECONDS_PER_JOB / 3600.0 * cores_per_job * rate
    balance = job_store.workspace_balance(conn, workspace_id=workspace_id)
    if balance < estimate:
        raise InsufficientBalance(
            f"Insufficient balance: {to_compute} managed jobs are estimated at {estimate:.2f} "
            f"(1 hour x {cores_per_job} cores x {rate:g} per core-hour each) but the balance "
            f"is {balance:.2f}")


@dataclass
class CacheHit:
    job_id: str
    result: dict[str, Any] | None  # None: the source is still pending or running

    def row_values(self, t: float) -> dict[str, Any]:
        if self.result is None:
            # A follower: not claimable; completes with its leader's result.
            return {"state": "pending", "cached_from": self.job_id}
        return {"state": "done", "cached_from": self.job_id, "result": self.result,
                "started_at": t, "finished_at": t, "billed_core_seconds": 0.0}


class ResultCache:
    """Answers from a done job with the same cache key in the workspace, or follows an
    identical job still in flight (in the database or earlier in this batch). All keys of
    a batch are looked up in one query."""

    def __init__(self, conn: Connection, *, workspace_id: str, keys: set[str]) -> None:
        self._found = resultcache.find_cached(conn, workspace_id=workspace_id, cache_keys=keys)
        self._leaders: dict[str, str] = {}

    def lookup(self, key: str) -> CacheHit | None:
        if key in self._leaders:
            return CacheHit(self._leaders[key], None)
        found = self._found.get(key)
        return CacheHit(found["job_id"], found["result"]) if found else None

    def remember_leader(self, key: str | None, job_id: str) -> None:
        if key is not None:
            self._leaders.setdefault(key, job_id)


def _unpack(entry: Any) -> tuple[Any, Any]:
    if not isinstance(entry, dict) or "job" not in entry:
        raise EntryRejected("Invalid job payload: entry: must be an object "
                            "{\"job\": {...}, \"compute_target\": ...}")
    extra = set(entry) - {"job", "compute_target"}
    if extra:
        raise EntryRejected(f"Invalid job payload: {sorted(extra)[0]}: unknown field")
    return entry["job"], entry.get("compute_target")
