"""The error statuses routes document in the OpenAPI schema; all share one body shape."""

from __future__ import annotations

from typing import Any

from atomiverse_core.schema import ErrorBody

_DESCRIPTIONS = {
    400: "Malformed request",
    401: "Missing, wrong or revoked credentials",
    402: "Balance too low for the managed jobs in this request",
    404: "No such job or controller in this workspace",
    409: "Conflicts with the job's state",
    413: "Batch or body too large",
    422: "Invalid request: `detail` names the field and the reason",
    429: "Rate limited: see the Retry-After header",
    503: "The server cannot reach its database just now: retry after Retry-After seconds",
    507: "The server's disk is (nearly) full: no new jobs are accepted until space is freed",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}


USER = errors(400, 401, 404, 409, 413, 422, 429, 402, 503, 507)
CONTROLLER = errors(400, 401, 404, 413, 422, 503, 507)
