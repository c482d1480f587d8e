"""Start, reuse, restart and stop the embedded server (and, through it, the local controller).

State lives under ATOMIVERSE_HOME: ``server.json`` (pid, start time and URL: trusted only
while that pid still is this home's server, see ``localhome``), ``controller.json`` (the local
controller, written by the server), ``credentials.json`` (the local API key, mode 0600,
written by the server), ``server.secret`` (0600: what the server proves it knows before the
SDK sends it the key, see ``_embedded_identity``), ``restarts.json``, ``logs/``. The server outlives the script that
started it, so the next script reuses it; a server that died is started again by the next
call that finds it gone, in any process (``revive``); ``atomiverse local stop`` ends it, and
leaves ``stopped.json`` so that a client still running is told, not obeyed behind the user's
back: only a new connection (a new client, ``local start``) starts it again."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psutil
from atomiverse_core import retry
from atomiverse_core.localhome import (
    SERVER_RECORD,
    UPGRADE_NOTICE,
    home_path,
    process_record,
    read_record,
    server_secret,
    verified_process,
    write_record,
)

from ._config import atomiverse_home
from ._embedded_health import (
    CrashLoopError,
    EmbeddedServerError,
    PortTakenError,
    check_home_can_start,
    check_restart_budget,
    describe_restart,
    exited_while_starting,
    forget_restarts,
    log_size,
    log_tail,
    note_restart,
    server_log,
)
from ._embedded_identity import ServerIdentityError, check_server_identity
from ._embedded_procs import still_running, stop_home_processes
from ._exceptions import APIConnectionError

__all__ = ["CrashLoopError", "EmbeddedServerError", "ServerIdentityError", "controllers_at",
           "ensure_running", "revive", "status", "stop", "wait_for_local_controller"]

START_TIMEOUT_SECONDS = 120.0
# How often a starting server's log is read for its upgrade notice.
UPGRADE_CHECK_SECONDS = 2.0
# A running server that has not answered /healthz for this long is reported, not replaced.
UNRESPONSIVE_SECONDS = 10.0
# Written by a deliberate stop; removed by the next deliberate start or new connection.
STOPPED_RECORD = "stopped.json"
# Servers this process launched. The server outlives us on purpose; holding the Popen keeps
# it from being collected (and warned about) while it runs, and lets stop() reap it.
_launched: dict[int, subprocess.Popen[bytes]] = {}


def local_controller_name() -> str:
    return f"local-{socket.gethostname()}"


@contextlib.contextmanager
def _launch_lock(home: Path) -> Iterator[None]:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)  # private from the start (issue 23)
    fd = os.open(home / ".launch.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_state(home: Path) -> dict[str, Any] | None:
    return read_record(home, SERVER_RECORD)


def verified_server(home: Path) -> tuple[dict[str, Any], psutil.Process] | None:
    """server.json and its process, if that process still is this home's server."""
    state = _read_state(home)
    proc = verified_process(state, program="atomiverse_server", home=home)
    return (state, proc) if state is not None and proc is not None else None


def _healthy(url: str) -> dict[str, Any] | None:
    try:
        r = httpx.get(f"{url}/healthz", timeout=2.0)
        return r.json() if r.status_code == 200 else None
    except httpx.HTTPError:
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def credentials(home: Path | None = None) -> dict[str, str]:
    home = home or atomiverse_home()
    return json.loads((home / "credentials.json").read_text())


def ensure_running(*, wait_for_controller: bool = False, timeout: float = START_TIMEOUT_SECONDS,
                   deliberate: bool = False, reviving: bool = False) -> tuple[str, str]:
    """Return (base_url, api_key) of the embedded server, starting it if needed.
    ``deliberate``: the user asked for it (``local start``): past crashes are forgiven.
    ``reviving``: a connection already made found the server gone: started again only if it
    died, not if it was stopped (``EmbeddedServerError``)."""
    home = home_path(atomiverse_home())
    with _launch_lock(home):
        if deliberate:
            forget_restarts(home)
        state = _running_state(home)
        if state is None:
            if reviving:
                _refuse_if_stopped(home)
            state = _start_again(home, timeout)
        (home / STOPPED_RECORD).unlink(missing_ok=True)
    key = credentials(home)["api_key"]
    if wait_for_controller:
        _wait_for_local_controller(controllers_at(state["url"], key),
                                   state.get("started_at", 0.0), timeout)
    return state["url"], key


