"""An embedded server of this test's own, started by the SDK in a home of its own (as a user
would: no base URL, no key), and stopped afterwards with the environment put back."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil

_ENV = ("ATOMIVERSE_HOME", "ATOMIVERSE_BASE_URL", "ATOMIVERSE_API_KEY")
CLI_TIMEOUT_SECONDS = 120.0


@contextlib.contextmanager
def embedded_env(home: Path) -> Iterator[Path]:
    """The SDK pointed at ``home``'s embedded server (no base URL, no key, the default client
    reset); afterwards that server stopped and the environment put back."""
    import atomiverse

    saved = {k: os.environ.get(k) for k in _ENV}
    os.environ["ATOMIVERSE_HOME"] = str(home)
    os.environ.pop("ATOMIVERSE_BASE_URL", None)
    os.environ.pop("ATOMIVERSE_API_KEY", None)
    atomiverse.configure()
    try:
        yield home
    finally:
        atomiverse.stop_local()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        atomiverse.configure()


@contextlib.contextmanager
def running_embedded_home(home: Path) -> Iterator[Path]:
    """Start the embedded server for ``home``; yield the home as the SDK names it."""
    from atomiverse import _embedded

    with embedded_env(home):
        _embedded.ensure_running()
        yield home.resolve()


def home_processes(home: Path) -> list[psutil.Process]:
    """Every live process that belongs to ``home``: its path on the command line (server,
    controller) or ATOMIVERSE_HOME in the environment (workers inherit it). Found without
    the home's own records, so a record that was lost cannot hide one."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        if p.pid == os.getpid() or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            cmdline = p.info["cmdline"] or []
            if any(str(home) in a for a in cmdline) or \
                    p.environ().get("ATOMIVERSE_HOME") == str(home):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def home_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ATOMIVERSE_HOME": str(home)}
    env.pop("ATOMIVERSE_BASE_URL", None)
    return subprocess.run([sys.executable, "-m", "atomiverse.cli", *args], env=env, check=False,
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS)
