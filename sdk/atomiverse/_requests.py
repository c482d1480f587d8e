"""One request's parts shared by the sync and async clients: its body and headers, whether it
may be sent again, and the SDK exception its last failure becomes."""

from __future__ import annotations

from typing import Any

import httpx2 as httpx
from atomiverse_core import jsonio, retry

from ._exceptions import APIConnectionError, APITimeoutError, error_for_status


def prepare(method: str, json: Any, idempotency_key: str | None,
            retryable: bool | None) -> tuple[bytes | None, dict[str, str], bool]:
    """A request's body, headers, and whether it is safe to send again (default: GET, PUT,
    DELETE, PATCH, and a POST with an idempotency key)."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    content = None
    if json is not None:
        content = jsonio.dumps(json)
        headers["Content-Type"] = "application/json"
    if retryable is None:
        retryable = method in ("GET", "PUT", "DELETE", "PATCH") or bool(idempotency_key)
    return content, headers, retryable


def sdk_error(error: Exception, method: str, path: str, base_url: str | None) -> Exception:
    """The SDK's exception for a request's last failure."""
    if isinstance(error, httpx.TimeoutException):
        return APITimeoutError(f"{method} {path} timed out")
    if isinstance(error, ErrorStatus):
        return status_error(error.response, error.retry_after_seconds)
    return APIConnectionError(f"could not reach {base_url}: {error}")


def cause(error: Exception) -> Exception | None:
    """What the SDK's exception is raised from: nothing for an error status (the response is
    in the exception), the transport error otherwise."""
    return None if isinstance(error, ErrorStatus) else error


def decoded(resp: httpx.Response) -> Any:
    return None if resp.status_code == 204 else jsonio.loads(resp.content)


class ErrorStatus(Exception):
    """An attempt answered with a 4xx/5xx: retried if the policy says so, else mapped to
    the SDK's error for that status."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response
        self.retry_after_seconds = retry.retry_after_seconds(response.headers)


def worth_another_try(error: BaseException, retryable: bool) -> bool:
    """A refused connection is always worth another try (the request reached no server; the
    next try may go to another one); other failures as the policy says."""
    if isinstance(error, ErrorStatus):
        return retry.worth_retrying(error.response.status_code, error.retry_after_seconds,
                                    safe_to_repeat=retryable, patient=False)
    if isinstance(error, httpx.ConnectError):
        return True
    return retryable and isinstance(error, retry.TRANSPORT_ERRORS)


def status_error(resp: httpx.Response, retry_after: float | None) -> Exception:
    try:
        body = resp.json()
        message = body.get("detail") if isinstance(body, dict) else None
    except ValueError:
        body, message = resp.text, None
    if not isinstance(message, str):
        message = resp.reason_phrase or f"HTTP {resp.status_code}"
    return error_for_status(resp.status_code, message, body, retry_after)
