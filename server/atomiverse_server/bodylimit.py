"""Refuse request bodies over a size limit before they are read whole: by Content-Length
at once, and for chunked uploads as soon as the running count passes the limit.

One route has a tighter limit of its own: ``POST /api/v1/jobs`` carries one job of at most
``max_atoms`` atoms, which needs far less than ``JOB_BYTES_PER_ATOM`` bytes an atom however it
is formatted. Parsing the JSON is what a huge job costs (a 100 000-atom job is 6 MiB: ~60 ms of
server CPU in orjson alone, before the atom-count cap can look), and the job rate limit allows
600 a minute; refused by its size, it costs nothing (issue 23)."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _TooLarge(BaseException):
    # Not an Exception: FastAPI turns any Exception raised while reading a body into a 400,
    # and this one must reach the middleware to become a 413.
    pass


JOB_BYTES_PER_ATOM = 1024
JOB_BYTES_OVERHEAD = 64 * 1024
SINGLE_JOB_ROUTE = ("POST", "/api/v1/jobs")


def single_job_limit(max_atoms: int) -> tuple[int, str]:
    """The body limit of ``POST /api/v1/jobs`` (bytes) and what it is, for the 413."""
    limit = max_atoms * JOB_BYTES_PER_ATOM + JOB_BYTES_OVERHEAD
    return limit, (f"the limit of {limit} bytes for one job ({JOB_BYTES_PER_ATOM} bytes an "
                   f"atom for the maximum of {max_atoms} atoms, and {JOB_BYTES_OVERHEAD} more)")


class BodyLimits:
    """``routes``: (method, path) -> (limit in bytes, what the limit is), tighter limits for
    single routes; every other request has ``max_bytes``."""

    def __init__(self, max_bytes: int,
                 routes: dict[tuple[str, str], tuple[int, str]] | None = None) -> None:
        self.max_bytes = max_bytes
        self.routes = routes or {}

    def of(self, method: str, path: str) -> tuple[int, str]:
        """The limit of this request's body in bytes, and what it is (for the 413)."""
        limit, what = self.routes.get((method, path.rstrip("/")),
                                      (self.max_bytes, f"the limit of {self.max_bytes} bytes"))
        if limit > self.max_bytes:
            return self.max_bytes, f"the limit of {self.max_bytes} bytes"
        return limit, what


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length, if it sent a plain one."""
    declared = dict(scope["headers"]).get(b"content-length")
    return int(declared) if declared is not None and declared.isdigit() else None


class BodySizeLimit:
    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, what = self.limits.of(scope["method"], scope["path"])
        declared = declared_length(scope)
        if declared is not None and declared > limit:
            await self._refuse(send, what)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send, what)

    async def _refuse(self, send: Send, what: str) -> None:
        body = json.dumps({"detail": f"request body is larger than {what}"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
