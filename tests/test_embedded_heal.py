"""Issue 25: the embedded default heals itself. Real processes throughout: the SDK starts the
embedded server, which starts the local controller and its xtb workers; the tests kill them
with SIGKILL as the OOM killer would, and check that the next call (or the call blocked at
the time) brings the server back, every job ends done once with the engine's energy, and
`atomiverse local stop` leaves no process of the home behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import atomiverse
import atomiverse._embedded
import psutil
import pytest
from atomiverse.levels import GFN2_XTB
from conftest import xtb_reference
from embeddedhome import home_cli as cli
from embeddedhome import home_processes

pytestmark = pytest.mark.slow  # fault tests: the embedded server killed under a running script

TOL_HARTREE = 1e-6
SMILES = ["O", "CCO", "CCN", "CC(=O)O", "c1ccccc1", "CCOC", "CC#N", "NCCO"]
# Optimisations long enough (seconds each) that the server dies with most of them pending.
LONG_SMILES = ["CCCCCCCCCCCC", "CC(=O)Nc1ccc(O)cc1", "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
               "c1ccc2cc3ccccc3cc2c1"]
STOP_TIMEOUT_SECONDS = 120.0


def exited(proc: psutil.Process) -> bool:
    """Gone, or a zombie its new parent has not collected yet (it runs nothing)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A home of its own (these tests kill its server), two slots; after the test,
    `atomiverse local stop` must leave nothing of it running."""
    home = tmp_path / "home"
    monkeypatch.setenv("ATOMIVERSE_HOME", str(home))
    monkeypatch.setenv("ATOMIVERSE_LOCAL_CONTROLLER_SLOTS", "2")
    monkeypatch.delenv("ATOMIVERSE_BASE_URL", raising=False)
    monkeypatch.delenv("ATOMIVERSE_API_KEY", raising=False)
    atomiverse.configure()
    try:
        yield home
    finally:
        stopped = cli(home, "local", "stop")
        assert atomiverse.stop_local() is False  # nothing was left for a second stop
        left = home_processes(home)
        for p in left:
            p.kill()
        assert stopped.returncode == 0, stopped.stderr
        assert not left, f"left running after `atomiverse local stop`: {left}"


def server_record(home: Path) -> dict:
    return json.loads((home / "server.json").read_text())


def kill_server(home: Path) -> psutil.Process:
    """SIGKILL the home's server; return its controller (still running at that moment)."""
    server = psutil.Process(server_record(home)["pid"])
    controller = psutil.Process(json.loads((home / "controller.json").read_text())["pid"])
    server.send_signal(signal.SIGKILL)
    return controller


def molecules(n: int) -> list[atomiverse.Atoms]:
    return [atomiverse.Atoms.from_smiles(SMILES[i % len(SMILES)]) for i in range(n)]


def assert_done_once_with_engine_energy(records: list[dict], mols: list[atomiverse.Atoms],
                                        *, optimised: bool = False) -> None:
    assert len({r["job_id"] for r in records}) == len(mols)
    for record, mol in zip(records, mols, strict=True):
        assert record["state"] == "done", record
        result = record["result"]
        positions = result["final_positions_angstrom"] if optimised else mol.positions
        expected = xtb_reference(mol.numbers, positions)
        assert abs(result["energy_hartree"] - expected) < TOL_HARTREE


