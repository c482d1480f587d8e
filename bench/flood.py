"""Flood figures for ``bench/reliability.py`` (issue 23): what an anonymous or abusive client
costs a real server process on loopback, each beside a baseline measured in the same run.

* CPU of the server (user + system, seconds) per refused 100 000-atom job, against per
  accepted water job;
* the server's RSS (MiB) while 50 clients without credentials each upload a 60 MiB batch at
  once (under the 64 MiB body limit), against its RSS before;
* latency (ms) of an authenticated ``GET /api/v1/jobs`` while 1000 idle connections are open,
  against the same requests with none, alternating (none, idle, none, idle).
"""

from __future__ import annotations

import json
import random
import select
import socket
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psutil

HUGE_ATOMS = 100_000
HUGE_REPEATS = 5
WATER_PER_ROUND = 20
UPLOADERS = 50
UPLOAD_BYTES = 60 * 1024 * 1024
CHUNK = b"x" * (1024 * 1024)
IDLE_CONNECTIONS = 1000
GETS_PER_ROUND = 100
ROUNDS = 2
UPLOAD_BOUND_SECONDS = 60.0  # a bound on one upload, never an expected time


def _server_cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _job(atoms: int, name: str) -> dict[str, Any]:
    rng = random.Random(atoms)
    positions = [[rng.uniform(-50, 50) for _ in range(3)] for _ in range(atoms)]
    return {"job_type": "single_point_energy", "name": name, "use_cache": False,
            "atoms": {"numbers": [6] * atoms, "positions": positions, "charge": 0,
                      "multiplicity": 1},
            "level_of_theory": {"method": "gfn2-xtb"}}


