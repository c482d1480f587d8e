"""`atomiverse scale` against a real SLURM (tests/slurm.py: slurmctld, slurmd and munge from
Debian's packages, one node of 2 CPUs): allocations go up when work arrives, real xtb jobs
finish with the engine's energies, a scancel of a running allocation loses nothing, and the
allocations go to zero once the queue is empty. Where SLURM cannot start, the tests fail with
the reason."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from conftest import PY, Server, start_server, stop_process, xtb_reference
from slurm import PARTITION, SlurmCluster, SlurmUnavailable

pytestmark = pytest.mark.slow  # scheduler tests: real SLURM allocations

TOL_HARTREE = 1e-6
N_JOBS = 24
TARGET = "cluster"


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmCluster]:
    # A short path: munged's socket path must fit in a sockaddr_un (108 bytes).
    root = Path(tempfile.mkdtemp(prefix="avslurm-", dir="/tmp"))
    cluster = SlurmCluster(root, cpus=2, kill_wait_seconds=20)
    try:
        cluster.start()
    except SlurmUnavailable as e:
        cluster.stop()
        pytest.fail(f"SLURM could not start here, so atomiverse scale is untested: {e}")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def hpc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    # Leases of 10 s: the jobs of a SIGKILLed allocation come back within seconds.
    srv = start_server(tmp_path_factory.mktemp("hpc-server"),
                       env_extra={"ATOMIVERSE_LEASE_SECONDS": "10"})
    key_file = srv.home / "workspace.key"
    key_file.write_text(srv.new_workspace("hpc-group"))
    key_file.chmod(0o600)
    yield srv, key_file
    stop_process(srv.proc)


def write_site(path: Path, server: Server, key_file: Path, **settings: Any) -> Path:
    values = {"target": TARGET, "server": server.url, "api_key_file": str(key_file),
              "partition": PARTITION, "walltime": "00:10:00", "cores_per_node": 1,
              "exclusive": False, "max_nodes": 2, "idle_timeout_seconds": 8,
              "stop_before_end_seconds": 60, "grace_seconds": 10, "longest_job_seconds": 60,
              "poll_seconds": 1, "work_dir": str(path.parent / "scale"), **settings}
    lines = [f"{k} = {v!r}".replace("'", '"') if not isinstance(v, bool)
             else f"{k} = {str(v).lower()}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_scale(site: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "atomiverse_controller.scale", str(site), *args],
                          check=False, capture_output=True, text=True, env=env, timeout=120)


def molecules(n: int) -> list[tuple[list[int], list[list[float]]]]:
    """Hexacontane (182 atoms), one conformer jiggled by up to 0.01 Angstrom per copy (ETKDG
    takes half a second per conformer of it): about half a second of xtb each here, so a
    batch keeps two one-core allocations busy for seconds, long enough to scancel one
    mid-batch and then kill another. (Hexadecane took 0.03 s: once a member's freed slot woke
    its claim, its 24 jobs were over in about a second.)"""
    import numpy as np
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles("C" * 60))
    assert AllChem.EmbedMolecule(mol, randomSeed=29) == 0
    numbers = [a.GetAtomicNum() for a in mol.GetAtoms()]
    start = mol.GetConformer().GetPositions()
    rng = np.random.default_rng(29)
    return [(numbers, (start + rng.uniform(-0.01, 0.01, start.shape)).tolist())
            for _ in range(n)]


class PoolWatch(threading.Thread):
    """Reads the pool's state as the scaler does (its token), several times a second: the
    over-claim ratio, jobs held / slots of the controllers running, at every sample."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"})
        self.stop = threading.Event()
        self.max_ratio = 0.0
        self.max_member_excess = 0
        self.max_members = 0
        self.first_member_at: float | None = None

    def run(self) -> None:
        while not self.stop.wait(0.2):
            members = [m for m in self.http.get("/api/v1/controllers/pool").json()["members"]
                       if m["status"] == "online"]
            if not members:
                continue
            self.first_member_at = self.first_member_at or time.monotonic()
            self.max_members = max(self.max_members, len(members))
            slots = sum(m["slots"] for m in members)
            self.max_ratio = max(self.max_ratio, sum(m["running"] for m in members) / slots)
            self.max_member_excess = max(self.max_member_excess,
                                         *(m["running"] - m["slots"] for m in members))


def wait_until(what: str, ready, timeout: float, explain=lambda: "") -> Any:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        time.sleep(0.2)  # polling SLURM and the server, which have no event to wait on here
    raise AssertionError(f"timed out waiting for {what}\n{explain()}")


