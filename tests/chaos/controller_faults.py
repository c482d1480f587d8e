"""Shared parts of the controller-side fault tests (tests/chaos/test_chaos_*.py): a server
with short leases, controllers in the managed pool started with their own environment,
batches of real xtb single points, and the check every fault test ends with: each job
done, its result committed exactly once, its energy the engine's own."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import atomiverse
import psutil
import pytest
from atomiverse.levels import GFN2_XTB
from conftest import PY, Server, free_port, metric_value, start_server, stop_process, xtb_reference

# Leases of 4 s renewed every second, swept every second: a fault outlasts a lease quickly.
FAST_LEASES = {"ATOMIVERSE_LEASE_SECONDS": "4", "ATOMIVERSE_HEARTBEAT_SECONDS": "1",
               "ATOMIVERSE_SWEEP_SECONDS": "1", "ATOMIVERSE_MANAGED_ENABLED": "true"}
# Linear alkanes of 14-26 carbons: GFN2-xTB single points of a tenth to a quarter second
# each here, long enough for a fault to land while jobs run, short enough for a quick batch.
CARBONS = range(14, 27)
# 38-41 carbons: a second or more each, so a controller holds its claim for several leases
# and lives on its heartbeats.
LONG_CARBONS = range(38, 42)


def alkane_jobs(count: int, carbons: range = CARBONS) -> list[dict]:
    return [atomiverse.SinglePointEnergy(
        atoms=atomiverse.Atoms.from_smiles("C" * carbons[i % len(carbons)]),
        level_of_theory=GFN2_XTB, name=f"chaos-{i}", use_cache=False).model_dump()
        for i in range(count)]


def wait_for(predicate, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.1)


class Fleet:
    """A server of the test's own with fast leases and managed compute, one workspace."""

    def __init__(self, home: Path, env_extra: dict[str, str] | None = None) -> None:
        self.srv: Server = start_server(home, env_extra={**FAST_LEASES, **(env_extra or {})})
        self.key = self.srv.new_workspace("chaos")
        self.client = atomiverse.Client(api_key=self.key, base_url=self.srv.url)
        self.metrics_ports: dict[str, int] = {}

    def controller(self, name: str, *extra: str, server_url: str | None = None,
                   env_extra: dict[str, str] | None = None,
                   spool_dir: Path | None = None) -> subprocess.Popen:
        """A real controller in the managed pool (default engine: xtb), one slot; it talks
        to ``server_url`` (a proxy) if given. Waits until it has registered."""
        srv = self.srv
        srv.admin("register-managed-controller", name, "--token-file",
                  str(srv.home / f"{name}.token"))
        port = self.metrics_ports[name] = free_port()
        env = {**srv.env, **(env_extra or {})}
        with open(srv.home / f"controller-{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [PY, "-m", "atomiverse_controller", "--server", server_url or srv.url,
                 "--name", name, "--token-file", str(srv.home / f"{name}.token"),
                 "--spool-dir", str(spool_dir or srv.home / f"spool-{name}"),
                 "--slots", "1", "--metrics-port", str(port), *extra],
                stdout=log, stderr=log, env=env)
        srv.controllers.append(proc)
        wait_for(lambda: "event=registered" in srv.controller_log(name) or
                 proc.poll() is not None, what=f"{name} registered")
        assert proc.poll() is None, srv.controller_log(name)[-3000:]
        return proc

    def controller_metric(self, name: str, metric: str) -> float | None:
        return metric_value(f"http://127.0.0.1:{self.metrics_ports[name]}/metrics", metric)

    def submit(self, jobs: list[dict]) -> list[str]:
        res = self.client.submit_batch(jobs, compute_target="managed")
        return [j["job_id"] for j in res["jobs"]]

    def reported(self, outcome: str) -> float:
        """Results the server accepted (committed) or rejected (fenced), over its life."""
        return metric_value(f"{self.srv.url}/metrics", "atomiverse_jobs_reported_total",
                            outcome=outcome) or 0.0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()
        for c in self.srv.controllers:
            if c.poll() is None:
                resume(c)  # a paused process would ignore SIGTERM until the end of time
                c.kill()
                c.wait()
        stop_process(self.srv.proc)


def assert_each_done_once(fleet: Fleet, ids: list[str], jobs: list[dict]) -> list[dict]:
    """Every job done, its result committed once, its energy the engine's own (below).
    Returns the job records."""
    records = assert_each_committed_once(fleet, ids)
    assert_engine_energies(jobs, records)
    return records


def assert_each_committed_once(fleet: Fleet, ids: list[str]) -> list[dict]:
    """Every job done; the server committed exactly one result per job (its accepted count
    is the number of jobs: a second commit of any job would add one). Returns the records."""
    records = fleet.client.wait_jobs(ids, timeout=300)
    assert [r["state"] for r in records] == ["done"] * len(ids), \
        [(r["job_id"], r["state"], r.get("error")) for r in records if r["state"] != "done"]
    assert fleet.reported("accepted") == len(ids)
    return [fleet.client.get_job(j) for j in ids]


def assert_engine_energies(jobs: list[dict], records: list[dict]) -> None:
    """Each record's energy the engine's own on its job's geometry, 1e-6 Hartree. The
    engine runs in this thread: call it from the test's own (the engine library is not
    known to be safe in two threads at once)."""
    references: dict[int, float] = {}
    for job, record in zip(jobs, records, strict=True):
        atoms = job["atoms"]
        n = len(atoms["numbers"])
        if n not in references:
            references[n] = xtb_reference(atoms["numbers"], atoms["positions"])
        assert record["result"]["energy_hartree"] == pytest.approx(references[n], abs=1e-6)


def process_tree(proc: subprocess.Popen) -> list[psutil.Process]:
    parent = psutil.Process(proc.pid)
    return [parent, *parent.children(recursive=True)]


def pause(proc: subprocess.Popen) -> None:
    """SIGSTOP the controller and its workers, as a frozen VM or a stopped job would be."""
    for p in process_tree(proc):
        p.send_signal(signal.SIGSTOP)


def resume(proc: subprocess.Popen) -> None:
    for p in process_tree(proc):
        try:
            p.send_signal(signal.SIGCONT)
        except psutil.NoSuchProcess:
            pass


def job_lines(log: str, job_id: str) -> list[str]:
    return [line for line in log.splitlines() if f"job={job_id}" in line]


def libfaketime() -> str:
    """Debian's libfaketime (scripts/install-test-deps installs it); its absence fails the
    test rather than skipping it."""
    for base in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib"):
        path = Path(base) / "faketime" / "libfaketime.so.1"
        if path.exists():
            return str(path)
    raise AssertionError("libfaketime is not installed: run scripts/install-test-deps")


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (the suite runs as root), unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                    str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` to the last byte; returns the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for block in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * block)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler
