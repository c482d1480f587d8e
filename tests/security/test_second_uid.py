"""Finding: another user of the machine could read the embedded home (the database, from which
sessions could be forged) and the SDK would take another user's process for its own server.
Here a real second local user (created if missing; the tests run as root, see
``seconduser``) tries, against a real embedded server started by the SDK as the first user:
it can neither list the home nor read any file in it (the database, the credentials, the
server secret, the records), not even with the home's own mode loosened, and cannot adopt the
first user's server; and the first user's SDK never takes a process of the other user (whose
command line names the program and the home, as anyone's may) for its server."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import psutil
import pytest
from atomiverse import _embedded
from atomiverse._embedded_procs import home_processes
from atomiverse_core.localhome import SERVER_RECORD, SERVER_SECRET, process_record
from embeddedhome import running_embedded_home
from seconduser import call_as, other_user, popen_as

pytestmark = pytest.mark.second_uid

def what_i_can_do(home: str, paths: list[str]) -> dict[str, str]:
    """As the other user: for the home, listed or the error; for each path, read or the
    error's class."""
    seen = {}
    try:
        os.listdir(home)
        seen["<list home>"] = "listed"
    except OSError as e:
        seen["<list home>"] = type(e).__name__
    for path in paths:
        try:
            with open(path, "rb") as f:
                f.read(1)
            seen[path] = "read"
        except OSError as e:
            seen[path] = type(e).__name__
    return seen


def adopt(home: str) -> str:
    """As the other user pointed at the first user's home: the SDK as a user would use it."""
    import atomiverse

    os.environ["ATOMIVERSE_HOME"] = home
    atomiverse.configure()
    with atomiverse.Client() as c:
        c.list_jobs()
    return "adopted"


@pytest.fixture(scope="module")
def shared_machine():
    """The first user's embedded home in a directory every user may enter (as /home/<user>
    often is), so that only the home's and its files' own modes keep the other user out."""
    uid, gid = other_user()
    parent = Path(tempfile.mkdtemp(prefix="atomiverse-two-users-"))
    parent.chmod(0o755)
    public = parent / "public.txt"  # the control: a file the other user may read
    public.write_text("anyone")
    public.chmod(0o644)
    with running_embedded_home(parent / "home") as home:
        yield home, public, uid, gid
    shutil.rmtree(parent, ignore_errors=True)


def _probe(uid: int, gid: int, home: Path, paths: list[Path]) -> dict[str, str]:
    outcome, seen = call_as(uid, gid, what_i_can_do, str(home), [str(p) for p in paths])
    assert outcome == "ok", seen
    return seen


def _private_files(home: Path) -> list[Path]:
    files = sorted(p for p in home.rglob("*") if p.is_file())
    names = {p.name for p in files}
    assert {"atomiverse.db", "credentials.json", SERVER_SECRET, SERVER_RECORD} <= names, names
    return files


def test_the_other_user_can_read_nothing_in_the_home(shared_machine):
    home, public, uid, gid = shared_machine
    files = _private_files(home)
    seen = _probe(uid, gid, home, [public, *files])
    assert seen.pop(str(public)) == "read"  # the switch to the other user is real
    assert seen == {"<list home>": "PermissionError",
                    **dict.fromkeys(map(str, files), "PermissionError")}


def test_each_file_is_private_by_its_own_mode_too(shared_machine):
    """An operator who opens the home directory (0755) still exposes no file in it."""
    home, public, uid, gid = shared_machine
    files = _private_files(home)
    home.chmod(0o755)
    try:
        seen = _probe(uid, gid, home, [public, *files])
    finally:
        home.chmod(0o700)
    assert seen.pop(str(public)) == "read"
    assert seen.pop("<list home>") == "listed"
    readable = {path for path, what in seen.items() if what != "PermissionError"}
    assert readable == set(), {p: oct(stat.S_IMODE(Path(p).stat().st_mode)) for p in readable}


def test_the_other_user_cannot_adopt_the_server(shared_machine):
    home, _public, uid, gid = shared_machine
    key = json.loads((home / "credentials.json").read_text())["api_key"]
    outcome, said = call_as(uid, gid, adopt, str(home))
    assert (outcome, said.split(":")[0]) == ("error", "PermissionError"), said
    assert key not in said


def test_a_process_of_the_other_user_is_never_taken_for_the_server(shared_machine):
    """Its command line names the program and the home, and server.json names its pid and
    start time (as after a crash and a pid reused): still not this home's server, so it is
    neither adopted nor signalled."""
    home, _public, uid, gid = shared_machine
    record_path = home / SERVER_RECORD
    real = record_path.read_text()
    # sh, not this interpreter (the other user may not be able to run it); two commands,
    # so that sh stays the process rather than exec sleep.
    lookalike = popen_as(uid, gid, ["/bin/sh", "-c", "sleep 300; exit 0", "atomiverse_server",
                                    "--home", str(home)])
    try:
        proc = psutil.Process(lookalike.pid)
        assert "atomiverse_server" in proc.cmdline() and proc.uids().real == uid
        record_path.write_text(json.dumps(process_record(proc, url=json.loads(real)["url"],
                                                         home=str(home))))
        assert _embedded.verified_server(home) is None
        assert home_processes(home)[0] is None
    finally:
        record_path.write_text(real)
        for p in [*psutil.Process(lookalike.pid).children(), psutil.Process(lookalike.pid)]:
            p.kill()
        lookalike.wait()
    assert _embedded.verified_server(home) is not None  # the real one still is
