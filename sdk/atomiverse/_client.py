"""The HTTP client: authentication, one retry policy, error mapping, and the job calls.

Retries (``atomiverse_core.retry``, the platform's one policy): connection errors, 408, 502,
503 and 504, with capped exponential backoff and jitter; a 429 is retried only when its
``Retry-After`` is short, otherwise raised as ``RateLimitError`` carrying the wait. A POST
is retried only with an idempotency key, which stays the same across its retries; a connection
refused is always retried (the request never reached a server). Given several server URLs
(``"http://a:8000,http://b:8000"`` or a list), a request that finds its server gone or without
its database (no connection, 502, 503, 504) is retried on the next one
(``atomiverse_core.servers``). Against the embedded server, a connection error first restarts
the server if it is gone (``_embedded.revive``), then sends again."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Self

import httpx2 as httpx
from atomiverse_core import jsonio, retry
from atomiverse_core.servers import ServerList, should_fail_over
from atomiverse_core.state import TERMINAL_STATES

from . import _embedded
from ._config import NOT_GIVEN, pick
from ._entries import entry, quote_job_id
from ._exceptions import APIConnectionError
from ._informer import Informer
from ._requests import ErrorStatus, cause, decoded, prepare, sdk_error, worth_another_try
from .pagination import JobsPage
from .records import as_record, as_records, batch_result

WAIT_POLL_SECONDS = 20.0
# Waiting on many jobs, one answer per ~0.25 s of completions is plenty and spares the
# server a query per finished job; the last few are answered the moment they finish.
WAIT_COALESCE_SECONDS = 0.25
WAIT_COALESCE_ABOVE_JOBS = 8
CLOSE_WAIT_SECONDS = 2.0

ProgressCallback = Callable[[int, int], None]


class Client:
    """A connection to an Atomiverse deployment.

    ``base_url`` and ``api_key``: argument, then ``ATOMIVERSE_BASE_URL`` /
    ``ATOMIVERSE_API_KEY``, then the embedded server on this machine (started on first use).
    ``base_url`` may name several server processes of one deployment (a comma-separated
    string or a list): requests go to one and move to the next when it stops answering.
    """

    def __init__(self, api_key: Any = NOT_GIVEN, base_url: Any = NOT_GIVEN, *,
                 timeout: float = 60.0, max_retries: int = 3) -> None:
        self._api_key: str | None = pick(api_key, "ATOMIVERSE_API_KEY")
        base = pick(base_url, "ATOMIVERSE_BASE_URL")
        self._servers = ServerList(base) if base else None
        self._base_url: str | None = self._servers.current if self._servers else None
        self.embedded = self._servers is None
        self.timeout = timeout
        self.max_retries = max_retries
        self._http: httpx.Client | None = None
        self._lock = threading.Lock()
        self._informer = Informer(self._watch, self.get_job)
        self._local_controller_seen = not self.embedded

    # ----- connection --------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        self._connect()
        assert self._base_url is not None
        return self._base_url

    def _connect(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                if self.embedded:
                    # The embedded server's own key; a key configured without a base URL
                    # belongs to some other server and would only be refused here.
                    self._base_url, self._api_key = _embedded.ensure_running()
                headers = {"X-Atomiverse-Local-Controller": _embedded.local_controller_name()}
                if self._api_key:
                    headers["Authorization"] = f"Bearer {self._api_key}"
                self._http = httpx.Client(base_url=self._base_url or "", headers=headers,
                                          timeout=self.timeout)
            return self._http

    def close(self) -> None:
        watcher = self._informer.close()
        if watcher is not None and self._http is not None:
            # End the watch parked on the server now, not at its timeout (a newer watch
            # with the same id does); best effort: closing must not wait on a dead server.
            with contextlib.suppress(httpx.HTTPError):
                self._http.post(f"{self._base_url}/api/v1/jobs/watch", content=jsonio.dumps(
                    {"jobs": {}, "watch_id": self._informer.watch_id, "timeout_seconds": 0}),
                    headers={"Content-Type": "application/json"}, timeout=2.0)
            # Let its thread see the answer and stop before the connection goes: a thread
            # still sending afterwards would open a new connection nobody closes.
            watcher.join(CLOSE_WAIT_SECONDS)
        self._informer = Informer(self._watch, self.get_job)  # a client used again starts a new watch
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _revive_embedded(self, failed: httpx.Client) -> bool:
        """After a transport error on ``failed`` against the embedded server: restart the
        server if it is gone (``_embedded.revive``, under the home's launch lock) and
        reconnect. True if the server now answering is not the one the error came from."""
        if not self.embedded:
            return False
        url, key = _embedded.revive()
        with self._lock:
            if self._http is not failed:
                return True  # another thread reconnected meanwhile
            if url == self._base_url and key == self._api_key:
                return False
            old, self._http = self._http, None
            self._base_url, self._api_key = url, key
            self._local_controller_seen = False  # a new server: its controller registers anew
        if old is not None:
            old.close()
        return True

    def request(self, method: str, path: str, *, json: Any = None,
                params: dict[str, Any] | None = None, idempotency_key: str | None = None,
                timeout: float | None = None, retryable: bool | None = None,
                wanted: Callable[[], bool] | None = None) -> Any:
        """``retryable``: safe to send again after a lost answer (default: GET, PUT, DELETE,
        PATCH, and a POST with an idempotency key; a wait or a watch says so). ``wanted``:
        asked before every attempt; once False the request stops (a closed client's watch
        must not open a new connection, or start the embedded server again)."""
        content, headers, retryable = prepare(method, json, idempotency_key, retryable)
        sending = retry.retrying(retry.CLIENT, attempts=self.max_retries + 1,
                                 retry_on=lambda e: worth_another_try(e, retryable))
        try:
            resp = sending(self._send, method, path, content=content, params=params,
                           headers=headers, timeout=timeout or self.timeout,
                           retryable=retryable, wanted=wanted)
        except (retry.TRANSPORT_ERRORS + (ErrorStatus,)) as e:
            raise sdk_error(e, method, path, self._base_url) from cause(e)
        return decoded(resp)

    def _send(self, method: str, path: str, *, retryable: bool,
              wanted: Callable[[], bool] | None, **kwargs: Any) -> httpx.Response:
        """One attempt: the response, or ``ErrorStatus`` for a 4xx/5xx. A request that
        finds the embedded server gone restarts it and goes to the new one at once (not a
        retry: it never reached a server, or the caller said it may be repeated)."""
        while True:
            if wanted is not None and not wanted():
                raise APIConnectionError(f"{method} {path}: no longer wanted (client closed)")
            http = self._connect()
            server = self._servers.current if self._servers else ""
            try:
                resp = http.request(method, server + path, **kwargs)
            except httpx.TimeoutException as e:
                self._fail_over(server, e)
                raise
            except httpx.TransportError as e:
                if not self._revive_embedded(http):
                    self._fail_over(server, e)
                    raise
                # A refused connection never reached the old server: always safe to send
                # again. A request cut off mid-way may have been applied.
                if retryable or isinstance(e, httpx.ConnectError):
                    continue
                raise APIConnectionError(
                    f"{method} {path}: the embedded server died during the request and "
                    f"was restarted; it may or may not have been applied") from e
            if resp.status_code < 400:
                return resp
            error = ErrorStatus(resp)
            self._fail_over(server, error)
            raise error

    def _fail_over(self, server: str, error: Exception) -> None:
        """The next attempt goes to the next server given, if ``error`` says this one cannot
        serve now (the retry policy decides whether there is a next attempt)."""
        if self._servers is not None and should_fail_over(error):
            self._base_url = self._servers.failed(server)

    # ----- jobs --------------------------------------------------------------------------
    def submit_batch(self, payloads: Sequence[Any], compute_target: str | None = None, *,
                     idempotency_key: str | None = None) -> dict[str, Any]:
        entries = [entry(p, compute_target) for p in payloads]
        self._await_local_controller()
        response = self.request("POST", "/api/v1/jobs/submit-batch", json={"jobs": entries},
                                idempotency_key=idempotency_key or uuid.uuid4().hex)
        self._informer.expect(j["job_id"] for j in response["jobs"] if j.get("job_id"))
        return batch_result(response)

    def submit_job(self, payload: Any, compute_target: str | None = None) -> dict[str, Any]:
        self._await_local_controller()
        return as_record(self.request("POST", "/api/v1/jobs", json=entry(payload,
                                                                           compute_target)))

    def run_job(self, payload: Any, compute_target: str | None = None,
                timeout: float | None = None) -> dict[str, Any]:
        """Submit one job and return its record once it is finished, result included: one
        request that submits and waits (``POST /api/v1/jobs/run``), then ``wait_jobs`` if
        the job outlasts that request's wait. For one job whose result is needed at once
        (the ASE calculator); batches go through :meth:`submit_batch`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        wait = WAIT_POLL_SECONDS if timeout is None else max(0.0, min(WAIT_POLL_SECONDS,
                                                                      timeout))
        self._await_local_controller()
        record = self.request("POST", "/api/v1/jobs/run", json=entry(payload, compute_target),
                              params={"timeout_seconds": wait},
                              timeout=wait + self.timeout)  # a submission: never sent twice
        if record["state"] in TERMINAL_STATES:
            return as_record(record)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        (finished,) = self.wait_jobs([record["job_id"]], left, progress=False)
        return as_record({**record, **finished})

    def _await_local_controller(self) -> None:
        """Embedded, before this client's first submission: a server just started has no
        engine for this machine until its local controller registers, and jobs sent before
        then would miss the result cache (``_embedded.wait_for_local_controller``)."""
        if not self._local_controller_seen:
            _embedded.wait_for_local_controller(
                lambda: self.request("GET", "/api/v1/controllers")["controllers"])
            self._local_controller_seen = True

    def status(self, job_id: str) -> dict[str, Any]:
        """The job's record, for loops that follow jobs: answered from this client's watch
        where it can be (see ``atomiverse._informer``). A finished job is answered at once
        from memory; a repeated read of an unfinished job with no news since the last read
        waits up to 1 s for a change; the first read of a job asks the server. A job deleted
        by someone else stays visible here once finished: :meth:`get_job` always asks."""
        return as_record(self._informer.get(str(job_id)))

    def get_job(self, job_id: str) -> dict[str, Any]:
        """The job's record, read from the server now."""
        return as_record(self.request("GET", f"/api/v1/jobs/{quote_job_id(job_id)}"))

    def job_children(self, job_id: str) -> list[dict[str, Any]]:
        """A composite job's children (a chain's steps, a conformer search's jobs), in step
        order: ``job_id``, ``step`` (from 1), ``job_type``, ``state``, ``name``, ``error``,
        ``energy_hartree`` and ``core_seconds`` of each."""
        path = f"/api/v1/jobs/{quote_job_id(job_id)}/children"
        return as_records(self.request("GET", path)["jobs"])

    def _watch(self, versions: dict[str, str | None], watch_id: str, timeout_seconds: float,
               coalesce_seconds: float) -> list[dict[str, Any]]:
        informer = self._informer  # the caller, unless a close replaced it meanwhile
        body = self.request("POST", "/api/v1/jobs/watch", json={
            "jobs": versions, "watch_id": watch_id, "timeout_seconds": timeout_seconds,
            "coalesce_seconds": coalesce_seconds},
            timeout=timeout_seconds + self.timeout, retryable=True,
            wanted=lambda: informer.watch_id == watch_id and not informer.closed)
        return body["jobs"]

    def as_completed(self, job_ids: Sequence[str],
                     timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield each job's record (as :meth:`status` gives it) as soon as the job is
        finished, in the order they finish, like ``concurrent.futures.as_completed``.
        ``timeout`` (seconds, for the whole iteration): ``TimeoutError`` if some are
        still unfinished then."""
        return map(as_record, self._informer.wait_finished([str(j) for j in job_ids], timeout))

    def wait_job(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until this job is finished; its record."""
        return next(self.as_completed([job_id], timeout))

    def list_jobs(self, limit: int = 50, cursor: str | None = None, *, state: str | None = None,
                  name: str | None = None) -> JobsPage:
        params = {"limit": limit, "cursor": cursor, "state": state, "name": name}
        body = self.request("GET", "/api/v1/jobs",
                            params={k: v for k, v in params.items() if v is not None})
        return JobsPage(jobs=as_records(body["jobs"]), has_more=body["has_more"],
                        next_cursor=body["next_cursor"], _fetch_next=self._next_page(limit,
                                                                                      state, name))

    def _next_page(self, limit: int, state: str | None,
                   name: str | None) -> Callable[[str], JobsPage]:
        return lambda cursor: self.list_jobs(limit, cursor, state=state, name=name)

    def iter_jobs(self, limit: int = 50, max_jobs: int | None = None) -> Iterator[dict[str, Any]]:
        count = 0
        page: JobsPage | None = self.list_jobs(limit)
        while page is not None:
            for job in page.jobs:
                if max_jobs is not None and count >= max_jobs:
                    return
                count += 1
                yield job
            page = page.next_page() if page.has_more else None

    def rename_job(self, job_id: str, name: str) -> dict[str, Any]:
        record = self.request("PATCH", f"/api/v1/jobs/{quote_job_id(job_id)}", json={"name": name})
        self._informer.remember(record)
        return as_record(record)

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        record = self.request("POST", f"/api/v1/jobs/{quote_job_id(job_id)}/cancel")
        self._informer.remember(record)
        return as_record(record)

    def delete_job(self, job_id: str) -> None:
        try:
            self.request("DELETE", f"/api/v1/jobs/{quote_job_id(job_id)}")
        finally:
            self._informer.forget(job_id)

    def wait_jobs(self, job_ids: Sequence[str], timeout: float | None = None,
                  on_progress: ProgressCallback | None = None, *,
                  progress: bool | None = None) -> list[dict[str, Any]]:
        """Block until every job is terminal; return ``{job_id, state, result, error, ...}``
        in the order given. The server holds each request open until something finishes,
        so waiting costs a request per completion wave, not a poll per job.

        ``on_progress(finished, total)`` is called as jobs finish. In Jupyter, without one, a
        progress bar shows in the cell's output (``progress=False``: none; ``True``: also for
        a single job, which gets none by default)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        done: dict[str, dict[str, Any]] = {}
        pending = list(dict.fromkeys(job_ids))
        if on_progress is None and (progress or (progress is None and len(pending) > 1)):
            from ._notebook import notebook_progress

            on_progress = notebook_progress(len(pending))
        while pending:
            left = WAIT_POLL_SECONDS if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(pending)} of {len(done) + len(pending)} jobs were "
                                   f"not finished after {timeout} s")
            body = self.request("POST", "/api/v1/jobs/wait", json={
                "job_ids": pending, "timeout_seconds": min(WAIT_POLL_SECONDS, left),
                "include_result": True,
                "coalesce_seconds": WAIT_COALESCE_SECONDS
                if len(pending) > WAIT_COALESCE_ABOVE_JOBS else 0.0},
                timeout=WAIT_POLL_SECONDS + self.timeout, retryable=True)  # read-only
            newly = [j for j in body["jobs"] if j["state"] in TERMINAL_STATES]
            done.update((j["job_id"], j) for j in newly)
            pending = [j for j in pending if j not in done]
            if newly and on_progress:
                on_progress(len(done), len(done) + len(pending))
        return as_records(done[j] for j in job_ids)

    def account(self) -> dict[str, Any]:
        return self.request("GET", "/api/v1/account")

    def dashboard_url(self, job_id: str) -> str:
        return f"{self.base_url}/job?job_id={quote_job_id(job_id)}"


# ----- the default client used by module-level functions ---------------------------------
_default: Client | None = None
_default_lock = threading.Lock()


def configure(api_key: Any = NOT_GIVEN, base_url: Any = NOT_GIVEN, **kwargs: Any) -> Client:
    """Set the credentials and server of the module-level functions."""
    global _default
    with _default_lock:
        if _default is not None:
            _default.close()
        _default = Client(api_key=api_key, base_url=base_url, **kwargs)
        return _default


def get_default_client() -> Client:
    global _default
    with _default_lock:
        if _default is None:
            _default = Client()
        return _default
