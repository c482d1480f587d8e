"""Errors the SDK raises.

    AtomiverseError                 every error from this package
    ├── APIConnectionError          no response: the server could not be reached
    │   └── APITimeoutError         the request timed out
    └── APIStatusError              the server answered with an error status
        ├── BadRequestError         400
        ├── AuthenticationError     401
        ├── PermissionDeniedError   403
        ├── NotFoundError           404
        ├── ConflictError           409
        ├── PayloadTooLargeError    413
        ├── UnprocessableEntityError 422
        ├── PaymentRequiredError    402
        ├── RateLimitError          429 (``retry_after_seconds`` says how long to wait)
        └── InternalServerError     5xx
            └── InsufficientStorageError 507: the server's disk is (nearly) full; it refuses
                                        new jobs, keeps those it accepted; try again later
"""

from __future__ import annotations

from typing import Any


class AtomiverseError(Exception):
    """Base error. ``status_code`` is the HTTP status (``None`` when there was no response)."""

    status_code: int | None = None

    def __init__(self, message: str, *, status_code: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.body = body

    def __str__(self) -> str:
        if self.status_code is None:
            return self.message
        return f"HTTP {self.status_code}: {self.message}"


class APIConnectionError(AtomiverseError):
    pass


class APITimeoutError(APIConnectionError):
    pass


class APIStatusError(AtomiverseError):
    pass


class BadRequestError(APIStatusError):
    status_code = 400


class AuthenticationError(APIStatusError):
    status_code = 401


class PaymentRequiredError(APIStatusError):
    status_code = 402


class PermissionDeniedError(APIStatusError):
    status_code = 403


class NotFoundError(APIStatusError):
    status_code = 404


class ConflictError(APIStatusError):
    status_code = 409


class PayloadTooLargeError(APIStatusError):
    status_code = 413


class UnprocessableEntityError(APIStatusError):
    status_code = 422


class RateLimitError(APIStatusError):
    status_code = 429

    def __init__(self, message: str, *, retry_after_seconds: float | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after_seconds = retry_after_seconds


class InternalServerError(APIStatusError):
    pass


class InsufficientStorageError(InternalServerError):
    """The server refused new work because its disk is (nearly) full. Nothing of this
    request was stored; jobs accepted earlier are safe. Try again once its operator has freed
    space (``retry_after_seconds``: the server's suggestion, if it gave one)."""

    status_code = 507

    def __init__(self, message: str, *, retry_after_seconds: float | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after_seconds = retry_after_seconds


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: PaymentRequiredError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def error_for_status(
    status_code: int, message: str, body: Any = None, retry_after_seconds: float | None = None
) -> APIStatusError:
    """Pick the exception class for an error response."""
    if status_code in (429, 507):
        special = RateLimitError if status_code == 429 else InsufficientStorageError
        return special(
            message, status_code=status_code, body=body, retry_after_seconds=retry_after_seconds
        )
    cls = _BY_STATUS.get(status_code)
    if cls is None:
        cls = InternalServerError if status_code >= 500 else APIStatusError
    return cls(message, status_code=status_code, body=body)
