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


def status(job_id: str) -> dict[str, Any]:
    """The job's state, times and result as a dict."""
    return get_default_client().get_job(job_id)


get_job = status


def wait_jobs(job_ids: Sequence[str], timeout: float | None = None,
              on_progress: ProgressCallback | None = None) -> list[dict[str, Any]]:
    """Block until every job is terminal; returns their states and results in order."""
    return get_default_client().wait_jobs(job_ids, timeout=timeout, on_progress=on_progress)


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