def test_server_killed_while_a_script_waits_the_same_call_returns_every_job(home):
    n = 16
    script = textwrap.dedent(f"""
        import json, sys
        import atomiverse
        from atomiverse.levels import GFN2_XTB
        mols = [atomiverse.Atoms.from_smiles(s) for s in {LONG_SMILES!r} * 4][:{n}]
        jobs = [atomiverse.GeometryOptimization(atoms=m, level_of_theory=GFN2_XTB)
                for m in mols]
        out = atomiverse.submit_batch([j.model_dump() for j in jobs], compute_target="local")
        ids = [j["job_id"] for j in out["jobs"]]
        print(json.dumps({{"submitted": ids}}), flush=True)
        def progress(done, total):
            print(json.dumps({{"progress": done}}), flush=True)
        records = atomiverse.wait_jobs(ids, on_progress=progress)
        print(json.dumps({{"records": records}}), flush=True)
    """)
    atomiverse.start_local()
    first_server = server_record(home)["pid"]
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ})
    try:
        lines = iter(proc.stdout)
        ids = json.loads(next(lines))["submitted"]
        first = json.loads(next(lines))  # inside wait_jobs: one wave done, the rest pending
        assert 0 < first["progress"] < n
        old_controller = kill_server(home)
        last = None
        for line in lines:
            last = json.loads(line)
        assert proc.wait(timeout=STOP_TIMEOUT_SECONDS) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    records = last["records"]
    assert [r["job_id"] for r in records] == ids
    assert server_record(home)["pid"] != first_server  # the waiting call restarted it
    assert exited(old_controller)  # the orphaned controller ended itself
    mols = [atomiverse.Atoms.from_smiles(s) for s in (LONG_SMILES * 4)[:n]]
    assert_done_once_with_engine_energy(records, mols, optimised=True)
    # Read back through a fresh call: the server's records agree with what the call got.
    for record in records:
        assert atomiverse.status(record["job_id"])["state"] == "done"


def test_server_killed_with_no_client_the_next_call_restarts_it(home):
    atomiverse.start_local()
    old_controller = kill_server(home)
    old_workers = [p for p in old_controller.children(recursive=True)]
    # The orphaned controller and its workers end by themselves, with nobody calling.
    psutil.wait_procs([old_controller, *old_workers], timeout=STOP_TIMEOUT_SECONDS)
    assert exited(old_controller)
    assert all(exited(p) for p in old_workers)

    mols = molecules(8)
    jobs = [atomiverse.SinglePointEnergy(atoms=m, level_of_theory=GFN2_XTB) for m in mols]
    out = atomiverse.submit_batch([j.model_dump() for j in jobs], compute_target="local")
    records = atomiverse.wait_jobs([j["job_id"] for j in out["jobs"]], timeout=300)
    assert_done_once_with_engine_energy(records, mols)

    status = cli(home, "local", "status")
    assert status.returncode == 0, status.stdout
    assert f"server      pid {server_record(home)['pid']}" in status.stdout
    assert "last restart" in status.stdout and "was gone" in status.stdout
    assert "worker      pid" in status.stdout


def test_a_stale_server_json_naming_an_unrelated_process_is_neither_trusted_nor_killed(home):
    home.mkdir(parents=True)
    bystander = subprocess.Popen(["sleep", "600"], env={
        k: v for k, v in os.environ.items() if k != "ATOMIVERSE_HOME"})
    try:
        p = psutil.Process(bystander.pid)
        # What a reboot leaves: the old server's pid now belongs to something else.
        (home / "server.json").write_text(json.dumps({
            "pid": p.pid, "create_time": p.create_time(), "url": "http://127.0.0.1:9",
            "home": str(home), "started_at": p.create_time()}))
        assert cli(home, "local", "status").returncode == 3
        assert cli(home, "local", "stop").stdout.strip() == "not running"
        assert bystander.poll() is None

        mols = molecules(3)
        jobs = [atomiverse.SinglePointEnergy(atoms=m, level_of_theory=GFN2_XTB) for m in mols]
        out = atomiverse.submit_batch([j.model_dump() for j in jobs], compute_target="local")
        records = atomiverse.wait_jobs([j["job_id"] for j in out["jobs"]], timeout=300)
        assert_done_once_with_engine_energy(records, mols)
        assert server_record(home)["pid"] != bystander.pid

        assert cli(home, "local", "stop").stdout.strip() == "stopped"
        assert bystander.poll() is None  # never signalled: it is not the home's server
        assert not home_processes(home)
    finally:
        bystander.kill()
        bystander.wait()


