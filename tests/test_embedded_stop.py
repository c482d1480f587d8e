"""A deliberate stop of the embedded server (``atomiverse local stop``, ``stop_local()``) is
respected: a client still following jobs does not start the server again behind the user's
back (only a server that died is revived), a new client or ``local start`` does, and nothing
accepted is lost. And the local controller says goodbye to a server that still listens.
Real processes and real xtb throughout."""

from __future__ import annotations

import json
from pathlib import Path

import atomiverse
import pytest
from atomiverse.levels import GFN2_XTB
from conftest import xtb_reference
from embeddedhome import embedded_env, home_cli, home_processes

pytestmark = pytest.mark.slow  # starts and stops embedded servers several times

TOL_HARTREE = 1e-6
SMILES = ["CCCCCCCC", "CC(=O)Nc1ccc(O)cc1", "CCOCCOCC", "c1ccc2ccccc2c1", "CCCCO", "CCN"]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ATOMIVERSE_LOCAL_CONTROLLER_SLOTS", "2")
    with embedded_env(tmp_path / "home") as home:
        yield home
    left = home_processes(home)
    for p in left:
        p.kill()
    assert not left, f"left running after the test: {left}"


def test_a_client_following_jobs_does_not_undo_a_deliberate_stop(home):
    atomiverse.start_local()
    client = atomiverse.Client()
    mols = [atomiverse.Atoms.from_smiles(s) for s in SMILES]
    jobs = [atomiverse.GeometryOptimization(atoms=m, level_of_theory=GFN2_XTB).model_dump()
            for m in mols]
    ids = [j["job_id"] for j in client.submit_batch(jobs, compute_target="local")["jobs"]]
    for job_id in ids:  # followed: the client's watch thread now long-polls the server
        client.status(job_id)

    assert atomiverse.stop_local() is True
    # The client's next call finds the server gone: it says why instead of starting it.
    with pytest.raises(atomiverse.EmbeddedServerError, match="local start"):
        client.get_job(ids[0])
    assert not home_processes(home), "the server came back after a deliberate stop"
    assert not (home / "server.json").exists()

    # `atomiverse local start` starts it again; the stopped client reconnects by itself.
    started = home_cli(home, "local", "start")
    assert started.returncode == 0, started.stderr
    records = client.wait_jobs(ids, timeout=600)
    client.close()
    assert [r["job_id"] for r in records] == ids
    for record, mol in zip(records, mols, strict=True):
        assert record["state"] == "done", record
        expected = xtb_reference(mol.numbers, record["result"]["final_positions_angstrom"])
        assert abs(record["result"]["energy_hartree"] - expected) < TOL_HARTREE


def test_after_a_stop_a_new_client_starts_the_server_again(home):
    atomiverse.start_local()
    assert atomiverse.stop_local() is True
    with atomiverse.Client() as client:  # a new use is the user's wish: it starts the server
        out = client.submit_batch([atomiverse.SinglePointEnergy(
            atoms=atomiverse.Atoms.from_smiles("CCO"), level_of_theory=GFN2_XTB).model_dump()],
            compute_target="local")
        (record,) = client.wait_jobs([out["jobs"][0]["job_id"]], timeout=300)
    assert record["state"] == "done", record
    assert json.loads((home / "server.json").read_text())["pid"] in {
        p.pid for p in home_processes(home)}


def test_the_local_controller_deregisters_before_the_server_stops_listening(home):
    atomiverse.start_local()
    assert atomiverse.stop_local() is True
    log = (home / "logs" / "controller.log").read_text()
    assert "event=signal" in log  # it was stopped by its server, not killed
    assert "deregister_retry" not in log and "deregister_failed" not in log, log[-2000:]
    assert "claim_failed" not in log, log[-2000:]
    assert "event=stopped controller=" in log, log[-2000:]
