"""``AsyncClient``: the client's methods as coroutines, for asyncio services and notebooks
(Jupyter's running loop): the same models, errors and retry policy as :class:`Client`.

    async with atomiverse.AsyncClient() as client:
        res = await client.submit_batch(payloads, compute_target="local")
        async for record in client.as_completed([j["job_id"] for j in res["jobs"]]):
            print(record["job_id"], record["state"])

``base_url`` and ``api_key``: argument, then ``ATOMIVERSE_BASE_URL``/``ATOMIVERSE_API_KEY``,
then the embedded server on this machine (started, off the event loop, on first use). Several
server URLs (comma-separated, or a list) are used as :class:`Client` uses them: the next one
after a server stops answering."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Self

import httpx2 as httpx
from atomiverse_core import retry
from atomiverse_core.servers import ServerList, should_fail_over
from atomiverse_core.state import TERMINAL_STATES

from . import _embedded
from ._client import (
    WAIT_COALESCE_ABOVE_JOBS,
    WAIT_COALESCE_SECONDS,
    WAIT_POLL_SECONDS,
)
from ._config import NOT_GIVEN, pick
from ._entries import entry, quote_job_id
from ._requests import ErrorStatus, cause, decoded, prepare, sdk_error, worth_another_try
from .records import as_record, as_records, batch_result


class AsyncClient:
    def __init__(self, api_key: Any = NOT_GIVEN, base_url: Any = NOT_GIVEN, *,
                 timeout: float = 60.0, max_retries: int = 3) -> None:
        self._api_key: str | None = pick(api_key, "ATOMIVERSE_API_KEY")
        base = pick(base_url, "ATOMIVERSE_BASE_URL")
        self._servers = ServerList(base) if base else None
        self._base_url: str | None = self._servers.current if self._servers else None
        self.embedded = self._servers is None
        self.timeout, self.max_retries = timeout, max_retries
        self._http: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()
        self._local_controller_seen = not self.embedded

    async def _connect(self) -> httpx.AsyncClient:
        async with self._lock:
            if self._http is None:
                if self.embedded:
                    self._base_url, self._api_key = await asyncio.to_thread(
                        _embedded.ensure_running)
                headers = {"X-Atomiverse-Local-Controller": _embedded.local_controller_name()}
                if self._api_key:
                    headers["Authorization"] = f"Bearer {self._api_key}"
                self._http = httpx.AsyncClient(base_url=self._base_url or "", headers=headers,
                                               timeout=self.timeout)
            return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(self, method: str, path: str, *, json: Any = None,
                      params: dict[str, Any] | None = None,
                      idempotency_key: str | None = None, timeout: float | None = None,
                      retryable: bool | None = None) -> Any:
        """As :meth:`Client.request`: retried by the same policy, errors mapped the same."""
        content, headers, retryable = prepare(method, json, idempotency_key, retryable)
        sending = retry.async_retrying(retry.CLIENT, attempts=self.max_retries + 1,
                                       retry_on=lambda e: worth_another_try(e, retryable))
        try:
            resp = await sending(self._send, method, path, content=content, params=params,
                                 headers=headers, timeout=timeout or self.timeout)
        except (retry.TRANSPORT_ERRORS + (ErrorStatus,)) as e:
            raise sdk_error(e, method, path, self._base_url) from cause(e)
        return decoded(resp)

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        http = await self._connect()
        server = self._servers.current if self._servers else ""
        try:
            resp = await http.request(method, server + path, **kwargs)
            if resp.status_code >= 400:
                raise ErrorStatus(resp)
        except (httpx.TransportError, ErrorStatus) as e:
            if self._servers is not None and should_fail_over(e):
                self._base_url = self._servers.failed(server)  # the next try goes there
            raise
        return resp

    async def _await_local_controller(self) -> None:
        """As :meth:`Client._await_local_controller`: before the first submission to an
        embedded server, its local controller has registered (off the event loop)."""
        if not self._local_controller_seen:
            await self._connect()
            assert self._base_url is not None and self._api_key is not None
            await asyncio.to_thread(_embedded.wait_for_local_controller,
                                    _embedded.controllers_at(self._base_url, self._api_key))
            self._local_controller_seen = True

    # ----- jobs --------------------------------------------------------------------------
    async def submit_batch(self, payloads: Sequence[Any], compute_target: str | None = None,
                           *, idempotency_key: str | None = None) -> dict[str, Any]:
        entries = [entry(p, compute_target) for p in payloads]
        await self._await_local_controller()
        return batch_result(await self.request(
            "POST", "/api/v1/jobs/submit-batch", json={"jobs": entries},
            idempotency_key=idempotency_key or uuid.uuid4().hex))

    async def submit_job(self, payload: Any,
                         compute_target: str | None = None) -> dict[str, Any]:
        await self._await_local_controller()
        return as_record(await self.request("POST", "/api/v1/jobs",
                                            json=entry(payload, compute_target)))

    async def get_job(self, job_id: str) -> dict[str, Any]:
        return as_record(await self.request("GET", f"/api/v1/jobs/{quote_job_id(job_id)}"))

    async def job_children(self, job_id: str) -> list[dict[str, Any]]:
        return as_records((await self.request(
            "GET", f"/api/v1/jobs/{quote_job_id(job_id)}/children"))["jobs"])

    async def list_jobs(self, limit: int = 50, cursor: str | None = None, *,
                        state: str | None = None, name: str | None = None) -> dict[str, Any]:
        """One page: ``{"jobs": [...], "has_more": ..., "next_cursor": ...}``, its jobs a
        :class:`~atomiverse.records.JobRecords`."""
        params = {"limit": limit, "cursor": cursor, "state": state, "name": name}
        page = await self.request("GET", "/api/v1/jobs",
                                  params={k: v for k, v in params.items() if v is not None})
        return {**page, "jobs": as_records(page["jobs"])}

    async def iter_jobs(self, limit: int = 50,
                        max_jobs: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every job, newest first, ``limit`` per page."""
        count, cursor = 0, None
        while True:
            page = await self.list_jobs(limit, cursor)
            for job in page["jobs"]:
                if max_jobs is not None and count >= max_jobs:
                    return
                count += 1
                yield job
            if not page["has_more"]:
                return
            cursor = page["next_cursor"]

    async def rename_job(self, job_id: str, name: str) -> dict[str, Any]:
        return as_record(await self.request("PATCH", f"/api/v1/jobs/{quote_job_id(job_id)}",
                                            json={"name": name}))

    async def cancel_job(self, job_id: str) -> dict[str, Any]:
        return as_record(await self.request("POST", f"/api/v1/jobs/{quote_job_id(job_id)}/cancel"))

    async def delete_job(self, job_id: str) -> None:
        await self.request("DELETE", f"/api/v1/jobs/{quote_job_id(job_id)}")

    async def as_completed(self, job_ids: Sequence[str],
                           timeout: float | None = None) -> AsyncIterator[dict[str, Any]]:
        """Each job's record (``{job_id, state, result, error, ...}``) as soon as it is
        finished, in the order they finish; ``TimeoutError`` if some are not by ``timeout``
        seconds. The server holds each request until something finishes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = list(dict.fromkeys(str(j) for j in job_ids))
        while pending:
            left = WAIT_POLL_SECONDS if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(pending)} jobs were not finished after {timeout} s")
            body = await self.request("POST", "/api/v1/jobs/wait", json={
                "job_ids": pending, "timeout_seconds": min(WAIT_POLL_SECONDS, left),
                "include_result": True,
                "coalesce_seconds": WAIT_COALESCE_SECONDS
                if len(pending) > WAIT_COALESCE_ABOVE_JOBS else 0.0},
                timeout=WAIT_POLL_SECONDS + self.timeout, retryable=True)
            finished = [j for j in body["jobs"] if j["state"] in TERMINAL_STATES]
            done = {j["job_id"] for j in finished}
            pending = [j for j in pending if j not in done]
            for record in finished:
                yield as_record(record)

    async def wait_jobs(self, job_ids: Sequence[str], timeout: float | None = None, *,
                        progress: bool | None = None) -> list[dict[str, Any]]:
        """Every job's record once all are finished, in the order given; in Jupyter with a
        progress bar, as :meth:`Client.wait_jobs`."""
        total = len(set(map(str, job_ids)))
        bar = None
        if progress or (progress is None and total > 1):
            from ._notebook import notebook_progress

            bar = notebook_progress(total)
        done: dict[str, dict[str, Any]] = {}
        async for record in self.as_completed(job_ids, timeout):
            done[record["job_id"]] = record
            if bar is not None:
                bar(len(done), total)
        return as_records(done[str(j)] for j in job_ids)


__all__ = ["AsyncClient"]
