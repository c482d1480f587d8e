"""Deadlines for a request's head and body. uvicorn closes idle keep-alive connections, but a
connection that sends part of a request head and then nothing (slowloris) was held open for
ever: 300 of them stayed open indefinitely (issue 23). Here every request head must be complete
within ``HEADER_TIMEOUT_SECONDS`` of its first byte (of the connection, for the first request),
and its body within ``BODY_TIMEOUT_SECONDS`` of the head's end, however slowly either trickles
in (one byte a second keeps no connection alive); otherwise the connection is closed. The body
deadline is for the upload only: a long-poll whose body has arrived runs as long as it asks.

Built on uvicorn's httptools protocol (llhttp, in C) rather than h11's pure-Python parser: the
parser's callbacks mark where a head begins and ends and where a body ends, and a request that
follows its jobs pays about a tenth of a millisecond less of server CPU (issue 22)."""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from . import datehdr

HEADER_TIMEOUT_SECONDS = 10.0
# The largest body allowed (64 MiB by default) needs ~0.5 MiB/s to arrive in time.
BODY_TIMEOUT_SECONDS = 120.0


class HeaderDeadlineProtocol(HttpToolsProtocol):
    header_timeout_seconds = HEADER_TIMEOUT_SECONDS
    body_timeout_seconds = BODY_TIMEOUT_SECONDS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_deadline: asyncio.TimerHandle | None = None
        self._body_deadline: asyncio.TimerHandle | None = None
        self._receiving_body = False
        super().connection_made(transport)
        self._arm_header()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Armed after the parser has seen the whole chunk: a request whose body came with its
        # head (every GET, most small POSTs) never starts a timer.
        if self._receiving_body and self._body_deadline is None and self.parser is not None:
            self._body_deadline = self.loop.call_later(self.body_timeout_seconds,
                                                       self._body_too_slow)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_deadline is None:
            self._arm_header()

    def on_headers_complete(self) -> None:
        self._disarm_header()
        self._receiving_body = True
        datehdr.refresh(self.server_state.default_headers)  # no tick keeps it current
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._receiving_body = False
        self._disarm_body()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header()
        self._disarm_body()
        super().connection_lost(exc)

    def _arm_header(self) -> None:
        self._header_deadline = self.loop.call_later(self.header_timeout_seconds,
                                                     self._headers_too_slow)

    def _disarm_header(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _disarm_body(self) -> None:
        if self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None

    def _headers_too_slow(self) -> None:
        # Cancelled when a head completes: firing means this one did not.
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def _body_too_slow(self) -> None:
        # The application sees the client disconnect; its half-read body is never parsed.
        self._body_deadline = None
        if self._receiving_body and not self.transport.is_closing():
            self.transport.close()


def with_header_timeout(seconds: float, body_seconds: float = BODY_TIMEOUT_SECONDS,
                        ) -> type[HeaderDeadlineProtocol]:
    """The protocol class for uvicorn's ``http`` setting, with these deadlines (seconds)."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,),
                {"header_timeout_seconds": seconds, "body_timeout_seconds": body_seconds})
