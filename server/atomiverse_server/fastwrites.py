"""The three requests of every calculation a waiting client runs, answered below FastAPI.

An ASE calculator's energy-and-forces call is one ``POST /api/v1/jobs/run`` from the client,
the local controller's ``POST /api/v1/controllers/claim`` that the submission hands the job to,
and its ``POST /api/v1/controllers/complete``. Through FastAPI's middleware, routing,
dependency solving and parameter validation each cost the server about as much CPU as the
work itself (issue 28: a calculation's own cost was 20-30 ms, most of it the server's).

Here they reach the routes' own functions (``run.submit_and_wait``, ``controllers.answer_claim``
and ``controllers.record_reports``) straight from the ASGI scope when everything about them is
ordinary: one Bearer credential of the right kind that the server knows (from the auth cache,
or looked up and remembered there as ``deps`` does) and no cookie, no or
the expected query parameter, a JSON body that parses and fits the route's model, within the
route's size limit. It wraps the app from outside, as ``FastReads`` does, so these requests
skip FastAPI's middleware too. The credential is checked before the body is read, and the body
is read only up to its limit (the app's ``BodySizeLimit``'s): a body that says or turns out to
be larger goes to the app, which refuses it with its 413. Anything else goes on to the app
unchanged (a body already read is handed to it again), which answers it as it always has: a
malformed or invalid body gets its 422 from the app, in the app's one format. Errors raised by
the work itself (a 402, a 429, a database away) are answered as the app's handlers answer
them."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from atomiverse_core import jsonio
from atomiverse_core.schema import ClaimRequest, CompleteRequest, JobSubmitRequest
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import dberrors, deps, metrics
from .authcache import AuthCache, bearer_secret
from .bodylimit import BodyLimits, declared_length
from .ratelimit import within_job_rate
from .routes import controllers, run
from .security import API_KEY_PREFIX, CONTROLLER_TOKEN_PREFIX

CLAIM_PATH = "/api/v1/controllers/claim"
COMPLETE_PATH = "/api/v1/controllers/complete"
# What the run route's Query(ge=0, le=60) takes, written plainly; anything else (1e1, " 5",
# 61) goes to the route, which names the field in its 422.
_TIMEOUT = re.compile(r"[0-9]{1,2}(\.[0-9]{1,6})?")
_LOCAL_CONTROLLER = b"x-atomiverse-local-controller"
_MAX_LOCAL_CONTROLLER = 100  # the header's max_length on the route (routes/jobs.py)
Handler = Callable[[Any, Any, Scope, Receive], Awaitable[Response | None]]


class FastWrites:
    def __init__(self, app: ASGIApp, state: Any, limits: BodyLimits) -> None:
        self.app = app
        self._state = state  # the FastAPI app's state: engine, notifier, auth cache, once started
        self._limits = limits
        self._routes: dict[str, tuple[str, Handler]] = {
            run.RUN_PATH: (API_KEY_PREFIX, self._run),
            CLAIM_PATH: (CONTROLLER_TOKEN_PREFIX, self._claim),
            COMPLETE_PATH: (CONTROLLER_TOKEN_PREFIX, self._complete),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._routes.get(scope["path"]) if scope["type"] == "http" \
            and scope["method"] == "POST" else None
        who = None if route is None else await self._credential(scope, route[0])
        if route is None or who is None or not _json_content(scope["headers"]):
            await self.app(scope, receive, send)
            return
        limit, _ = self._limits.of("POST", scope["path"])
        declared = declared_length(scope)
        if declared is not None and declared > limit:
            await self.app(scope, receive, send)  # refused there, unread
            return
        read = await _read_body(receive, limit)
        if read is None:
            return  # the client went away while sending
        body, more = read
        if more or len(body) > limit:  # the app's limit counts it again and refuses it
            await self.app(scope, _replaying(body, receive, more), send)
            return
        response = await self._answer(route[1], who, body, scope, receive)
        if response is None:  # not ordinary: the app answers, from the same body
            await self.app(scope, _replaying(body, receive), send)
            return
        metrics.FAST_ANSWERS.labels(scope["path"].rsplit("/", 1)[-1]).inc()
        await response(scope, receive, send)

    async def _credential(self, scope: Scope, prefix: str) -> Any:
        """Who sent this, if its one Bearer credential is of ``prefix``'s kind and known: from
        the auth cache, or looked up (and remembered) as the app's dependency does. A lookup
        that expired (every second, per credential) used to send that request through the
        app: three to four times the CPU of this path, plus the same lookup."""
        cache: AuthCache | None = getattr(self._state, "auth_cache", None)
        secret = bearer_secret(scope["headers"])
        if cache is None or secret is None or not secret.startswith(prefix):
            return None
        kind = "controller" if prefix == CONTROLLER_TOKEN_PREFIX else "workspace"
        try:
            who = await deps.known_or_loaded(cache, kind, secret, deps.LOADERS[kind],
                                             self._state.engine)
        except dberrors.CONNECTION_ERRORS:  # the app looks again and answers in its format
            return None
        if who is None:  # the app answers 401 without asking the database a second time
            scope.setdefault("state", {})[deps.UNKNOWN_CREDENTIAL] = secret
        return who

    async def _answer(self, handler: Handler, who: Any, body: bytes, scope: Scope,
                      receive: Receive) -> Response | None:
        try:
            return await handler(who, body, scope, receive)
        except HTTPException as e:  # the work refused (402, 429, 507): the app's format
            return await http_exception_handler(Request(scope, receive), e)
        except dberrors.CONNECTION_ERRORS as e:  # 503 or 507, as the app's handler answers
            return await dberrors.database_error(Request(scope, receive), e)
        except RecursionError:  # a job nested past what its checks can walk
            return too_deep()

    async def _run(self, workspace: Any, body: bytes, scope: Scope,
                   receive: Receive) -> Response | None:
        timeout = _timeout_seconds(scope["query_string"])
        local_controller = _one_header(scope["headers"], _LOCAL_CONTROLLER)
        request = _parsed(body, JobSubmitRequest)
        if timeout is None or local_controller is False or request is None:
            return None
        state = self._state
        # As the route's dependency: the disk and the rate limit before the job is looked at.
        workspace = await within_job_rate(workspace, state.engine, state.settings)
        return await run.submit_and_wait(request, workspace, state.engine, state.settings,
                                         state.notifier, Request(scope, receive), timeout,
                                         local_controller)

    async def _claim(self, controller: Any, body: bytes, scope: Scope,
                     receive: Receive) -> Response | None:
        request = _parsed(body, ClaimRequest)
        if request is None or scope["query_string"]:
            return None
        state = self._state
        return await controllers.answer_claim(request, controller, state.engine,
                                              state.settings, state.notifier,
                                              Request(scope, receive))

    async def _complete(self, controller: Any, body: bytes, scope: Scope,
                        receive: Receive) -> Response | None:
        request = _parsed(body, CompleteRequest)
        if request is None or scope["query_string"]:
            return None
        state = self._state
        out = await run_in_threadpool(controllers.record_reports, request, controller,
                                      state.engine, state.settings, state.notifier)
        # The route's response model: these two fields only.
        return Response(jsonio.dumps({"accepted": out["accepted"], "rejected": out["rejected"]}),
                        media_type="application/json")


def too_deep() -> JSONResponse:
    """The answer to a body nested too deeply to handle (the app's handler's too)."""
    return JSONResponse(status_code=400, content={"detail": "body: JSON nested too deeply"})


def _json_content(headers: list[tuple[bytes, bytes]]) -> bool:
    """A body FastAPI reads as JSON: no content type, or plain ``application/json``."""
    types = [value for name, value in headers if name == b"content-type"]
    return not types or types == [b"application/json"]


def _one_header(headers: list[tuple[bytes, bytes]], wanted: bytes) -> str | None | bool:
    """The header's value, None without it, False if it is there twice or too long."""
    values = [value for name, value in headers if name == wanted]
    if not values:
        return None
    if len(values) > 1 or len(values[0]) > _MAX_LOCAL_CONTROLLER:
        return False
    return values[0].decode("latin-1")


