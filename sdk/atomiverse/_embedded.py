"""Start, reuse and stop the embedded server (and, through it, the local controller).

State lives under ATOMIVERSE_HOME: ``server.json`` (pid and URL), ``credentials.json``
(the local API key, mode 0600, written by the server), ``logs/``. The server outlives the
script that started it, so the next script reuses it; ``atomiverse local stop`` ends it."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx

from ._config import atomiverse_home
from ._exceptions import APIConnectionError

START_TIMEOUT_SECONDS = 120.0
# Servers this process launched. The server outlives us on purpose; holding the Popen keeps
# it from being collected (and warned about) while it runs, and lets stop() reap it.
_launched: dict[int, subprocess.Popen[bytes]] = {}


def local_controller_name() -> str:
    return f"local-{socket.gethostname()}"


@contextlib.contextmanager
def _launch_lock(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".launch.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_state(home: Path) -> dict[str, Any] | None:
    try:
        return json.loads((home / "server.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _healthy(url: str) -> dict[str, Any] | None:
    try:
        r = httpx.get(f"{url}/healthz", timeout=2.0)
        return r.json() if r.status_code == 200 else None
    except httpx.HTTPError:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def credentials(home: Path | None = None) -> dict[str, str]:
    home = home or atomiverse_home()
    return json.loads((home / "credentials.json").read_text())


def ensure_running(*, wait_for_controller: bool = False,
                   timeout: float = START_TIMEOUT_SECONDS) -> tuple[str, str]:
    """Return (base_url, api_key) of the embedded server, starting it if needed."""
    home = atomiverse_home()
    with _launch_lock(home):
        state = _read_state(home)
        if not (state and _pid_alive(state["pid"]) and _healthy(state["url"])):
            state = _start(home, timeout)
    key = credentials(home)["api_key"]
    if wait_for_controller:
        _wait_for_local_controller(state["url"], key, state.get("started_at", 0.0), timeout)
    return state["url"], key


def _start(home: Path, timeout: float) -> dict[str, Any]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = os.environ.copy()
    env.pop("ATOMIVERSE_BASE_URL", None)
    started_at = time.time()
    with open(logs / "server.log", "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "atomiverse_server", "--embedded", "--home", str(home),
             "--port", str(port), "--log-level", "warning"],
            stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not _healthy(url):
        if proc.poll() is not None:
            raise APIConnectionError(f"the embedded server exited with status {proc.returncode}; "
                                     f"see {logs / 'server.log'}")
        if time.monotonic() > deadline:
            proc.kill()
            raise APIConnectionError(f"the embedded server did not start within {timeout:.0f} s;"
                                     f" see {logs / 'server.log'}")
        time.sleep(0.05)
    _launched[proc.pid] = proc
    state = {"pid": proc.pid, "url": url, "started_at": started_at}
    (home / "server.json").write_text(json.dumps(state))
    return state


def _wait_for_local_controller(url: str, key: str, since: float, timeout: float) -> None:
    """Block until the local controller has registered (its workers are warm by then)."""
    from datetime import datetime

    name = local_controller_name()
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {key}"}
    while time.monotonic() < deadline:
        r = httpx.get(f"{url}/api/v1/controllers", headers=headers, timeout=5.0)
        for c in r.json().get("controllers", []):
            registered = datetime.fromisoformat(c["registered_at"]).timestamp()
            if c["name"] == name and c["status"] == "online" and registered >= since - 1:
                return
        time.sleep(0.1)
    raise APIConnectionError(f"the local controller did not come up within {timeout:.0f} s; "
                             f"see {atomiverse_home() / 'logs' / 'controller.log'}")


def stop(timeout: float = 30.0) -> bool:
    """Stop the embedded server and its local controller. Returns False if none was running."""
    home = atomiverse_home()
    with _launch_lock(home):
        state = _read_state(home)
        if not state or not _pid_alive(state["pid"]):
            (home / "server.json").unlink(missing_ok=True)
            return False
        pid = state["pid"]
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
        (home / "server.json").unlink(missing_ok=True)
        return True


def _reap(pid: int) -> None:
    # If this process started the server it is our child: collect it so it stops existing.
    proc = _launched.get(pid)
    if proc is not None:
        if proc.poll() is not None:
            del _launched[pid]
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def status() -> dict[str, Any] | None:
    state = _read_state(atomiverse_home())
    if state and _pid_alive(state["pid"]) and _healthy(state["url"]):
        return state
    return None
