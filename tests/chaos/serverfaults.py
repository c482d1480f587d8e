"""What the server-side fault tests share (several servers, a database restart, a full disk):
real xtb jobs of distinct geometries, a real controller process given every server URL, and
the check that every job accepted was done exactly once with the energy of the engine called
directly on the same geometry."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from atomiverse_server import db
from conftest import PY, xtb_reference

# Leases short enough that a job claimed through a server that died is taken back within
# seconds (by the surviving server's sweep), not a minute.
FAST_LEASES = {"ATOMIVERSE_LEASE_SECONDS": "4", "ATOMIVERSE_HEARTBEAT_SECONDS": "1",
               "ATOMIVERSE_SWEEP_SECONDS": "1"}
ENERGY_TOLERANCE_HARTREE = 1e-6
PACE_SECONDS = 0.2  # between a user's batches: a steady stream, not a flood of the 2 cores
_BASE: tuple[list[int], list[tuple[float, float, float]]] | None = None


def _octanol() -> tuple[list[int], list[tuple[float, float, float]]]:
    global _BASE
    if _BASE is None:
        from atomiverse import Atoms

        atoms = Atoms.from_smiles("CCCCCCCCO")  # 27 atoms: tens of ms of GFN2-xTB a job
        _BASE = list(atoms.numbers), [tuple(p) for p in atoms.positions]
    return _BASE


def xtb_jobs(first: int, count: int, tag: str) -> list[dict[str, Any]]:
    """``count`` single points of octanol, each with its own geometry (one atom moved by
    1e-4 Angstrom per index), so that no two share a cache key and each really runs."""
    numbers, positions = _octanol()
    jobs = []
    for i in range(first, first + count):
        moved = [list(p) for p in positions]
        moved[-1][2] += 1e-4 * i
        jobs.append({"job_type": "single_point_energy", "name": f"{tag}-{i}", "use_cache": False,
                     "atoms": {"numbers": numbers, "positions": moved},
                     "level_of_theory": {"method": "gfn2-xtb"}})
    return jobs


def start_controller(workdir: Path, servers: str, api_key: str, name: str,
                     slots: int = 2) -> subprocess.Popen:
    """A real controller with the real engine, given ``servers`` (comma-separated URLs)."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ATOMIVERSE_HOME": str(workdir)}
    env.pop("ATOMIVERSE_BASE_URL", None)
    with open(workdir / f"{name}.log", "ab") as log:
        return subprocess.Popen(
            [PY, "-m", "atomiverse_controller", "--server", servers, "--name", name,
             "--api-key", api_key, "--slots", str(slots), "--token-file",
             str(workdir / f"{name}.token"), "--spool-dir", str(workdir / f"spool-{name}")],
            stdout=log, stderr=log, env=env)


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 120.0) -> Any:
    """Until ``predicate()`` is true (its value), polling: the event comes from another
    process."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.1)
    return value


def count_jobs(database_url: str, state: str | None = None) -> int:
    engine = db.make_engine(database_url)
    try:
        q = sa.select(sa.func.count()).select_from(db.jobs)
        if state is not None:
            q = q.where(db.jobs.c.state == state)
        with db.read_tx(engine) as conn:
            return int(conn.execute(q).scalar_one())
    finally:
        engine.dispose()


def check_each_done_once(database_url: str, accepted: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Every accepted job (id -> its payload) is in the database exactly once and done, with
    the energy of the engine called directly; no job is there that was not accepted (no batch
    stored twice). Returns the figures docs/reliability.md reports."""
    engine = db.make_engine(database_url)
    try:
        with db.read_tx(engine) as conn:
            rows = conn.execute(sa.select(db.jobs.c.id, db.jobs.c.state, db.jobs.c.result,
                                          db.jobs.c.attempts, db.jobs.c.error)).all()
    finally:
        engine.dispose()
    stored = {r.id: r for r in rows}
    assert len(stored) == len(rows)
    missing = set(accepted) - set(stored)
    extra = set(stored) - set(accepted)
    assert not missing, f"{len(missing)} accepted jobs lost: {sorted(missing)[:5]}"
    assert not extra, f"{len(extra)} jobs stored that no answer accepted: {sorted(extra)[:5]}"
    not_done = {j: (r.state, r.error) for j, r in stored.items() if r.state != "done"}
    assert not not_done, f"{len(not_done)} jobs not done: {list(not_done.items())[:5]}"
    for job_id, payload in accepted.items():
        atoms = payload["atoms"]
        expected = xtb_reference(atoms["numbers"], atoms["positions"])
        got = stored[job_id].result["energy_hartree"]
        assert abs(got - expected) < ENERGY_TOLERANCE_HARTREE, (job_id, got, expected)
    return {"jobs": len(stored), "rerun": sum(r.attempts > 1 for r in rows),
            "lost": len(missing), "duplicated": len(extra)}


class Submitter(threading.Thread):
    """A user submitting small batches one after another through one SDK client until told
    to stop: every call must succeed, whatever fails behind it."""

    def __init__(self, client: Any, target: str, batch: int, tag: str) -> None:
        super().__init__(daemon=True)
        self.client, self.target, self.batch, self.tag = client, target, batch, tag
        self.accepted: dict[str, dict[str, Any]] = {}
        self.batches = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                jobs = xtb_jobs(self.batches * self.batch, self.batch, self.tag)
                response = self.client.submit_batch(jobs, compute_target=self.target)
                assert response["failed"] == 0, response
                self.accepted.update((r["job_id"], job)
                                     for r, job in zip(response["jobs"], jobs, strict=True))
                self.batches += 1
                self.stop.wait(PACE_SECONDS)
        except BaseException as e:  # noqa: BLE001  (reported by the test)
            self.error = e

    def finish(self) -> dict[str, dict[str, Any]]:
        self.stop.set()
        self.join(120)
        assert not self.is_alive(), "a submission hung"
        if self.error is not None:
            raise AssertionError(f"a user's submission failed: {self.error!r}") from self.error
        return self.accepted