def _timeout_seconds(query: bytes) -> float | None:
    """``timeout_seconds`` (default 20) if that is the only parameter and plainly valid."""
    if not query:
        return run.DEFAULT_WAIT_SECONDS
    try:
        pairs = parse_qsl(query.decode("ascii"), keep_blank_values=True)
    except UnicodeDecodeError:
        return None
    if len(pairs) != 1 or pairs[0][0] != "timeout_seconds" \
            or not _TIMEOUT.fullmatch(pairs[0][1]):
        return None
    value = float(pairs[0][1])
    return value if value <= run.MAX_WAIT_SECONDS else None


def _parsed(body: bytes, model: Any) -> Any:
    """The body as the route's model, or None (not JSON to orjson, NaN, too deep, invalid):
    the app then answers, naming what is wrong."""
    try:
        return model.model_validate(jsonio.loads(body))
    except (ValueError, RecursionError):  # orjson's and pydantic's errors are ValueErrors
        return None


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool] | None:
    """The body, read until it ends or passes ``limit`` bytes, and whether more is to come;
    None if the client went away."""
    chunks, seen = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        seen += len(chunk)
        more = message.get("more_body", False)
        if not more or seen > limit:
            return b"".join(chunks), more


def _replaying(body: bytes, receive: Receive, more: bool = False) -> Receive:
    """``receive`` with the body already read in front, for the app (``more``: the rest of
    the body is still to be received)."""
    pending = [{"type": "http.request", "body": body, "more_body": more}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed
