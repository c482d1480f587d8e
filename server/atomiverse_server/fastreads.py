"""The reads clients repeat most, answered below FastAPI.

``GET /api/v1/jobs/{id}`` and ``GET /api/v1/jobs`` (a list page) are what a script that
follows its jobs, a page that shows them and a tool that pages through them send over and
over. Through FastAPI's routing, dependency resolution, thread hop and response validation
one such read cost the server about 2.5 ms of CPU, ten times what the work itself takes.

Here they are answered straight from the ASGI scope when everything about them is ordinary:
a Bearer credential the auth cache already knows (``deps`` filled it on an earlier request of
this client, less than a second ago), a job of that workspace, plain query parameters. The
record is the store's own (the same function the routes use), encoded once. Anything else
(no or unknown credential, a cookie, an unknown job, an odd or invalid parameter) goes on to
the app unchanged, which answers it as it always has: errors keep their one format and place.

The read runs on the event loop: a primary-key lookup or one page by index is shorter than
the thread hop that would otherwise carry it."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from atomiverse_core import jsonio
from starlette.types import ASGIApp, Receive, Scope, Send

from .authcache import AuthCache, bearer_secret
from .store import jobs as job_store
from .store.hotreads import HotReads, hot_reads

_JOB_PATH = re.compile(r"/api/v1/jobs/([A-Za-z0-9_-]{1,64})")
_LIST_PATH = "/api/v1/jobs"
_STATES = frozenset({"pending", "running", "done", "failed", "cancelled"})
# The bounds the list route declares (routes/jobs.py); a value outside goes to the route,
# which names the field in its 422.
_MAX_LIMIT, _MAX_CURSOR, _MAX_NAME = 200, 200, 120


class FastReads:
    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app = app
        self.state = state  # the FastAPI app's state (engine, auth cache, notifier), once started

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            try:
                body = self._answer(scope)
            except Exception:  # noqa: BLE001  (the driver's own errors: this runs below SQLAlchemy)
                # The database failed (restarting?): the app reads again, and answers a
                # failure in its one format (503 with Retry-After, dberrors).
                body = None
            if body is not None:
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _answer(self, scope: Scope) -> bytes | None:
        try:
            return self._fast_answer(scope)
        except job_store.Unavailable:
            return None  # the app's own read says what is wrong (or succeeds on retry)

    def _fast_answer(self, scope: Scope) -> bytes | None:
        path = scope["path"]
        if path == _LIST_PATH:
            params = _list_params(scope["query_string"])
            if params is None:
                return None
            workspace_id = self._workspace_id(scope)
            return None if workspace_id is None else self._list(workspace_id, params)
        match = _JOB_PATH.fullmatch(path)
        if match is None or scope["query_string"]:
            return None
        workspace_id = self._workspace_id(scope)
        return None if workspace_id is None else self._job(workspace_id, match.group(1))

    def _workspace_id(self, scope: Scope) -> str | None:
        cache: AuthCache | None = getattr(self.state, "auth_cache", None)
        secret = bearer_secret(scope["headers"])
        if cache is None or secret is None:
            return None
        found, workspace = cache.lookup("workspace", secret)
        return getattr(workspace, "id", None) if found else None

    def _reads(self) -> HotReads:
        return hot_reads(self.state.engine)

    def _job(self, workspace_id: str, job_id: str) -> bytes | None:
        record = self._reads().get_job(workspace_id=workspace_id, job_id=job_id)
        return None if record is None else jsonio.dumps(record)

    def _list(self, workspace_id: str, params: dict[str, Any]) -> bytes | None:
        try:
            page = self._reads().list_jobs(workspace_id=workspace_id, **params)
        except job_store.InvalidCursor:
            return None
        return jsonio.dumps(page)


def _list_params(query: bytes) -> dict[str, Any] | None:
    """The list route's parameters if every one is present at most once and valid."""
    try:
        pairs = parse_qsl(query.decode("ascii"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        return None
    given = dict(pairs)
    if len(given) != len(pairs) or not set(given) <= {"limit", "cursor", "state", "name"}:
        return None
    limit = given.get("limit", "50")
    if not limit.isdigit() or not 1 <= int(limit) <= _MAX_LIMIT:
        return None
    state = given.get("state")
    cursor, name = given.get("cursor"), given.get("name")
    if state is not None and state not in _STATES or cursor is not None and (
            not cursor or len(cursor) > _MAX_CURSOR) or name is not None and len(name) > _MAX_NAME:
        return None
    return {"limit": int(limit), "cursor": cursor, "state": state, "name_contains": name}
