"""Embedded mode: one machine, no configuration. The server keeps a local workspace and key
under ATOMIVERSE_HOME (mode 0600) and supervises its own local controller process."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from sqlalchemy.engine import Engine

from .db import read_tx, write_tx
from .settings import Settings
from .store import workspaces as workspace_store

log = logging.getLogger("atomiverse.server.embedded")
LOCAL_WORKSPACE = "local"


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
    """Keeps the local controller process running while the server runs."""

    def __init__(self, settings: Settings, server_url: str) -> None:
        self.settings = settings
        self.server_url = server_url
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopping = False

    def command(self) -> list[str]:
        home = self.settings.home
        cmd = [sys.executable, "-m", "atomiverse_controller", "--server", self.server_url,
               "--name", self.settings.local_controller_name or local_controller_name(),
               "--api-key-file", str(credentials_path(home)),
               "--token-file", str(home / "controller.token"),
               "--spool-dir", str(home / "spool")]
        if self.settings.local_controller_slots:
            cmd += ["--slots", str(self.settings.local_controller_slots)]
        return cmd

    def ensure_running(self) -> None:
        with self._lock:
            if self._stopping or (self.proc is not None and self.proc.poll() is None):
                return
            if self.proc is not None:
                log.warning("local controller exited with status %s; restarting",
                            self.proc.returncode)
            logs = self.settings.home / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            with open(logs / "controller.log", "ab") as out:
                self.proc = subprocess.Popen(self.command(), stdout=out, stderr=out,
                                             stdin=subprocess.DEVNULL)
            log.info("started local controller pid=%s", self.proc.pid)

    def stop(self, grace_seconds: float = 15.0) -> None:
        with self._lock:
            self._stopping = True
            proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
