"""What the server costs by itself, as process CPU time (user + system), not wall time.

* :func:`per_request_cpu`: server and client CPU per ``GET /api/v1/jobs/{id}`` and per list
  page of 100, over many sequential requests on a warm embedded server;
* :func:`idle_cpu`: the embedded server, its local controller and the controller's workers
  together, with nothing to do (``python bench/server_cost.py``: alone, on a fresh home,
  after a few jobs and once the spare workers have stopped);
* :func:`parked_claims_cpu`: a standalone server (SQLite) with N registered controllers each
  parked in a claim long-poll, as idle controllers are."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _server(home: str) -> psutil.Process:
    return psutil.Process(json.loads((Path(home) / "server.json").read_text())["pid"])


def per_request_cpu(client: Any, n: int) -> dict[str, dict[str, float]]:
    """Milliseconds of server and client CPU per request (``n`` GETs, ``n // 10`` pages)."""
    from atomiverse._config import atomiverse_home

    server = _server(str(atomiverse_home()))
    job_id = client.list_jobs(limit=1).jobs[0]["job_id"]
    calls = {"GET /api/v1/jobs/{id}": (lambda: client.get_job(job_id), n),
             "GET /api/v1/jobs?limit=100": (lambda: client.list_jobs(limit=100), max(n // 10, 50))}
    out = {}
    for name, (call, count) in calls.items():
        call()
        s0, c0 = _cpu(server), time.process_time()
        for _ in range(count):
            call()
        s1, c1 = _cpu(server), time.process_time()
        out[name] = {"server_ms": 1e3 * (s1 - s0) / count, "client_ms": 1e3 * (c1 - c0) / count,
                     "n": count}
    return out


def idle_cpu(home: str, seconds: float = 60.0, settle_seconds: float = 10.0,
             browser_pids: list[int] = ()) -> dict[str, Any]:
    """Percent of one core used by the embedded server and everything under it over
    ``seconds`` (psutil's CPU times count in 10 ms ticks: a minute at least), after
    ``settle_seconds`` for the last job's bookkeeping (replies, the WAL checkpoint); with
    ``browser_pids`` (pages of the dashboard left open), the browser's share apart."""
    server = _server(home)
    time.sleep(settle_seconds)  # the last job's bookkeeping and replies, not idle yet
    procs = [server, *server.children(recursive=True)]
    browser = [psutil.Process(pid) for pid in browser_pids if psutil.pid_exists(pid)]
    before = {p.pid: _cpu(p) for p in procs + browser}
    time.sleep(seconds)  # the measurement itself: nothing to wait for
    out = {"percent_of_core": 100 * _used(procs, before) / seconds, "seconds": seconds,
           "processes": len(procs),
           "by_process": {_role(p): round(100 * _used([p], before) / seconds, 4)
                          for p in procs}}
    if browser_pids:
        out["browser_percent_of_core"] = 100 * _used(browser, before) / seconds
    return out


def _role(proc: psutil.Process) -> str:
    try:
        args = " ".join(proc.cmdline())
    except psutil.Error:
        return f"pid {proc.pid} (gone)"
    for module in ("worker_main", "atomiverse_controller", "atomiverse_server"):
        if module in args:
            return f"{module} pid {proc.pid}"
    return f"pid {proc.pid}"


def _used(procs: list[psutil.Process], before: dict[int, float]) -> float:
    used = 0.0
    for p in procs:
        try:
            used += _cpu(p) - before[p.pid]
        except psutil.NoSuchProcess:  # a worker retired meanwhile: its time is lost, small
            continue
    return used


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parked_claims_cpu(controllers: int, seconds: float) -> dict[str, Any]:
    """Server CPU (percent of one core) while ``controllers`` claim long-polls are parked."""
    import httpx2 as httpx

    home = tempfile.mkdtemp(prefix="bench-parked-")
    db = f"sqlite:///{home}/server.db"
    env = {**os.environ, "ATOMIVERSE_HOME": home}
    env.pop("ATOMIVERSE_BASE_URL", None)
    key = json.loads(subprocess.run(
        [sys.executable, "-m", "atomiverse_server.admin", "--database-url", db,
         "create-workspace", "parked"], env=env, check=True, capture_output=True,
        text=True).stdout)["api_key"]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "atomiverse_server", "--port", str(port),
                             "--home", home, "--database-url", db, "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_up(url, proc)
        tokens = [httpx.post(f"{url}/api/v1/controllers/register",
                             headers={"Authorization": f"Bearer {key}"},
                             json={"name": f"idle-{i}", "slots": 1,
                                   "engines": {"xtb": "0"}}).json()["token"]
                  for i in range(controllers)]
        server = psutil.Process(proc.pid)
        used = asyncio.run(_park_all(url, tokens, server, seconds))
    finally:
        proc.terminate()
        proc.wait(30)
    return {"controllers": controllers, "seconds": seconds,
            "percent_of_core": 100 * used / seconds}


async def _park_all(url: str, tokens: list[str], server: psutil.Process,
                    seconds: float) -> float:
    import httpx2 as httpx

    stop = asyncio.Event()

    async def poll_forever(http: Any, token: str) -> None:
        while not stop.is_set():
            await http.post(f"{url}/api/v1/controllers/claim",
                            headers={"Authorization": f"Bearer {token}"},
                            json={"max_jobs": 1, "wait_seconds": 20}, timeout=60)

    limits = httpx.Limits(max_connections=len(tokens) + 10)
    async with httpx.AsyncClient(limits=limits) as http:
        tasks = [asyncio.create_task(poll_forever(http, t)) for t in tokens]
        await asyncio.sleep(5)  # every poll sent and parked (or not; then it costs more)
        before = _cpu(server)
        await asyncio.sleep(seconds)
        used = _cpu(server) - before
        stop.set()
        for task in tasks:
            task.cancel()
    return used


def _wait_up(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    import httpx2 as httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def _idle_after_jobs(seconds: float, settle_seconds: float, jobs: int) -> dict[str, Any]:
    """A fresh home: start the embedded server, run ``jobs`` water single points, then
    measure ``idle_cpu`` once the settle time (by default past the controller's 60 s
    ``worker_idle_seconds``: only the warm worker is left) is over."""
    from bench.baselines import scoped_env

    home = tempfile.mkdtemp(prefix="bench-idle-")
    fresh = {"ATOMIVERSE_HOME": home, "ATOMIVERSE_BASE_URL": None, "ATOMIVERSE_API_KEY": None}
    with scoped_env(fresh):
        import atomiverse
        from atomiverse.levels import GFN2_XTB

        atomiverse.configure()
        atomiverse.start_local()
        try:
            job = atomiverse.SinglePointEnergy(atoms=atomiverse.Atoms.from_smiles("O"),
                                               level_of_theory=GFN2_XTB).model_dump()
            if jobs:
                out = atomiverse.submit_batch([job] * jobs)
                atomiverse.wait_jobs([e["job_id"] for e in out["jobs"]])
            return idle_cpu(home, seconds, settle_seconds)
        finally:
            atomiverse.stop_local()


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Idle CPU of the embedded server, its local "
                                             "controller and its workers (issue 22)")
    ap.add_argument("--seconds", type=float, default=120.0, help="measured (default 120)")
    ap.add_argument("--settle-seconds", type=float, default=75.0,
                    help="after the jobs, before measuring (default 75: past the spare "
                         "workers' 60 s idle stop)")
    ap.add_argument("--jobs", type=int, default=4, help="water single points run first")
    args = ap.parse_args(argv)
    out = _idle_after_jobs(args.seconds, args.settle_seconds, args.jobs)
    print(json.dumps(out, indent=1))
    print(f"idle, embedded server + local controller + workers: {out['percent_of_core']:.3f}% "
          f"of one core over {out['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
