"""The processes of one ATOMIVERSE_HOME, found by what the home records: stopping them all,
and describing them for ``atomiverse local status``."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from atomiverse_core.localhome import (
    CONTROLLER_RECORD,
    SERVER_RECORD,
    process_tree,
    read_record,
    verified_process,
)

from ._embedded_health import restarts

# After the server has had its turn (it drains its controller itself), what remains gets
# SIGTERM, then SIGKILL after this long.
LEFTOVER_GRACE_SECONDS = 5.0


def home_processes(home: Path) -> tuple[psutil.Process | None, psutil.Process | None]:
    """(server, local controller) of this home, each only if its record is verified."""
    server = verified_process(read_record(home, SERVER_RECORD), program="atomiverse_server",
                              home=home)
    controller = verified_process(read_record(home, CONTROLLER_RECORD),
                                  program="atomiverse_controller", home=home)
    return server, controller


def stop_home_processes(home: Path, timeout: float,
                        reap: Callable[[int], None] = lambda pid: None) -> bool:
    """SIGTERM the server (it stops its controller and workers), then end whatever of the
    recorded trees is left. Returns False if nothing of this home was running."""
    server, controller = home_processes(home)
    everyone: dict[int, psutil.Process] = {}
    for root in (server, controller):
        if root is not None:
            everyone.update((p.pid, p) for p in process_tree(root))
    if not everyone:
        return False
    if server is not None:
        _signal(server, signal.SIGTERM)
        _wait_gone([server], timeout, reap)
    left = [p for p in everyone.values() if still_running(p)]
    for p in left:
        _signal(p, signal.SIGTERM)
    left = _wait_gone(left, LEFTOVER_GRACE_SECONDS, reap)
    for p in left:
        _signal(p, signal.SIGKILL)
    _wait_gone(left, LEFTOVER_GRACE_SECONDS, reap)
    (home / CONTROLLER_RECORD).unlink(missing_ok=True)
    return True


def _signal(proc: psutil.Process, sig: int) -> None:
    try:
        proc.send_signal(sig)  # psutil checks the pid still is this process first
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass


def still_running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(procs: list[psutil.Process], timeout: float,
               reap: Callable[[int], None]) -> list[psutil.Process]:
    """Wait until every process has exited (reaping our own children); return the rest."""
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            reap(p.pid)
        _gone, alive = psutil.wait_procs(procs, timeout=0.05)
        alive = [p for p in alive if still_running(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        procs = alive


def describe(home: Path, slots: int | None = None) -> dict[str, Any]:
    """Server, local controller and workers with pids and uptimes (seconds), the last
    restarts and why."""
    server, controller = home_processes(home)
    now = time.time()
    report: dict[str, Any] = {"home": str(home), "server": None, "controller": None,
                              "workers": []}
    server_record = read_record(home, SERVER_RECORD) or {}
    if server is not None:
        report["server"] = {"pid": server.pid, "url": server_record.get("url"),
                            "uptime_seconds": now - server.create_time()}
    history = restarts(home)
    report["server_last_restart"] = history[-1] if history else None
    record = read_record(home, CONTROLLER_RECORD) or {}
    if controller is not None:
        report["controller"] = {
            "pid": controller.pid, "uptime_seconds": now - controller.create_time(),
            "slots": slots, "restarts": record.get("restarts", 0),
            "last_restart": record.get("last_restart")}
        report["workers"] = [{"pid": p.pid, "uptime_seconds": now - p.create_time()}
                             for p in process_tree(controller)[1:]]
    return report
