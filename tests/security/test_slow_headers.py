"""Finding: the server set no timeout for a client that never finishes its headers; 300 such
connections were held open indefinitely. Now a request head must be complete within the
header timeout (``--header-timeout``, default 10 s) of its first byte, however slowly it
trickles in. Real sockets against a real server process; the test waits for the server to
close them (bounded), it does not sleep."""

from __future__ import annotations

import select
import socket
import time

import httpx2 as httpx
import pytest
from conftest import start_server, stop_process

CONNECTIONS = 300
HEADER_TIMEOUT = 2.0
BOUND_SECONDS = 60.0  # only a bound on waiting for the event, never an expected time


@pytest.fixture
def slow_server(tmp_path):
    srv = start_server(tmp_path / "home", "--header-timeout", str(HEADER_TIMEOUT))
    yield srv
    stop_process(srv.proc)


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def test_connections_that_never_finish_their_headers_are_closed(slow_server):
    host, port = slow_server.url.removeprefix("http://").split(":")
    socks = []
    try:
        for i in range(CONNECTIONS):
            s = socket.create_connection((host, int(port)), timeout=10)
            # half a request head; one of every three sends nothing at all
            if i % 3:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            socks.append(s)
        open_ = set(socks)
        deadline = time.monotonic() + BOUND_SECONDS
        trickled = 0
        while open_ and time.monotonic() < deadline:
            readable, _, _ = select.select(list(open_), [], [], 1.0)
            open_ -= {s for s in readable if _closed_by_server(s)}
            # a slowloris keeps trickling header bytes: that must not keep it alive
            for s in list(open_)[:20]:
                try:
                    s.sendall(b"a")
                    trickled += 1
                except OSError:
                    open_.discard(s)
        assert not open_, f"{len(open_)} of {CONNECTIONS} half-open connections still open"
        assert trickled
        # The server still serves, and a request whose head comes at once is unaffected.
        assert httpx.get(f"{slow_server.url}/healthz", timeout=10).status_code == 200
    finally:
        for s in socks:
            s.close()


@pytest.mark.slow  # waits past the real header deadline
def test_a_long_request_is_not_cut_once_its_headers_are_in(slow_server):
    """The deadline is for the head only: a long-poll outlasting it still gets its answer."""
    key = slow_server.new_workspace("poller")
    token = httpx.post(f"{slow_server.url}/api/v1/controllers/register",
                       headers={"Authorization": f"Bearer {key}"},
                       json={"name": "poller", "slots": 1, "cores_per_job": 1,
                             "capacity": None, "engines": {"xtb": "6.5.1"},
                             "hostname": "test"}).json()["token"]
    r = httpx.post(f"{slow_server.url}/api/v1/controllers/claim",
                   headers={"Authorization": f"Bearer {token}"},
                   json={"max_jobs": 1, "wait_seconds": HEADER_TIMEOUT * 2}, timeout=30)
    assert r.status_code == 200 and r.json()["jobs"] == []
