"""The one retry policy: which failures are worth another try, how long to wait before it
(capped exponential backoff with jitter, or the server's ``Retry-After``), and the tenacity
machinery that runs the attempts. Every loop that tries again (the SDK client's requests,
its watch, the embedded server's start, the controller's register, claim and report) takes
its classification and waits from here, so they cannot drift apart again.

tenacity rather than stamina (which is built on it): the controller's loops must stop
waiting the moment they are told to stop (a ``sleep`` that wakes on a stop event), and
stamina sleeps with ``time.sleep`` and only takes an additive jitter."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import httpx2 as httpx
import tenacity

T = TypeVar("T")

# ----- what is worth another try --------------------------------------------------------
# A failure on the way: no answer, a connection refused or cut, a timeout.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (httpx.RequestError,)
# The credentials were refused: trying again only hammers the server.
REFUSED_STATUSES = frozenset({401, 403})
# Lost in transit or a server restarting: safe to send again if the request is.
TRANSIENT_STATUSES = frozenset({408, 502, 503, 504})
# A 429 is retried by a caller someone waits on (the SDK) only when the server asks for a
# short wait; anything longer is the user's to decide (``RateLimitError`` carries it).
MAX_SHORT_RETRY_AFTER_SECONDS = 2.0
# However long a server asks us to wait, a waiting loop looks again after this long.
MAX_RETRY_AFTER_SECONDS = 300.0


def refused(status: int) -> bool:
    return status in REFUSED_STATUSES


def worth_retrying(status: int, retry_after_seconds: float | None, *, safe_to_repeat: bool,
                   patient: bool) -> bool:
    """Whether an HTTP error status is worth sending the request again for.

    ``patient``: a daemon that keeps its work until the server is back (the controller):
    every 5xx, a 429 and a 408 are "try later". Otherwise (a user is waiting): a 429 only
    with a short ``Retry-After``, and the transient statuses only for a request that is
    safe to repeat (a 500 is a bug, not a hiccup)."""
    if status < 400 or refused(status):
        return False
    if patient:
        return status >= 500 or status in (408, 429)
    if status == 429:
        return (retry_after_seconds is not None
                and retry_after_seconds <= MAX_SHORT_RETRY_AFTER_SECONDS)
    return safe_to_repeat and status in TRANSIENT_STATUSES


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The ``Retry-After`` header in seconds (the delay form; a date is not used here)."""
    value = headers.get("Retry-After")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return max(0.0, seconds) if seconds is not None and math.isfinite(seconds) else None


# ----- how long to wait -----------------------------------------------------------------
@dataclass(frozen=True)
class Backoff:
    """Wait ``first_seconds`` after the first failure, doubling up to ``max_seconds``, each
    wait stretched by up to ``jitter`` (a fraction) at random so that many clients or
    controllers do not retry in step. A server's ``Retry-After`` replaces the doubling, up
    to ``retry_after_max_seconds`` (default: ``max_seconds``)."""

    first_seconds: float
    max_seconds: float
    jitter: float = 1.0
    retry_after_max_seconds: float | None = None

    def seconds(self, failures: int, retry_after: float | None = None) -> float:
        """The wait after ``failures`` failures in a row (1 for the first)."""
        if retry_after is not None:
            base = min(retry_after, self.retry_after_max_seconds or self.max_seconds)
        else:
            base = min(self.max_seconds, self.first_seconds * 2 ** max(failures - 1, 0))
        return base * (1 + self.jitter * random.random())


# Someone is waiting on the SDK: a few quick tries.
CLIENT = Backoff(first_seconds=0.25, max_seconds=8.0, jitter=0.25)
# The SDK's watch thread: until the server is back, but looking often.
WATCH = Backoff(first_seconds=0.25, max_seconds=5.0, jitter=0.25)
# A controller registering: until the server answers.
REGISTER = Backoff(first_seconds=0.5, max_seconds=10.0, jitter=0.0)
# A controller claiming: a fleet of them must not hammer a server that is down.
CLAIM = Backoff(first_seconds=0.5, max_seconds=30.0)
# A controller's results, until the server takes them. Capped low: a server back from an
# outage holds their leases for only one lease period after it starts (4 s in the fault
# tests), and a long wait could sleep through it.
REPORT = Backoff(first_seconds=0.2, max_seconds=1.0)
# A client told to slow down without being told for how long.
RATE_LIMITED = Backoff(first_seconds=30.0, max_seconds=30.0, jitter=0.0,
                       retry_after_max_seconds=MAX_RETRY_AFTER_SECONDS)


class Stopped(Exception):
    """The loop was told to stop while it waited to try again."""


class _Wait(tenacity.wait.wait_base):
    """The policy's wait, or the ``retry_after_seconds`` the failure carries."""

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        return self.backoff.seconds(retry_state.attempt_number,
                                    getattr(error, "retry_after_seconds", None))


def _sleep_until_stopped(stop_event: threading.Event) -> Callable[[float], None]:
    def sleep(seconds: float) -> None:
        if stop_event.wait(seconds):
            raise Stopped("stopped while waiting to try again")
    return sleep


def retrying(backoff: Backoff, *, retry_on: Callable[[BaseException], bool],
             attempts: int | None = None, stop_event: threading.Event | None = None,
             before_sleep: Callable[[tenacity.RetryCallState], None] | None = None,
             ) -> tenacity.Retrying:
    """Call ``policy(fn, *args)``: ``fn`` again after each failure ``retry_on`` accepts,
    waiting as ``backoff`` says. ``attempts``: at most this many calls (None: until it
    works). ``stop_event``: set, it ends the wait at once by raising ``Stopped``. A failure
    not retried, or the last one, is raised as it is."""
    return tenacity.Retrying(
        sleep=_sleep_until_stopped(stop_event) if stop_event is not None else time.sleep,
        stop=tenacity.stop_never if attempts is None else tenacity.stop_after_attempt(attempts),
        wait=_Wait(backoff), retry=tenacity.retry_if_exception(retry_on), reraise=True,
        before_sleep=before_sleep)


def async_retrying(backoff: Backoff, *, retry_on: Callable[[BaseException], bool],
                   attempts: int | None = None) -> tenacity.AsyncRetrying:
    """:func:`retrying` for coroutines (``await policy(fn, *args)``), sleeping with
    ``asyncio.sleep``."""
    return tenacity.AsyncRetrying(
        stop=tenacity.stop_never if attempts is None else tenacity.stop_after_attempt(attempts),
        wait=_Wait(backoff), retry=tenacity.retry_if_exception(retry_on), reraise=True)


def poll(check: Callable[[], T | None], *, timeout_seconds: float,
         interval_seconds: float) -> T | None:
    """Call ``check`` until it returns something (not None): that value, or None once
    ``timeout_seconds`` have passed. An error ``check`` raises ends the poll."""
    return tenacity.Retrying(
        stop=tenacity.stop_after_delay(timeout_seconds),
        wait=tenacity.wait_fixed(interval_seconds),
        retry=tenacity.retry_if_result(lambda value: value is None),
        retry_error_callback=lambda state: None)(check)


def last_failure(state: tenacity.RetryCallState) -> BaseException | None:
    """For a ``before_sleep`` hook: the failure just seen."""
    return state.outcome.exception() if state.outcome else None
