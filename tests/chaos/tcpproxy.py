"""A TCP proxy on loopback that a test can cut and restore: the network between one
controller and its server. asyncio in a thread of the test process.

Two ways to cut: ``reset`` closes every connection through it and refuses new ones at once
(an unreachable host that says so); ``blackhole`` keeps accepting but forwards nothing, so
the peer's requests hang until its own timeouts (a partition that says nothing). Either
way, connections that were open when the cut came are dead afterwards, as after a real
partition; restored, new connections go through again."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from typing import Self

CHUNK_BYTES = 64 * 1024


class TCPProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode = "open"  # "open", "reset" or "blackhole"
        self._loop = asyncio.new_event_loop()
        self._conns: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcpproxy", daemon=True)
        self.port = 0

    def __enter__(self) -> Self:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self._shutdown())
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self, mode: str = "reset") -> None:
        if mode not in ("reset", "blackhole"):
            raise ValueError(f"mode: {mode!r} is not 'reset' or 'blackhole'")
        self._call(self._set(mode))

    def restore(self) -> None:
        self._call(self._set("open"))

    # ----- in the proxy's thread ---------------------------------------------------------
    def _call(self, coro) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._accepted, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _shutdown(self) -> None:
        self._server.close()
        self._drop_all()
        # Their connections aborted, the copying tasks end by themselves; a straggler is
        # cancelled (cancelling all of them first made asyncio log each as an error).
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if tasks:
            _, stragglers = await asyncio.wait(tasks, timeout=5)
            for task in stragglers:
                task.cancel()
        self._loop.call_soon(self._loop.stop)

    async def _set(self, mode: str) -> None:
        was, self.mode = self.mode, mode
        if was == "open" and mode != "open":
            self._drop_all()  # what was in flight when the cable was pulled is gone
        if was == "blackhole" and mode == "open":
            self._drop_all()  # held connections never carried anything: dead

    def _drop_all(self) -> None:
        for writer in list(self._conns):
            _reset(writer)
        self._conns.clear()

    async def _accepted(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        if self.mode == "reset":
            _reset(writer)
            return
        self._conns.add(writer)
        if self.mode == "blackhole":
            await _swallow(reader)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        self._conns.add(up_writer)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer),
                             return_exceptions=True)
        for w in (writer, up_writer):
            self._conns.discard(w)
            w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(CHUNK_BYTES):
                if self.mode != "open":
                    return
                writer.write(data)
                await writer.drain()
        finally:
            if writer.can_write_eof() and not writer.is_closing():
                try:
                    writer.write_eof()
                except OSError:
                    pass


async def _swallow(reader: asyncio.StreamReader) -> None:
    """Read and drop everything until the peer gives up."""
    try:
        while await reader.read(CHUNK_BYTES):
            pass
    except OSError:
        pass


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset, not a polite FIN: the peer sees the connection die."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()
