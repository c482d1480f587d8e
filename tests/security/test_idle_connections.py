"""Finding: uvicorn answers 503 to every request while ``--limit-concurrency`` connections are
open, idle ones included; at the old default of 1000, a client holding 1000 idle sockets (each
kept up to the header timeout, and reopened) shut every other client out. The default is now
4096 (and the server raises its open-file limit to match). Real sockets against a real server
process with its default settings."""

from __future__ import annotations

import resource
import socket

import httpx2 as httpx
from conftest import start_server, stop_process

IDLE = 1000


def _enough_files_here(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def test_requests_are_served_while_1000_idle_connections_are_open(tmp_path):
    _enough_files_here(IDLE + 256)
    srv = start_server(tmp_path / "home")
    key = srv.new_workspace("busy")
    host, port = srv.url.removeprefix("http://").split(":")
    idle: list[socket.socket] = []
    try:
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"},
                          timeout=30) as http:
            assert http.get("/api/v1/jobs").status_code == 200  # opened before the flood
            idle = [socket.create_connection((host, int(port)), timeout=10)
                    for _ in range(IDLE)]
            statuses = [http.get("/api/v1/jobs").status_code for _ in range(20)]
            fresh = httpx.get(f"{srv.url}/api/v1/jobs", timeout=30,
                              headers={"Authorization": f"Bearer {key}"}).status_code
        assert statuses == [200] * 20
        assert fresh == 200
    finally:
        for s in idle:
            s.close()
        stop_process(srv.proc)
