"""Finding (the body's half of the slowloris one): a client that sends its headers at once and
then trickles the body, a byte a second, held its connection (and the request waiting on the
body) for as long as it liked. Now a body must arrive whole within the body timeout
(``--body-timeout``, default 120 s) of the end of its headers, or the connection is closed.
Real sockets against a real server process, sending authenticated requests (the hard case: an
unauthenticated one is refused before its body is read); the test waits for the server to
close them (bounded), it never expects a time."""

from __future__ import annotations

import select
import socket
import time

import httpx2 as httpx
import pytest
from conftest import start_server, stop_process

CONNECTIONS = 20
BODY_TIMEOUT = 2.0
DECLARED_BYTES = 1000  # at a byte a second, far more than the bound below lets through
BOUND_SECONDS = 60.0  # only a bound on waiting for the event, never an expected time


@pytest.fixture
def slow_body_server(tmp_path):
    srv = start_server(tmp_path / "home", "--body-timeout", str(BODY_TIMEOUT))
    yield srv
    stop_process(srv.proc)


def _head(host: str, port: str, key: str) -> bytes:
    return (f"POST /api/v1/jobs HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {DECLARED_BYTES}\r\n\r\n").encode()


def test_a_body_trickled_a_byte_a_second_is_cut_off(slow_body_server):
    key = slow_body_server.new_workspace("trickler")
    host, port = slow_body_server.url.removeprefix("http://").split(":")
    socks = [socket.create_connection((host, int(port)), timeout=10)
             for _ in range(CONNECTIONS)]
    sent = dict.fromkeys(socks, 0)
    answered: dict[socket.socket, bytes] = {}
    try:
        for s in socks:
            s.sendall(_head(host, port, key) + b"{")
            sent[s] = 1
        deadline = time.monotonic() + BOUND_SECONDS
        while len(answered) < CONNECTIONS and time.monotonic() < deadline:
            open_ = [s for s in socks if s not in answered]
            readable, _, _ = select.select(open_, [], [], 1.0)  # paces the trickle too
            for s in readable:
                try:
                    answered[s] = s.recv(4096)
                except ConnectionError:
                    answered[s] = b""
            for s in open_:
                if s in answered:
                    continue
                try:
                    s.sendall(b" ")
                    sent[s] += 1
                except OSError:
                    answered[s] = b""
        assert len(answered) == CONNECTIONS, \
            f"{CONNECTIONS - len(answered)} trickling uploads still open"
        # Closed without an answer, before the body was whole: the deadline, not the app.
        assert set(answered.values()) == {b""}
        assert max(sent.values()) < DECLARED_BYTES
    finally:
        for s in socks:
            s.close()
    # The server still serves, and a body sent at once is unaffected.
    r = httpx.post(f"{slow_body_server.url}/api/v1/jobs", json={"jobs": []},
                   headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code < 500 and r.status_code != 408


@pytest.mark.slow  # waits past the real body deadline
def test_a_request_whose_body_is_in_is_not_cut_at_the_body_deadline(slow_body_server):
    """A long-poll with a body outlasts the body deadline and still gets its answer."""
    key = slow_body_server.new_workspace("poller")
    token = httpx.post(f"{slow_body_server.url}/api/v1/controllers/register",
                       headers={"Authorization": f"Bearer {key}"},
                       json={"name": "poller", "slots": 1, "cores_per_job": 1,
                             "capacity": None, "engines": {"xtb": "6.5.1"},
                             "hostname": "test"}).json()["token"]
    r = httpx.post(f"{slow_body_server.url}/api/v1/controllers/claim",
                   headers={"Authorization": f"Bearer {token}"},
                   json={"max_jobs": 1, "wait_seconds": BODY_TIMEOUT * 2}, timeout=30)
    assert r.status_code == 200 and r.json()["jobs"] == []