@pytest.mark.slow  # about a minute of real SLURM allocations and xtb on 2 shared cores
@pytest.mark.timeout(300)
def test_scale_runs_a_batch_through_slurm_allocations_and_loses_nothing_to_scancel(
        slurm: SlurmCluster, hpc_server: tuple[Server, Path], tmp_path: Path) -> None:
    srv, key_file = hpc_server
    site = write_site(tmp_path / "site.toml", srv, key_file)
    env = {**srv.env, "SLURM_CONF": str(slurm.conf)}
    log = open(tmp_path / "scale.log", "ab")  # noqa: SIM115 (the process outlives this line)
    scale = subprocess.Popen([PY, "-m", "atomiverse_controller.scale", str(site)],
                             stdout=log, stderr=log, env=env)
    scale_dir = tmp_path / "scale"

    def explain() -> str:
        outs = "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-2500:]}"
                         for f in sorted((scale_dir / "scripts").glob("*.std*")))
        return (f"squeue: {slurm.jobs()}\n--- scale.log\n"
                f"{(tmp_path / 'scale.log').read_text()[-4000:]}\n{outs}\n{slurm.logs()[-3000:]}")

    watch = None
    try:
        token_file = scale_dir / "pool.token"
        wait_until("the pool to be registered", lambda: token_file.exists(), 30, explain)
        wait_until("the scaler's first look at the pool",
                   lambda: "event=pool" in (tmp_path / "scale.log").read_text(), 30, explain)
        assert slurm.jobs() == {}, "allocations were asked for with nothing pending"
        watch = PoolWatch(srv.url, token_file.read_text().strip())
        watch.start()

        mols = molecules(N_JOBS)
        auth = {"Authorization": f"Bearer {key_file.read_text()}"}
        submitted_at = time.monotonic()
        r = httpx.post(f"{srv.url}/api/v1/jobs/submit-batch", headers=auth, timeout=60, json={
            "jobs": [{"compute_target": TARGET, "job": {
                "job_type": "single_point_energy", "name": f"c60-{i}", "use_cache": False,
                "atoms": {"numbers": z, "positions": p},
                "level_of_theory": {"method": "gfn2-xtb"}}} for i, (z, p) in enumerate(mols)]})
        assert r.status_code == 200 and r.json()["failed"] == 0, r.text[:500]
        job_ids = [j["job_id"] for j in r.json()["jobs"]]

        # Allocations go up: SLURM runs the scaler's allocations and their controllers claim.
        running = wait_until("a running allocation holding jobs", lambda: [
            m for m in watch.http.get("/api/v1/controllers/pool").json()["members"]
            if m["status"] == "online" and m["running"] > 0], 120, explain)
        first_running_seconds = time.monotonic() - submitted_at
        victim = running[0]["name"].rsplit(".", 1)[1]
        assert slurm.jobs().get(victim) == "RUNNING", explain()
        pending_at_cancel = watch.http.get("/api/v1/controllers/pool").json()["pending"]
        slurm.scancel(victim)  # mid-batch: its controller drains; what it held comes back
        # Another, killed outright (a node lost): what it held returns when its leases end.
        killed = wait_until("another allocation holding jobs", lambda: [
            m for m in watch.http.get("/api/v1/controllers/pool").json()["members"]
            if m["status"] == "online" and m["running"] > 0
            and not m["name"].endswith(f".{victim}")], 120, explain)
        assert slurm.kill_job_processes(killed[0]["name"].rsplit(".", 1)[1]) > 0

        def all_done() -> list[dict[str, Any]] | None:
            out = [httpx.get(f"{srv.url}/api/v1/jobs/{j}", headers=auth, timeout=30).json()
                   for j in job_ids]
            bad = [j for j in out if j["state"] == "failed"]
            assert not bad, f"jobs failed: {bad[:2]}\n{explain()}"
            return out if all(j["state"] == "done" for j in out) else None

        jobs = wait_until("every job done", all_done, 200, explain)
        assert len({j["job_id"] for j in jobs}) == N_JOBS
        for job, (numbers, positions) in zip(jobs, mols):
            assert abs(job["result"]["energy_hartree"] - xtb_reference(numbers, positions)) \
                < TOL_HARTREE, job["name"]

        # Allocations go to zero: idle controllers exit, SLURM lists nothing, nothing leased.
        wait_until("every allocation to end", lambda: slurm.jobs() == {}, 90, explain)
        wait_until("no member left in the pool", lambda: watch.http.get(
            "/api/v1/controllers/pool").json()["members"] == [], 30, explain)
        members = [c for c in httpx.get(f"{srv.url}/api/v1/controllers", headers=auth,
                                        timeout=30).json()["controllers"]
                   if c["name"].startswith(f"{TARGET}.")]
        killed_name = killed[0]["name"]
        assert members and all(m["running"] == 0 for m in members), members
        # Every controller deregistered but the one killed outright, which could not.
        assert all(m["status"] == "offline" for m in members if m["name"] != killed_name)
        if pending_at_cancel >= 8:  # seconds of work left for one slot: room to replace them
            assert len(members) >= 4, f"the scancelled allocation was not replaced: {members}"
        assert watch.max_ratio <= 1.0 and watch.max_member_excess <= 0, \
            f"over-claim: held/slots reached {watch.max_ratio}"
        assert watch.max_members >= 1
        lost = [j["name"] for j in jobs if any(e["error_type"] == "lost"
                                                 for e in j["attempt_errors"])]
        print(f"\nfirst running allocation holding jobs {first_running_seconds:.1f} s after "
              f"submission; {pending_at_cancel} pending at the scancel; allocations used "
              f"{len(members)}; max over-claim ratio {watch.max_ratio:.2f}; returned by lease "
              f"after the SIGKILL: {lost}")
    finally:
        if watch is not None:
            watch.stop.set()
            watch.join(5)
            watch.http.close()
        stop_process(scale)
        log.close()


