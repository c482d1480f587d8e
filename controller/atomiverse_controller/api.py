"""The controller's side of the controller protocol, over HTTP. Given several server URLs
(one deployment's server processes on one database), a request that finds its server gone
(no connection, 502, 503, 504) raises ``ServerUnavailable`` as before, and the next attempt,
whenever the caller's retry policy makes it, goes to the next URL."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import httpx2 as httpx
from atomiverse_core import jsonio, retry
from atomiverse_core.servers import FAILOVER_STATUSES, ServerList

# An idle connection is kept this long (httpx's default: 5 s), longer than the idle heartbeat
# (15 s): each beat reuses it where the server keeps it too (the embedded server keeps 30 s),
# instead of connecting anew (issue 22). A connection the server closed first is not reused.
KEEPALIVE_SECONDS = 25.0


class ServerRefused(Exception):
    """The server rejected our credentials (401/403): stop rather than hammer it."""


class ServerUnavailable(Exception):
    """No answer, or a 5xx/429: try again later (after ``retry_after_seconds`` if the server
    said)."""

    def __init__(self, message: str, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class ControllerAPI:
    def __init__(self, server: str | list[str], *, timeout: float = 30.0) -> None:
        self.servers = ServerList(server)
        self._http = httpx.Client(timeout=timeout,
                                  limits=httpx.Limits(max_connections=100,  # httpx's defaults
                                                      max_keepalive_connections=20,
                                                      keepalive_expiry=KEEPALIVE_SECONDS))
        self.token: str | None = None

    @property
    def server(self) -> str:
        """The server URL in use now."""
        return self.servers.current

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request to the server in use; a server that does not answer (or answers that
        it cannot) is marked failed, so the next request goes to the next URL."""
        server = self.servers.current
        try:
            resp = self._http.request(method, server + path, **kwargs)
        except retry.TRANSPORT_ERRORS as e:
            self.servers.failed(server)
            raise ServerUnavailable(f"{server}{path}: {type(e).__name__}: {e}") from e
        if resp.status_code in FAILOVER_STATUSES:
            self.servers.failed(server)
        return resp

    def _post(self, path: str, body: Any, *, auth: str | None = None,
              timeout: float | None = None) -> Any:
        headers = {"Authorization": f"Bearer {auth or self.token}"}
        content = None
        if body is not None:
            content = jsonio.dumps(body)
            headers["Content-Type"] = "application/json"
        resp = self._send("POST", path, content=content, headers=headers,
                          timeout=timeout or self._http.timeout)
        if retry.refused(resp.status_code):
            raise ServerRefused(f"{path}: HTTP {resp.status_code}: {_detail(resp)}")
        wait = retry.retry_after_seconds(resp.headers)
        if retry.worth_retrying(resp.status_code, wait, safe_to_repeat=True, patient=True):
            raise ServerUnavailable(f"{path}: HTTP {resp.status_code}: {_detail(resp)}", wait)
        if resp.status_code >= 400:
            raise ValueError(f"{path}: HTTP {resp.status_code}: {_detail(resp)}")
        return jsonio.loads(resp.content)

    def register(self, *, api_key: str, name: str, slots: int, cores_per_job: int,
                 capacity: int | None, engines: dict[str, str],
                 holding: list[dict[str, str]] | None,
                 pool: str | None = None) -> dict[str, Any]:
        body = {"name": name, "slots": slots, "cores_per_job": cores_per_job,
                "capacity": capacity, "engines": engines, "hostname": socket.gethostname(),
                "holding": holding}
        if pool is not None:
            body["pool"] = pool
        out = self._post("/api/v1/controllers/register", body, auth=api_key)
        self.token = out["token"]
        return out

    def claim(self, max_jobs: int, wait_seconds: float) -> list[dict[str, Any]]:
        out = self._post("/api/v1/controllers/claim",
                         {"max_jobs": max_jobs, "wait_seconds": wait_seconds},
                         timeout=wait_seconds + 30.0)
        return out["jobs"]

    def pool_state(self) -> dict[str, Any]:
        """With the pool's own token: its pending jobs and members (``atomiverse scale``)."""
        resp = self._send("GET", "/api/v1/controllers/pool",
                          headers={"Authorization": f"Bearer {self.token}"})
        if retry.refused(resp.status_code):
            raise ServerRefused(f"/api/v1/controllers/pool: HTTP {resp.status_code}: "
                                f"{_detail(resp)}")
        if resp.status_code >= 400:
            raise ServerUnavailable(f"/api/v1/controllers/pool: HTTP {resp.status_code}: "
                                    f"{_detail(resp)}")
        return jsonio.loads(resp.content)

    def heartbeat(self, running: list[dict[str, str]]) -> dict[str, Any]:
        return self._post("/api/v1/controllers/heartbeat", {"running": running})

    def complete(self, reports: list[dict[str, Any]]) -> dict[str, Any]:
        return self._post("/api/v1/controllers/complete", {"reports": reports})

    def release(self, leases: list[dict[str, str]]) -> int:
        return self._post("/api/v1/controllers/release", leases)["released"]

    def deregister(self) -> None:
        self._post("/api/v1/controllers/deregister", None)


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        return str(body.get("detail", body)) if isinstance(body, dict) else str(body)
    except ValueError:
        return resp.text[:200]


def save_token(path: Path, token: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    os.replace(tmp, path)
