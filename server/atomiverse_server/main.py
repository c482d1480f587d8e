"""Builds the FastAPI app: state, lifespan, error format, routers. Nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from atomiverse_core import sdnotify
from atomiverse_core.assets import VENDOR_DIR
from atomiverse_core.heap import freeze_startup_heap
from atomiverse_core.localhome import server_secret
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from . import dberrors, embedded, metrics, pgnotify
from .authcache import AuthCache
from .bodylimit import SINGLE_JOB_ROUTE, BodyLimits, BodySizeLimit, single_job_limit
from .db import create_schema, make_engine
from .fastreads import FastReads
from .fastwrites import FastWrites, too_deep
from .notify import Notifier
from .routes import account, controllers, downloads, identity, jobs, pages, run, watch
from .scheduler import LeaseSweeper, start_scheduler
from .settings import Settings, get_settings
from .walcheckpoint import WalCheckpointer
from .workflows import Advancer


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.resolved_database_url())
        create_schema(engine)
        notifier = Notifier(fallback_seconds=settings.resolved_recheck_seconds(),
                            max_watches=settings.max_watches)
        notifier.bind(asyncio.get_running_loop())
        app.state.settings, app.state.engine, app.state.notifier = settings, engine, notifier
        app.state.metrics_registry = metrics.build_registry(engine)
        app.state.auth_cache = AuthCache(ttl_seconds=settings.auth_cache_seconds)
        extra = []
        supervisor = None
        app.state.identity_secret = None
        if settings.embedded:
            app.state.identity_secret = server_secret(settings.home)
            settings.local_controller_name = (settings.local_controller_name
                                              or embedded.local_controller_name())
            embedded.ensure_local_credentials(engine, settings.home)
            embedded.ensure_local_controller_row(engine, settings)
            supervisor = embedded.LocalControllerSupervisor(
                settings, settings.public_url or "http://127.0.0.1:8000")
            supervisor.ensure_running()
            # A backstop: the supervisor's watch thread restarts the controller at once.
            extra.append((supervisor.ensure_running, 30.0))
        app.state.local_controller = supervisor  # stopped first at shutdown (``__main__``)
        bridge = pgnotify.start_bridge(engine, notifier)  # other server processes' signals
        scheduler = start_scheduler(engine, settings, notifier, extra)
        sweeper = LeaseSweeper(engine, settings, notifier).start()
        checkpointer = app.state.wal_checkpointer = WalCheckpointer(engine).start()
        advancer = Advancer(engine, settings, notifier)
        advancer.start()
        freeze_startup_heap()
        sdnotify.notify("READY=1")
        try:
            yield
        finally:
            sdnotify.notify("STOPPING=1")
            scheduler.shutdown(wait=False)
            await asyncio.to_thread(sweeper.stop)
            await asyncio.to_thread(checkpointer.stop)
            if bridge is not None:
                await asyncio.to_thread(bridge.stop)
            await asyncio.to_thread(advancer.stop)
            if supervisor is not None:
                await asyncio.to_thread(supervisor.stop)
            engine.dispose()

    app = FastAPI(title="Atomiverse compute", version="0.1.0", lifespan=lifespan)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(RecursionError, _too_deep)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for database_failure in dberrors.CONNECTION_ERRORS:  # 503, or 507 for a full disk
        app.add_exception_handler(database_failure, dberrors.database_error)
    app.state.body_limits = body_limits(settings)
    app.add_middleware(BodySizeLimit, limits=app.state.body_limits)
    app.include_router(account.router)
    app.include_router(watch.router)
    app.include_router(run.router)  # before jobs': /run is no job id
    app.include_router(jobs.router)
    app.include_router(downloads.router)
    app.include_router(controllers.router)
    app.include_router(metrics.router)
    app.include_router(identity.router)
    app.include_router(pages.router)
    # 3Dmol.js lives with the core: the notebooks' 3D view (atomiverse_core.notebook) uses it
    # too. Mounted first: the /static mount would otherwise answer for /static/vendor.
    app.mount("/static/vendor", StaticFiles(directory=VENDOR_DIR), name="vendor")
    app.mount("/static", StaticFiles(packages=[("atomiverse_server", "static")]),
              name="static")
    return app


def create_served_app(settings: Settings | None = None) -> FastReads:
    """The app as the server process serves it: the reads clients repeat most, and the three
    requests of every calculation a waiting client runs, are answered in front of it, before
    FastAPI's own layers (its telemetry check, body limit and error middleware cost a GET as
    much as the read itself); everything else, the lifespan included, passes through to
    :func:`create_app`'s app."""
    app = create_app(settings)
    return FastReads(FastWrites(app, state=app.state, limits=app.state.body_limits),
                     state=app.state)


def body_limits(settings: Settings) -> BodyLimits:
    """One job's body is bounded by the atoms it may have; every other body by
    ``max_body_bytes``."""
    one_job = single_job_limit(settings.max_atoms)
    return BodyLimits(settings.max_body_bytes,
                      routes={SINGLE_JOB_ROUTE: one_job, ("POST", run.RUN_PATH): one_job})


async def _http_error(request: Request, exc: Exception) -> Response:
    """As FastAPI answers, except that a 405 lists every method the path supports (Starlette
    names only the methods of the first route matching the path)."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code != 405:
        return await http_exception_handler(request, exc)
    allowed = sorted({m for route in request.app.router.routes
                      if isinstance(route, APIRoute)
                      and route.matches({**request.scope, "method": "GET"})[0] != Match.NONE
                      for m in route.methods})
    return JSONResponse({"detail": "Method Not Allowed"}, status_code=405,
                        headers={"Allow": ", ".join(allowed)})


async def _too_deep(_request: Request, _exc: Exception) -> JSONResponse:
    return too_deep()


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """One readable ``field: reason`` line, plus the full list for programs."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
    detail = f"{loc or 'body'}: {first.get('msg', 'invalid')}"
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "not valid JSON")
        detail = f"body: not valid JSON at character {loc}: {reason}"
    return JSONResponse(status_code=422, content={
        "detail": detail,
        "errors": [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
                   for e in errors[:20]]})