@pytest.mark.slow  # one allocation lives about 15 s
@pytest.mark.timeout(200)
def test_a_controller_stops_claiming_before_its_allocation_ends(
        slurm: SlurmCluster, hpc_server: tuple[Server, Path], tmp_path: Path) -> None:
    """Walltime 1 minute, stop 50 s before the end: the controller reads the end from SLURM,
    drains at about 10 s, exits on its own (COMPLETED, not TIMEOUT) holding nothing; the idle
    timeout (120 s) is not what ends it."""
    srv, key_file = hpc_server
    site = write_site(tmp_path / "site.toml", srv, key_file, target="short",
                      walltime="00:01:00", stop_before_end_seconds=50, grace_seconds=5,
                      longest_job_seconds=5, idle_timeout_seconds=120, max_nodes=1)
    env = {**srv.env, "SLURM_CONF": str(slurm.conf)}
    log = open(tmp_path / "scale.log", "ab")  # noqa: SIM115 (the process outlives this line)
    scale = subprocess.Popen([PY, "-m", "atomiverse_controller.scale", str(site)],
                             stdout=log, stderr=log, env=env)
    scripts = tmp_path / "scale" / "scripts"

    def explain() -> str:
        outs = "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-2500:]}"
                         for f in sorted(scripts.glob("*.std*")))
        return f"squeue: {slurm.jobs()}\n{(tmp_path / 'scale.log').read_text()[-3000:]}\n{outs}"

    try:
        wait_until("the pool", lambda: (tmp_path / "scale" / "pool.token").exists(), 30, explain)
        numbers, positions = molecules(1)[0]
        auth = {"Authorization": f"Bearer {key_file.read_text()}"}
        r = httpx.post(f"{srv.url}/api/v1/jobs/submit-batch", headers=auth, timeout=60, json={
            "jobs": [{"compute_target": "short", "job": {
                "job_type": "single_point_energy", "use_cache": False,
                "atoms": {"numbers": numbers, "positions": positions},
                "level_of_theory": {"method": "gfn2-xtb"}}}]})
        job_id = r.json()["jobs"][0]["job_id"]
        allocation = wait_until("an allocation", lambda: next(iter(slurm.jobs()), None), 60,
                                explain)
        wait_until("the allocation to end", lambda: allocation not in slurm.jobs(), 90, explain)
        assert slurm.final_state(allocation) == "COMPLETED", explain()
        member_log = "".join(f.read_text() for f in scripts.glob("*.stderr"))
        assert "event=allocation_ending" in member_log and "event=idle_exit" not in member_log
        assert "event=stopped" in member_log, member_log[-2000:]
        job = httpx.get(f"{srv.url}/api/v1/jobs/{job_id}", headers=auth, timeout=30).json()
        assert job["state"] == "done"
        assert abs(job["result"]["energy_hartree"] - xtb_reference(numbers, positions)) \
            < TOL_HARTREE
        members = httpx.get(f"{srv.url}/api/v1/controllers", headers=auth,
                            timeout=30).json()["controllers"]
        mine = [m for m in members if m["name"] == f"short.{allocation}"]
        assert mine and mine[0]["status"] == "offline" and mine[0]["running"] == 0, members
    finally:
        stop_process(scale)
        log.close()


