"""Deadlines for a request's head and body. uvicorn closes idle keep-alive connections, but a
connection that sends part of a request head and then nothing (slowloris) was held open for
ever: 300 of them stayed open indefinitely (issue 23). Here every request head must be complete
within ``HEADER_TIMEOUT_SECONDS`` of its first byte (of the connection, for the first request),
and its body within ``BODY_TIMEOUT_SECONDS`` of the head's end, however slowly either trickles
in (one byte a second keeps no connection alive); otherwise the connection is closed. The body
deadline is for the upload only: a long-poll whose body has arrived runs as long as it asks."""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_SECONDS = 10.0
# The largest body allowed (64 MiB by default) needs ~0.5 MiB/s to arrive in time.
BODY_TIMEOUT_SECONDS = 120.0


class HeaderDeadlineProtocol(H11Protocol):
    header_timeout_seconds = HEADER_TIMEOUT_SECONDS
    body_timeout_seconds = BODY_TIMEOUT_SECONDS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_deadline: asyncio.TimerHandle | None = None
        self._body_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.IDLE:  # a request head has begun, not yet whole
            if self._header_deadline is None and data:
                self._arm()
            return
        self._disarm()
        if state is h11.SEND_BODY:  # head whole, body still coming
            if self._body_deadline is None:
                self._body_deadline = self.loop.call_later(self.body_timeout_seconds,
                                                           self._body_too_slow)
        else:
            self._disarm_body()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._disarm_body()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._header_deadline = self.loop.call_later(self.header_timeout_seconds,
                                                     self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _disarm_body(self) -> None:
        if self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def _body_too_slow(self) -> None:
        # The application sees the client disconnect; its half-read body is never parsed.
        self._body_deadline = None
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self.transport.close()


def with_header_timeout(seconds: float, body_seconds: float = BODY_TIMEOUT_SECONDS,
                        ) -> type[HeaderDeadlineProtocol]:
    """The protocol class for uvicorn's ``http`` setting, with these deadlines (seconds)."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,),
                {"header_timeout_seconds": seconds, "body_timeout_seconds": body_seconds})