def oversized_job_cpu(url: str, key: str, proc: psutil.Process) -> dict[str, Any]:
    """Server CPU per refused huge job and per accepted water job, measured alternately
    (a round: one huge job, then ``WATER_PER_ROUND`` water jobs, since one water job costs
    less than the clock tick the kernel counts CPU in)."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    huge = json.dumps({"job": _job(HUGE_ATOMS, "huge")}).encode()
    figures: dict[str, Any] = {"huge_statuses": [], "water_statuses": {}}
    cpu = {"huge": 0.0, "water": 0.0}
    with httpx.Client(base_url=url, headers=headers, timeout=600) as http:
        http.get("/api/v1/jobs?limit=1")  # connection and auth cache warm for both
        for i in range(HUGE_REPEATS):  # alternating, so a drifting machine hits both alike
            before = _server_cpu(proc)
            r = http.post("/api/v1/jobs", content=huge)
            cpu["huge"] += _server_cpu(proc) - before
            figures["huge_statuses"].append(r.status_code)
            figures["huge_detail"] = r.json().get("detail")
            before = _server_cpu(proc)
            for k in range(WATER_PER_ROUND):
                r = http.post("/api/v1/jobs", content=json.dumps({"job": _water(f"w{i}-{k}")}))
                figures["water_statuses"][r.status_code] = \
                    figures["water_statuses"].get(r.status_code, 0) + 1
            cpu["water"] += _server_cpu(proc) - before
    figures["huge_body_mib"] = round(len(huge) / 2**20, 1)
    figures["huge_cpu_ms_per_job"] = round(1000 * cpu["huge"] / HUGE_REPEATS, 1)
    figures["water_cpu_ms_per_job"] = round(
        1000 * cpu["water"] / (HUGE_REPEATS * WATER_PER_ROUND), 2)
    return figures


def _water(name: str) -> dict[str, Any]:
    return {**_job(0, name), "atoms": {
        "numbers": [8, 1, 1], "positions": [[0, 0, 0.12], [0, 0.76, -0.48], [0, -0.76, -0.48]],
        "charge": 0, "multiplicity": 1}}


def _upload(host: str, port: int, sent: list[int], answers: list[str]) -> None:
    # The batch route: the single-job route's own cap (bodylimit.py) would refuse 60 MiB by
    # its Content-Length; this measures what the body limit leaves to authentication.
    head = (f"POST /api/v1/jobs/submit-batch HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {UPLOAD_BYTES}\r\n\r\n")
    n = 0
    answer = "closed without an answer"
    deadline = time.monotonic() + UPLOAD_BOUND_SECONDS
    try:
        with socket.create_connection((host, port), timeout=1.0) as s:
            s.sendall(head.encode())
            while n < UPLOAD_BYTES and time.monotonic() < deadline:
                if select.select([s], [], [], 0)[0]:
                    break  # the server answered (or closed) before the body was in
                try:
                    n += s.send(CHUNK[:UPLOAD_BYTES - n])
                except TimeoutError:
                    continue
            s.settimeout(10.0)
            first = s.recv(200).split(b"\r\n", 1)[0].decode(errors="replace")
            answer = first or answer
    except OSError as e:
        answer = f"{type(e).__name__}"
    sent.append(n)
    answers.append(answer)


def unauthenticated_uploads_rss(url: str, proc: psutil.Process) -> dict[str, Any]:
    host, port = url.removeprefix("http://").split(":")
    before = proc.memory_info().rss
    peak = before
    sent: list[int] = []
    answers: list[str] = []
    threads = [threading.Thread(target=_upload, args=(host, int(port), sent, answers))
               for _ in range(UPLOADERS)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, proc.memory_info().rss)
        threads[0].join(0.02)  # the sampling period
    for t in threads:
        t.join()
    return {"uploaders": UPLOADERS, "upload_mib": UPLOAD_BYTES // 2**20,
            "rss_before_mib": round(before / 2**20, 1), "rss_peak_mib": round(peak / 2**20, 1),
            "rss_after_mib": round(proc.memory_info().rss / 2**20, 1),
            "mib_sent_per_upload_max": round(max(sent) / 2**20, 1),
            "mib_sent_total": round(sum(sent) / 2**20, 1),
            "answers": dict(sorted({a: answers.count(a) for a in answers}.items()))}


def _gets(http: httpx.Client) -> tuple[list[float], dict[int, int]]:
    times, statuses = [], {}
    for _ in range(GETS_PER_ROUND):
        t = time.perf_counter()
        r = http.get("/api/v1/jobs?limit=50")
        times.append(time.perf_counter() - t)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
    return times, statuses


def _open_idle(host: str, port: int, url: str) -> list[socket.socket]:
    """Open the idle connections and return once the server has taken them all: the kernel
    completes a connect before the server accepts it, and timing GETs during that burst of
    accepts would measure the burst, not the idle connections. A request on a connection
    opened after them is answered only after the server has accepted those before it."""
    idle = [socket.create_connection((host, port), timeout=10)
            for _ in range(IDLE_CONNECTIONS)]
    httpx.get(f"{url}/healthz", timeout=60)
    return idle


def _still_open(socks: list[socket.socket]) -> int:
    open_ = 0
    for s in socks:
        s.setblocking(False)
        try:
            open_ += s.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:  # nothing to read and not closed: open
            open_ += 1
        except OSError:
            pass
    return open_


def idle_connections_latency(url: str, key: str) -> dict[str, Any]:
    host, port = url.removeprefix("http://").split(":")
    samples: dict[str, list[float]] = {"none": [], "idle": []}
    statuses: dict[str, dict[int, int]] = {"none": {}, "idle": {}}
    open_at_end = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                      timeout=30) as http:
        http.get("/api/v1/jobs?limit=50")  # the measuring connection opens before the idle
        for _ in range(ROUNDS):
            times, got = _gets(http)
            samples["none"] += times
            _merge(statuses["none"], got)
            idle = _open_idle(host, int(port), url)
            try:
                times, got = _gets(http)
                open_at_end.append(_still_open(idle))
            finally:
                for s in idle:
                    s.close()
            samples["idle"] += times
            _merge(statuses["idle"], got)
        # A new connection while the idle ones are open: what a new client meets.
        idle = _open_idle(host, int(port), url)
        try:
            fresh = httpx.get(f"{url}/api/v1/jobs?limit=50", timeout=30,
                              headers={"Authorization": f"Bearer {key}"}).status_code
        finally:
            for s in idle:
                s.close()

    def ms(values: list[float], q: int) -> float:
        return round(1000 * statistics.quantiles(values, n=100)[q - 1], 2)

    return {"idle_connections": IDLE_CONNECTIONS, "gets_each": len(samples["none"]),
            "p50_ms_none": ms(samples["none"], 50), "p99_ms_none": ms(samples["none"], 99),
            "p50_ms_idle": ms(samples["idle"], 50), "p99_ms_idle": ms(samples["idle"], 99),
            "p50_ratio": round(statistics.median(samples["idle"])
                               / statistics.median(samples["none"]), 2),
            "statuses_none": statuses["none"], "statuses_idle": statuses["idle"],
            "idle_still_open_after_gets": open_at_end, "new_connection_status": fresh}


def _merge(into: dict[int, int], got: dict[int, int]) -> None:
    for k, v in got.items():
        into[k] = into.get(k, 0) + v


def flood(home: Path, stack_class: Any) -> dict[str, Any]:
    """One server (defaults, but rates high enough that the figures measure the work and not
    the rate limit), three floods one after another."""
    stack = stack_class(home, env_extra={"ATOMIVERSE_JOB_RATE_PER_MINUTE": "100000"})
    stack.start_server()
    try:
        key = stack.admin("create-workspace", "flood")["api_key"]
        proc = psutil.Process(stack.server.pid)
        return {"oversized_job": oversized_job_cpu(stack.url, key, proc),
                "uploads": unauthenticated_uploads_rss(stack.url, proc),
                "idle_connections": idle_connections_latency(stack.url, key)}
    finally:
        stack.stop()


def markdown(f: dict[str, Any]) -> list[str]:
    o, u, i = f["oversized_job"], f["uploads"], f["idle_connections"]
    return ["## Floods", "",
            ("One server with the default settings (the job rate limit raised so that the "
            "figures measure the work, not the limit)."), "",
            "| measure | value | baseline in the same run |", "|---|---|---|",
            (f"| server CPU per refused {HUGE_ATOMS} atom job ({o['huge_body_mib']} MiB of "
            f"JSON) | {o['huge_cpu_ms_per_job']} ms (statuses {o['huge_statuses']}) | "
            f"{o['water_cpu_ms_per_job']} ms per accepted water job ({o['water_statuses']}) |"),
            (f"| server RSS, {u['uploaders']} concurrent {u['upload_mib']} MiB uploads without "
            f"credentials | peak {u['rss_peak_mib']} MiB, after {u['rss_after_mib']} MiB; "
            f"answers {u['answers']}; at most {u['mib_sent_per_upload_max']} MiB sent by one "
            f"client | {u['rss_before_mib']} MiB before |"),
            (f"| `GET /api/v1/jobs` with {i['idle_connections']} idle connections open | p50 "
            f"{i['p50_ms_idle']} ms, p99 {i['p99_ms_idle']} ms (ratio {i['p50_ratio']}); "
            f"statuses {i['statuses_idle']}; a new connection then: "
            f"{i['new_connection_status']} | p50 {i['p50_ms_none']} ms, p99 "
            f"{i['p99_ms_none']} ms with none |"), ""]
