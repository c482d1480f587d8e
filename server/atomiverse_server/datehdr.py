"""The ``Date`` response header, kept current by the requests themselves instead of a timer.

uvicorn refreshes it from its main loop's tick, ten times a second (we had slowed that to once
a second); an idle server then woke once a second for nothing, a third of what it cost
(issue 22). Here the header is refreshed, in place in uvicorn's shared list, when a request's
head has arrived: every response says the second its request (or, for a long-poll, the latest
request to this server) arrived, and an idle server never wakes for it."""

from __future__ import annotations

import time
from email.utils import formatdate

_HEADER = b"date"
_last_second = -1


def refresh(default_headers: list[tuple[bytes, bytes]]) -> None:
    """Set the ``date`` entry of uvicorn's ``server_state.default_headers`` to now, in place
    (the requests in progress hold the same list). Nothing if dates are turned off."""
    global _last_second
    now = time.time()
    second = int(now)
    if second == _last_second or not default_headers or default_headers[0][0] != _HEADER:
        return
    _last_second = second
    default_headers[0] = (_HEADER, formatdate(now, usegmt=True).encode())
