"""Request bodies decoded by orjson instead of the standard library.

FastAPI reads a JSON body through ``Request.json()``; this route class hands it a request
whose ``json()`` uses orjson. Python's own ``json.dumps`` (and so many careless clients)
writes NaN and Infinity, which orjson rejects: such a body is read again by the standard
library, so a NaN position fails its own batch entry with the field named, not the whole
request. A malformed body still raises ``json.JSONDecodeError`` and gets FastAPI's 422.
Responses need nothing: with a ``response_model`` FastAPI already serialises in pydantic's
Rust core.

A request that may carry a body must first show a credential the server knows: FastAPI reads
and parses the body before the route's own authentication runs (issue 23)."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from atomiverse_core import jsonio
from fastapi import Request, Response
from fastapi.routing import APIRoute

from .deps import require_known_credential

_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})


class _FastJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = jsonio.loads(body)
            except jsonio.JSONDecodeError:
                self._json = json.loads(body)  # NaN, Infinity; or raises for the 422
        return self._json


class FastJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            if request.method not in _NO_BODY:
                await require_known_credential(request)  # before the body is read
            return await handler(_FastJSONRequest(request.scope, request.receive))

        return handle
