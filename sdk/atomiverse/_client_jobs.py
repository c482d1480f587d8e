"""Module-level job functions on the default client (see ``atomiverse.configure``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ._client import ProgressCallback, get_default_client
from ._exceptions import NotFoundError
from .pagination import JobsPage


def submit_batch(payloads: Sequence[Any], compute_target: str | None = None, *,
                 idempotency_key: str | None = None) -> dict[str, Any]:
    """Submit up to 1000 jobs in one request. ``compute_target`` applies to every entry
    unless an entry is itself ``{"job": {...}, "compute_target": ...}``. Returns
    ``{"total", "submitted", "failed", "cache_hits", "jobs": [...]}``."""
    return get_default_client().submit_batch(payloads, compute_target,
                                             idempotency_key=idempotency_key)


def wait_jobs(job_ids: Sequence[str], timeout: float | None = None,
              on_progress: ProgressCallback | None = None, *,
              progress: bool | None = None) -> list[dict[str, Any]]:
    """Block until every job is finished (done, failed or cancelled); returns their
    states and results in the order given. The cheapest way to follow a batch::

        ids = [j["job_id"] for j in atomiverse.submit_batch(payloads)["jobs"] if j["job_id"]]
        for record in atomiverse.wait_jobs(ids):
            print(record["job_id"], record["state"], record["result"])

    In Jupyter a progress bar shows in the cell's output while it waits (``progress=False``:
    none); see :meth:`Client.wait_jobs`. The list returned shows there as one table, a row a
    job (:mod:`atomiverse.records`).
    """
    return get_default_client().wait_jobs(job_ids, timeout=timeout, on_progress=on_progress,
                                          progress=progress)


def as_completed(job_ids: Sequence[str],
                 timeout: float | None = None) -> Iterator[dict[str, Any]]:
    """Yield each job's record as soon as the job is finished, in the order they finish
    (the shape of ``concurrent.futures.as_completed``); ``timeout`` in seconds for the
    whole iteration. One request per change for the whole batch, whatever its size::

        for record in atomiverse.as_completed(ids):
            print(record["name"], record["state"], record["result"]["energy"])
    """
    return get_default_client().as_completed(job_ids, timeout=timeout)


def status(job_id: str) -> dict[str, Any]:
    """The job's state, times and result as a dict.

    Calling it in a loop costs nothing: the client follows the jobs it has read or
    submitted over one watch, answers a finished job at once and a repeated read of an
    unchanged, unfinished job after waiting up to 1 s for it to change (see
    :meth:`Client.status`). :func:`wait_jobs` and :func:`as_completed` say it directly."""
    return get_default_client().status(job_id)


get_job = status


def list_jobs(limit: int = 50, cursor: str | None = None, *, state: str | None = None,
              name: str | None = None) -> JobsPage:
    """One page of job summaries, newest first."""
    return get_default_client().list_jobs(limit, cursor, state=state, name=name)


def iter_jobs(limit: int = 50, max_jobs: int | None = None) -> Iterator[dict[str, Any]]:
    """Every job in the history, newest first, fetched ``limit`` at a time."""
    return get_default_client().iter_jobs(limit, max_jobs)


def rename_job(job_id: str, name: str) -> dict[str, Any]:
    return get_default_client().rename_job(job_id, name)


def cancel_job(job_id: str) -> dict[str, Any]:
    return get_default_client().cancel_job(job_id)


def delete_job(job_id: str, *, missing_ok: bool = False) -> None:
    """Delete a terminal job. ``missing_ok=True`` treats an already deleted job as done."""
    try:
        get_default_client().delete_job(job_id)
    except NotFoundError:
        if not missing_ok:
            raise