def revive(timeout: float = START_TIMEOUT_SECONDS) -> tuple[str, str]:
    """After a connection error: the embedded server's (base_url, api_key) now, restarting
    it if it is gone (whoever notices first restarts it; the others find it running). Raises
    ``CrashLoopError`` after too many restarts, ``EmbeddedServerError`` if it cannot start."""
    return ensure_running(timeout=timeout, reviving=True)


def _refuse_if_stopped(home: Path) -> None:
    stopped = read_record(home, STOPPED_RECORD)
    if stopped is not None:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stopped.get("stopped_at", 0)))
        raise EmbeddedServerError(
            f"the embedded server of {home} was stopped at {at} (`atomiverse local stop` or "
            f"atomiverse.stop_local()); this client does not start it again behind that: "
            f"`atomiverse local start` (or atomiverse.start_local(), or a new Client) does")


def _running_state(home: Path) -> dict[str, Any] | None:
    """server.json if this home's server runs and answers; None if it is gone. A server
    that runs but does not answer is not replaced (two servers on one database): raised."""
    found = verified_server(home)
    if found is None:
        return None
    state, proc = found
    # A server that is starting answers soon; one that never does is reported, not replaced.
    answer = retry.poll(lambda: _answers_or_gone(state["url"], proc),
                        timeout_seconds=UNRESPONSIVE_SECONDS, interval_seconds=0.2)
    if answer is None:
        raise EmbeddedServerError(
            f"the embedded server (pid {proc.pid}, {state['url']}) runs but does not "
            f"answer; `atomiverse local stop` ends it; see {server_log(home)}")
    if answer == "gone":
        return None
    check_server_identity(home, state["url"])
    return state


def _answers_or_gone(url: str, proc: psutil.Process) -> str | None:
    if _healthy(url):
        return "answers"
    return None if still_running(proc) else "gone"


def _start_again(home: Path, timeout: float) -> dict[str, Any]:
    """Start a server where none runs; one that had been started and is gone counts
    against the restart budget. A server.json naming a process that is not this home's
    server (a stale pid now used by something else) is ignored, never acted on."""
    previous = _read_state(home)
    if previous is not None:
        check_restart_budget(home)
    try:
        state = _start(home, timeout)
    except PortTakenError:  # another program took the free port first: pick another
        state = _start(home, timeout)
    if previous is not None:
        note_restart(home, describe_restart(previous), state["pid"])
    return state


def _start(home: Path, timeout: float) -> dict[str, Any]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    (home / "logs").mkdir(parents=True, exist_ok=True)
    check_home_can_start(home)
    server_secret(home)  # before the server starts, so that it proves the same one
    log = server_log(home)
    log_from = log_size(log)
    env = os.environ.copy()
    env.pop("ATOMIVERSE_BASE_URL", None)
    started_at = time.time()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "atomiverse_server", "--embedded", "--home", str(home),
             "--port", str(port), "--log-level", "warning"],
            stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    _launched[proc.pid] = proc

    def started() -> bool | None:
        if _healthy(url):
            return True
        if proc.poll() is not None:
            raise exited_while_starting(home, proc.returncode, log_from)
        return None

    if not _wait_started(started, timeout, log, log_from):
        proc.kill()
        proc.wait()
        raise EmbeddedServerError(
            f"the embedded server did not start within {timeout:.0f} s; last lines of "
            f"{log}:\n{log_tail(log, log_from)}")
    try:
        check_server_identity(home, url)
    except ServerIdentityError:
        proc.kill()  # whatever answers on its port is not it; ours must not run unseen
        proc.wait()
        raise
    state = {**process_record(psutil.Process(proc.pid)), "url": url, "home": str(home),
             "started_at": started_at}
    write_record(home, SERVER_RECORD, state)
    return state


