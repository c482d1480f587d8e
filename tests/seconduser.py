"""A second local user, for the tests marked ``second_uid``: what another user of a shared
machine can do to the embedded home of this one. Creating a user and running as it needs root;
elsewhere those tests are deselected, and the run says so (never a silent skip)."""

from __future__ import annotations

import multiprocessing
import os
import pwd
import shutil
import subprocess
import warnings
from collections.abc import Callable
from typing import Any

OTHER_USER = "atomiverse-other"


def second_uid_deselection() -> str | None:
    """Why tests marked second_uid are deselected here, or None when they run."""
    if os.geteuid() == 0:
        return None
    return (f"tests marked second_uid deselected: they create a second local user and run as "
            f"it, which needs root (this run is uid {os.geteuid()}); the file modes that "
            f"protect the home are checked by tests/security/test_file_modes.py")


def other_user() -> tuple[int, int]:
    """(uid, gid) of a second local user, created (no home, no login) if missing."""
    try:
        entry = pwd.getpwnam(OTHER_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        subprocess.run([useradd, "--system", "--user-group", "--no-create-home",
                        "--shell", "/usr/sbin/nologin", OTHER_USER], check=True)
        entry = pwd.getpwnam(OTHER_USER)
    assert entry.pw_uid != os.getuid()
    return entry.pw_uid, entry.pw_gid


def call_as(uid: int, gid: int, fn: Callable[..., Any], *args: Any,
            timeout: float = 120.0) -> tuple[str, Any]:
    """Call ``fn(*args)`` in a forked child that has become that user (its uid and gid, no
    supplementary group of ours): ``("ok", result)`` or ``("error", "Class: message")``.
    Forked, not executed: this interpreter may live where the other user cannot run it (a
    pyenv under /root), and what the child needs is imported already."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_as_user, args=(uid, gid, send, fn, args))
    with warnings.catch_warnings():
        # Python 3.12+ warns when a process with threads forks (a lock held by another thread
        # stays held in the child). The child here takes no lock another thread of this
        # suite holds: it changes uid, opens files and calls the SDK, whose home lock it
        # cannot even open.
        warnings.filterwarnings("ignore", r"This process .* is multi-threaded, use of fork",
                                DeprecationWarning)
        child.start()
    send.close()
    try:
        if not receive.poll(timeout):
            raise TimeoutError(f"{fn.__name__} as uid {uid} did not answer in {timeout} s")
        return receive.recv()
    finally:
        child.join(timeout)
        if child.is_alive():
            child.kill()


def _as_user(uid: int, gid: int, send: Any, fn: Callable[..., Any], args: tuple) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    assert os.getuid() == uid and os.geteuid() == uid
    try:
        send.send(("ok", fn(*args)))
    except Exception as e:  # noqa: BLE001 - whatever it was, the parent reports it
        send.send(("error", f"{type(e).__name__}: {e}"))


def popen_as(uid: int, gid: int, argv: list[str], **kwargs: Any) -> subprocess.Popen:
    """Start ``argv`` as that user (``argv[0]`` must be a program it may run)."""
    return subprocess.Popen(argv, user=uid, group=gid, extra_groups=[], **kwargs)
