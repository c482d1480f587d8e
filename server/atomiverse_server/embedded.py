"""Embedded mode: one machine, no configuration. The server keeps a local workspace and key
under ATOMIVERSE_HOME (mode 0600) and supervises its own local controller process."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from atomiverse_core.localhome import (
    CONTROLLER_RECORD,
    process_record,
    process_tree,
    read_record,
    verified_process,
    write_record,
)
from sqlalchemy.engine import Engine

from .db import read_tx, write_tx
from .settings import Settings
from .store import workspaces as workspace_store

log = logging.getLogger("atomiverse.server.embedded")
LOCAL_WORKSPACE = "local"
# A controller that keeps exiting is started again at most this often (seconds).
RESTART_MIN_INTERVAL_SECONDS = 2.0
CLAIM_WAIT_ENV = "ATOMIVERSE_CONTROLLER_CLAIM_WAIT_SECONDS"
LOCAL_CLAIM_WAIT_SECONDS = 55.0  # the server's limit is 60 (ClaimRequest)


def local_controller_name() -> str:
    return f"local-{socket.gethostname()}"


def credentials_path(home: Path) -> Path:
    return home / "credentials.json"


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, without a moment where it is readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def ensure_local_credentials(engine: Engine, home: Path) -> str:
    """Return the local workspace's API key, creating workspace and key on first use."""
    path = credentials_path(home)
    if path.exists():
        key = json.loads(path.read_text()).get("api_key", "")
        with read_tx(engine) as conn:
            if workspace_store.workspace_for_api_key(conn, key=key):
                return key
    with write_tx(engine) as conn:
        ws = workspace_store.get_workspace_by_name(conn, name=LOCAL_WORKSPACE)
        if ws is None:
            ws = workspace_store.create_workspace(conn, name=LOCAL_WORKSPACE)
        key = workspace_store.issue_api_key(conn, workspace_id=ws.id, label="embedded")
    write_private(path, json.dumps({"api_key": key, "workspace": LOCAL_WORKSPACE}))
    return key


def ensure_local_controller_row(engine: Engine, settings: Settings) -> None:
    """Make the local controller routable before its process is up, so that jobs sent to
    ``"local"`` right after start-up queue for it instead of failing."""
    from .store import controllers as controller_store

    name = settings.local_controller_name or local_controller_name()
    with write_tx(engine) as conn:
        ws = workspace_store.get_workspace_by_name(conn, name=LOCAL_WORKSPACE)
        if ws is None or controller_store.controller_by_name(conn, workspace_id=ws.id,
                                                             name=name):
            return
        ctl, _unused_token = controller_store.register_controller(
            conn, workspace_id=ws.id, name=name, slots=settings.local_controller_slots or 1,
            cores_per_job=1, capacity=1_000_000, engines={}, hostname=socket.gethostname(),
            serves_managed=True)
        controller_store.set_status(conn, controller_id=ctl.id, status="starting")


class LocalControllerSupervisor:
    """Keeps exactly one local controller process running while the server runs.

    The controller is started with ``--exit-with-pid`` (this server), so it ends itself
    when this server is gone; a controller of an earlier server of this home that is still
    running when this one starts is stopped first. A controller that exits is started again
    at once (at most every ``RESTART_MIN_INTERVAL_SECONDS``); its registration tells the
    server which leases it holds, ending its predecessor's other leases. ``controller.json``
    in the home records the running one, its restarts and the last one's reason."""

    def __init__(self, settings: Settings, server_url: str) -> None:
        self.settings = settings
        self.server_url = server_url
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._restarts = 0
        self._last_restart: dict[str, object] | None = None
        self._started_at = 0.0

    def command(self) -> list[str]:
        home = self.settings.home
        cmd = [sys.executable, "-m", "atomiverse_controller", "--server", self.server_url,
               "--name", self.settings.local_controller_name or local_controller_name(),
               "--api-key-file", str(credentials_path(home)),
               "--token-file", str(home / "controller.token"),
               "--spool-dir", str(home / "spool"),
               "--exit-with-pid", str(os.getpid())]
        if self.settings.local_controller_slots:
            cmd += ["--slots", str(self.settings.local_controller_slots)]
        return cmd

    def ensure_running(self) -> None:
        with self._lock:
            if self._stopping.is_set() or (self.proc is not None and self.proc.poll() is None):
                return
            if self.proc is None:
                end_previous_controller(self.settings.home)
            else:
                reason = f"exited with status {_describe_status(self.proc.returncode)}"
                log.warning("local controller %s; restarting", reason)
                self._restarts += 1
                self._last_restart = {"at": time.time(), "reason": reason}
            logs = self.settings.home / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            with open(logs / "controller.log", "ab") as out:
                self.proc = subprocess.Popen(self.command(), stdout=out, stderr=out,
                                             stdin=subprocess.DEVNULL, env=controller_env())
            self._started_at = time.monotonic()
            self._record(self.proc)
            log.info("started local controller pid=%s", self.proc.pid)
            threading.Thread(target=self._restart_when_gone, args=(self.proc,),
                             name="local-controller-watch", daemon=True).start()

    def _record(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            record = process_record(psutil.Process(proc.pid), restarts=self._restarts,
                                    last_restart=self._last_restart)
        except psutil.NoSuchProcess:
            return  # gone already: the watch thread restarts it and records that one
        write_record(self.settings.home, CONTROLLER_RECORD, record)

    def _restart_when_gone(self, proc: subprocess.Popen[bytes]) -> None:
        """Restart at once, not at the next periodic check: until the new process registers,
        the jobs the dead one held wait."""
        proc.wait()
        pause = RESTART_MIN_INTERVAL_SECONDS - (time.monotonic() - self._started_at)
        if not self._stopping.wait(max(0.0, pause)):
            self.ensure_running()

    def stop(self, grace_seconds: float = 15.0) -> None:
        with self._lock:
            self._stopping.set()
            proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        (self.settings.home / CONTROLLER_RECORD).unlink(missing_ok=True)


def controller_env() -> dict[str, str]:
    """The local controller's environment: ours, with its claim long-poll as long as the
    server allows unless the user chose. On loopback no proxy cuts a long poll, and each
    renewal is a request and a claim query for nothing on an idle machine (issue 22)."""
    return {CLAIM_WAIT_ENV: str(LOCAL_CLAIM_WAIT_SECONDS), **os.environ}


def end_previous_controller(home: Path, grace_seconds: float = 10.0) -> None:
    """Stop a local controller an earlier server of this home left running (it exits by
    itself within seconds of its server, but one home must never have two). Found by
    ``controller.json`` and verified (start time, command line naming this home); two
    SIGTERMs ask for the cold stop: it spools what it could not deliver, which the new
    controller sends."""
    previous = verified_process(read_record(home, CONTROLLER_RECORD),
                                program="atomiverse_controller", home=home)
    if previous is None:
        return
    tree = process_tree(previous)
    log.warning("a local controller of an earlier server is still running (pid %s); "
                "stopping it", previous.pid)
    for sig in (signal.SIGTERM, signal.SIGTERM):
        with contextlib.suppress(psutil.NoSuchProcess):
            previous.send_signal(sig)
    _gone, alive = psutil.wait_procs(tree[:1], timeout=grace_seconds)
    for p in alive + tree[1:]:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(tree, timeout=grace_seconds)


def _describe_status(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        with contextlib.suppress(ValueError):
            return f"{returncode} ({signal.Signals(-returncode).name})"
    return str(returncode)
