"""Job records in full: the short records of ``wait_jobs``, ``as_completed`` and
``list_jobs`` (no ``job``, the input) read again with ``get_job``, for the conversions that
need the input (tables and files, QCSchema results). What a script holds after following its
batch is the short ones."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def is_short(record: Any) -> bool:
    return isinstance(record, Mapping) and "job" not in record and bool(record.get("job_id"))


def full_record(record: Any, client: Any = None) -> Any:
    """``record`` itself if it is full (or not a record at all: the caller says what it
    wanted), else the job's record read now (the default client's, or ``client``'s)."""
    if not is_short(record):
        return record
    if client is not None:
        return client.get_job(record["job_id"])
    from ._client import get_default_client
    from ._exceptions import NotFoundError

    try:
        return get_default_client().get_job(record["job_id"])
    except NotFoundError as e:
        raise NotFoundError(f"{e} on the default client's server: a short record (without "
                            "'job') is read again with get_job; pass client=, the client "
                            "that returned it", status_code=404) from e


__all__ = ["full_record", "is_short"]