def test_a_server_that_cannot_start_fails_the_call_with_its_cause_and_log(home, monkeypatch):
    home.mkdir(parents=True)
    # A valid SQLite file whose tables are not ours: the server dies while starting.
    # sqlite3's own `with` commits but does not close (an unclosed connection is a
    # ResourceWarning on Python 3.13, raised in whichever test collects it).
    with closing(sqlite3.connect(home / "atomiverse.db")) as conn, conn:
        conn.execute("CREATE TABLE jobs (nonsense TEXT)")
        conn.execute("CREATE TABLE alembic_version (version_num TEXT)")
        conn.execute("INSERT INTO alembic_version VALUES ('not-a-revision')")
    with pytest.raises(atomiverse.APIConnectionError) as err:
        atomiverse.get_default_client().account()
    message = str(err.value)
    assert "exited while starting" in message
    assert "Can't locate revision identified by 'not-a-revision'" in message  # the cause
    assert str(home / "logs" / "server.log") in message

    # A database write-locked by a stuck process: said in seconds, not after a timeout.
    stuck = sqlite3.connect(home / "atomiverse.db", isolation_level=None)
    try:
        stuck.execute("BEGIN EXCLUSIVE")
        atomiverse.configure()
        with pytest.raises(atomiverse.APIConnectionError, match="is locked by another"):
            atomiverse.get_default_client().account()
    finally:
        stuck.close()

    # The port taken (by a program that took it between our choice and the server's bind).
    (home / "atomiverse.db").unlink()
    with socket.socket() as taken, monkeypatch.context() as patch:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        patch.setattr(atomiverse._embedded, "_free_port", lambda: taken.getsockname()[1])
        atomiverse.configure()
        with pytest.raises(atomiverse.APIConnectionError, match="address already in use"):
            atomiverse.get_default_client().account()

    # A file that is not a database at all is named as such before anything is started.
    (home / "atomiverse.db").write_bytes(b"this is not a database " * 100)
    atomiverse.configure()
    with pytest.raises(atomiverse.APIConnectionError, match="corrupt"):
        atomiverse.get_default_client().account()


def test_a_crash_loop_is_reported_with_the_log_tail_not_restarted_forever(home, monkeypatch):
    monkeypatch.setenv("ATOMIVERSE_EMBEDDED_MAX_RESTARTS", "2")
    monkeypatch.setenv("ATOMIVERSE_EMBEDDED_RESTART_WINDOW_SECONDS", "3600")
    client = atomiverse.get_default_client()
    client.account()
    pids = [server_record(home)["pid"]]
    for _ in range(2):
        kill_server(home)
        client.account()  # restarted within the budget
        pids.append(server_record(home)["pid"])
    assert len(set(pids)) == 3
    kill_server(home)
    with pytest.raises(atomiverse.APIConnectionError) as err:
        client.account()
    message = str(err.value)
    assert "crashed 2 times" in message
    assert str(home / "logs" / "server.log") in message
    assert "Last lines of" in message


@pytest.mark.slow
def test_a_killed_local_controller_is_restarted_and_its_jobs_return_at_once(home, monkeypatch):
    # Leases far longer than the wait below: the jobs the dead controller held can only come
    # back in time if the server ends its leases when the new process registers.
    monkeypatch.setenv("ATOMIVERSE_LEASE_SECONDS", "3600")
    atomiverse.start_local()
    mols = [atomiverse.Atoms.from_smiles(s) for s in (LONG_SMILES * 2)[:8]]
    jobs = [atomiverse.GeometryOptimization(atoms=m, level_of_theory=GFN2_XTB) for m in mols]
    out = atomiverse.submit_batch([j.model_dump() for j in jobs], compute_target="local")
    ids = [j["job_id"] for j in out["jobs"]]
    client = atomiverse.get_default_client()
    while True:  # until the controller holds running jobs
        states = [client.get_job(i)["state"] for i in ids]
        assert states.count("done") < len(ids), "every job finished before the kill"
        if "running" in states:
            break
        client.request("POST", "/api/v1/jobs/wait", retryable=True, json={
            "job_ids": ids, "timeout_seconds": 1.0, "include_result": False})
    controller = psutil.Process(json.loads((home / "controller.json").read_text())["pid"])
    controller.send_signal(signal.SIGKILL)

    records = atomiverse.wait_jobs(ids, timeout=STOP_TIMEOUT_SECONDS)
    assert_done_once_with_engine_energy(records, mols, optimised=True)
    record = json.loads((home / "controller.json").read_text())
    assert record["pid"] != controller.pid and record["restarts"] == 1
    assert "SIGKILL" in record["last_restart"]["reason"]
    status = cli(home, "local", "status")
    assert "1 restarts" in status.stdout and "SIGKILL" in status.stdout
