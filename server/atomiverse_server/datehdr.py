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
_formatted: tuple[int, bytes] = (-1, b"")  # the second last formatted, and its text


def refresh(default_headers: list[tuple[bytes, bytes]]) -> None:
    """Set the ``date`` entry of uvicorn's ``server_state.default_headers`` to now, in place
    (the requests in progress hold the same list). Nothing if dates are turned off."""
    global _formatted
    if not default_headers or default_headers[0][0] != _HEADER:
        return
    now = time.time()
    if int(now) != _formatted[0]:  # formatted once a second at most
        _formatted = (int(now), formatdate(now, usegmt=True).encode())
    default_headers[0] = (_HEADER, _formatted[1])