def _wait_started(started: Any, timeout: float, log: Path, log_from: int) -> bool:
    """Whether ``started`` came true within ``timeout`` seconds, or at all once the server's
    log says it is upgrading its database (minutes over a big home: given up on after
    ``timeout``, it would roll back and start over on every start, and never finish)."""
    deadline = time.monotonic() + timeout
    while True:
        step = min(UPGRADE_CHECK_SECONDS, max(0.0, deadline - time.monotonic()))
        if retry.poll(started, timeout_seconds=step, interval_seconds=0.05) is not None:
            return True
        if deadline != math.inf:
            notice = _upgrade_notice(log, log_from)
            if notice is not None:
                print(f"atomiverse: the embedded server is {notice}; waiting for it (its log: "
                      f"{log})", file=sys.stderr, flush=True)
                deadline = math.inf
        if time.monotonic() >= deadline:
            return False


def _upgrade_notice(log: Path, log_from: int) -> str | None:
    """What the starting server's log says after its upgrade notice, if it wrote one."""
    for line in log_tail(log, log_from, lines=1000).splitlines():
        if UPGRADE_NOTICE in line:
            return line.split(UPGRADE_NOTICE, 1)[1].strip().rstrip(".")
    return None


def wait_for_local_controller(list_controllers: Callable[[], list[dict[str, Any]]],
                              timeout: float = START_TIMEOUT_SECONDS) -> None:
    """Block until the running server's local controller has registered since the server
    started (``list_controllers``: the workspace's controllers as the API lists them). Until
    then the server knows no engine for this machine: a job sent meanwhile is stored without
    its cache key (it is never answered from the cache, nor answers others)."""
    state = _read_state(home_path(atomiverse_home())) or {}
    _wait_for_local_controller(list_controllers, state.get("started_at", 0.0), timeout)


def _wait_for_local_controller(list_controllers: Callable[[], list[dict[str, Any]]],
                               since: float, timeout: float) -> None:
    """Block until the local controller has registered (its workers are warm by then)."""
    from datetime import datetime

    name = local_controller_name()

    def registered() -> bool | None:
        for c in list_controllers():
            at = datetime.fromisoformat(c["registered_at"]).timestamp()
            if c["name"] == name and c["status"] == "online" and at >= since - 1:
                return True
        return None

    if retry.poll(registered, timeout_seconds=timeout, interval_seconds=0.1) is None:
        raise APIConnectionError(f"the local controller did not come up within "
                                 f"{timeout:.0f} s; see "
                                 f"{atomiverse_home() / 'logs' / 'controller.log'}")


def controllers_at(url: str, key: str) -> Callable[[], list[dict[str, Any]]]:
    """A listing of the workspace's controllers on the server at ``url``, for
    :func:`wait_for_local_controller`."""

    def listed() -> list[dict[str, Any]]:
        r = httpx.get(f"{url}/api/v1/controllers", headers={"Authorization": f"Bearer {key}"},
                      timeout=5.0)
        return list(r.json().get("controllers", []))
    return listed


def stop(timeout: float = 30.0) -> bool:
    """Stop every process of this home: the server, its local controller and the
    controller's workers, found by what the home records (pids checked against their start
    time and command line, never by name). Returns False if none was running."""
    home = home_path(atomiverse_home())
    with _launch_lock(home):
        stopped = stop_home_processes(home, timeout, reap=_reap)
        (home / SERVER_RECORD).unlink(missing_ok=True)
        write_record(home, STOPPED_RECORD, {"stopped_at": time.time(), "by_pid": os.getpid()})
        forget_restarts(home)
    for pid in list(_launched):  # servers of ours that died meanwhile: collect them
        _reap(pid)
    return stopped


def _reap(pid: int) -> None:
    # If this process started the server it is our child: collect it so it stops existing.
    proc = _launched.get(pid)
    if proc is not None and proc.poll() is not None:
        del _launched[pid]


def status() -> dict[str, Any] | None:
    """server.json if its process is this home's server and answers; else None."""
    return _running_state(home_path(atomiverse_home()))