def test_allocations_that_cannot_start_a_controller_stop_the_scaler_with_the_reason(
        slurm: SlurmCluster, hpc_server: tuple[Server, Path], tmp_path: Path) -> None:
    srv, key_file = hpc_server
    site = write_site(tmp_path / "site.toml", srv, key_file, target="broken", max_nodes=1,
                      controller_command="/nonexistent/atomiverse-controller")
    auth = {"Authorization": f"Bearer {key_file.read_text()}"}
    env = {**srv.env, "SLURM_CONF": str(slurm.conf)}
    with open(tmp_path / "scale.log", "ab") as log:
        scale = subprocess.Popen([PY, "-m", "atomiverse_controller.scale", str(site)],
                                 stdout=log, stderr=log, env=env)
    try:
        wait_until("the pool", lambda: (tmp_path / "scale" / "pool.token").exists(), 30)
        numbers, positions = molecules(1)[0]
        r = httpx.post(f"{srv.url}/api/v1/jobs/submit-batch", headers=auth, timeout=60, json={
            "jobs": [{"compute_target": "broken", "job": {
                "job_type": "single_point_energy", "use_cache": False,
                "atoms": {"numbers": numbers, "positions": positions},
                "level_of_theory": {"method": "gfn2-xtb"}}}]})
        job_id = r.json()["jobs"][0]["job_id"]
        assert scale.wait(120) == 1
        out = (tmp_path / "scale.log").read_text()
        assert "3 allocations in a row ended before their controller registered" in out
        assert "check controller_command and worker_init" in out and ".stderr" in out
        assert slurm.jobs() == {}
        httpx.post(f"{srv.url}/api/v1/jobs/{job_id}/cancel", headers=auth, timeout=30)
    finally:
        stop_process(scale)


# ----- bad input: named, before anything is submitted ---------------------------------------
def _no_allocation_asked(slurm: SlurmCluster) -> None:
    assert slurm.jobs() == {}


def test_unknown_key_in_the_site_file_is_named(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text('target = "c"\nserver = "http://127.0.0.1:9"\napi_key_file = "/nonexistent"'
                    '\ncores_per_node = 2\nmax_nodes = 1\npartiton = "debug"\n')
    out = run_scale(site, dict(os.environ))
    assert out.returncode == 2
    assert "partiton: unknown setting" in out.stderr and "partition" in out.stderr
    assert "Traceback" not in out.stderr


def test_walltime_shorter_than_the_longest_job_is_named(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text('target = "c"\nserver = "http://127.0.0.1:9"\napi_key_file = "/nonexistent"'
                    '\ncores_per_node = 2\nmax_nodes = 1\nwalltime = "00:30:00"\n'
                    'stop_before_end_seconds = 300\nlongest_job_seconds = 3600\n')
    out = run_scale(site, dict(os.environ), "--dry-run")
    assert out.returncode == 2
    assert "walltime: 00:30:00 leaves 1500 s" in out.stderr
    assert "longest_job_seconds (3600 s)" in out.stderr


def test_a_partition_slurm_does_not_have_is_named_before_submitting(
        slurm: SlurmCluster, hpc_server: tuple[Server, Path], tmp_path: Path) -> None:
    srv, key_file = hpc_server
    site = write_site(tmp_path / "site.toml", srv, key_file, partition="nosuch")
    out = run_scale(site, {**srv.env, "SLURM_CONF": str(slurm.conf)})
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"partition: 'nosuch' does not exist on this cluster (sinfo lists: {PARTITION})" \
        in out.stderr
    _no_allocation_asked(slurm)
    assert not (tmp_path / "scale" / "pool.token").exists()  # the server was not asked either


def test_dry_run_prints_the_batch_script(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(f"target: cluster\nserver: https://av.example.org\napi_key_file: /k\n"
                    f"partition: chem\naccount: grp1\nwalltime: '02:00:00'\ncores_per_node: 16\n"
                    f"memory_per_node_gb: 32\nworker_init: module load xtb\nmax_nodes: 4\n"
                    f"work_dir: {tmp_path / 'w'}\n")
    out = run_scale(site, dict(os.environ), "--dry-run")
    assert out.returncode == 0, out.stderr
    script = out.stdout
    for line in ("#SBATCH --partition=chem", "#SBATCH --account=grp1", "#SBATCH --time=120",
                 "#SBATCH --mem=32g", "#SBATCH --cpus-per-task=16", "#SBATCH --exclusive",
                 "module load xtb", "--pool cluster", "--slots 16", "--prefetch-per-slot 0",
                 "--stop-before-end 300", f"{tmp_path / 'w'}/scripts/"):
        assert line in script, line
    assert not (tmp_path / "w").exists()  # nothing written, nothing submitted
