"""The server's disk nearly full (issue 30, item 4f): the SQLite database on a small tmpfs the
test mounts (as root), filled with a file mid-batch.

* Below ``min_free_disk_mb`` free, new work is refused before it is read: 507, and the SDK's
  ``InsufficientStorageError`` says why; the jobs accepted before run on and their results
  are stored (in the space the threshold kept).
* Above the threshold but with less room than a batch needs, the write itself fails:
  SQLite's "disk is full" is a 507 too, and nothing of that batch is stored.
* Once space is freed everything continues: the refused batch is accepted and done, every
  job accepted is done exactly once with the engine's energy, the database file is intact."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import atomiverse
import pytest
from conftest import start_server, stop_process, wait_for_controller
from controller_faults import tmpfs
from serverfaults import check_each_done_once, count_jobs, start_controller, xtb_jobs

pytestmark = pytest.mark.slow  # the fault suite: real processes broken mid-batch

DISK_MB = 48
THRESHOLD_MB = 4  # ATOMIVERSE_MIN_FREE_DISK_MB in this test
MB = 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of DISK_MB, mounted for this test."""
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs, which needs root (CI runs as root)",
                    pytrace=False)
    with tmpfs(tmp_path / "disk", f"{DISK_MB}m") as mount:
        yield mount


def leave_free(filler: Path, free_mb: float) -> None:
    """Grow or shrink ``filler`` so that its filesystem has about ``free_mb`` free."""
    have = filler.stat().st_size if filler.exists() else 0
    free = os.statvfs(filler.parent).f_bavail * os.statvfs(filler.parent).f_frsize
    size = max(0, have + free - int(free_mb * MB))
    with open(filler, "ab") as f:
        f.truncate(size)
        if size > have:
            os.posix_fallocate(f.fileno(), 0, size)  # real blocks, not a sparse file


def big_jobs(count: int, atoms: int) -> list[dict]:
    """Jobs that validate but take room: ``atoms`` hydrogens 1.5 Angstrom apart on a line
    (an even count: a singlet), coordinates written with every digit."""
    return [{"job_type": "single_point_energy", "name": f"big-{i}", "use_cache": False,
             "atoms": {"numbers": [1] * atoms,
                       "positions": [[1.5 * k + 0.123456789012345, 0.987654321098765,
                                      i * 1e-9 + 0.111111111111111] for k in range(atoms)]},
             "level_of_theory": {"method": "gfn2-xtb"}} for i in range(count)]


@pytest.mark.slow  # real xtb jobs, a full disk and back: a minute under shared load
@pytest.mark.timeout(600)
def test_disk_nearly_full_refuses_new_batches_and_damages_nothing(small_disk, tmp_path):
    database_url = f"sqlite:///{small_disk / 'atomiverse.db'}"
    srv = start_server(tmp_path / "home", database_url=database_url,
                       env_extra={"ATOMIVERSE_MIN_FREE_DISK_MB": str(THRESHOLD_MB)})
    key = srv.new_workspace("lab")
    controller = start_controller(tmp_path / "node", srv.url, key, "node")
    client = atomiverse.Client(api_key=key, base_url=srv.url)
    filler = small_disk / "filler"
    try:
        wait_for_controller(srv.url, key, "node", controller)
        first = xtb_jobs(0, 30, "first")
        response = client.submit_batch(first, compute_target="node")
        accepted = {r["job_id"]: job for r, job in zip(response["jobs"], first, strict=True)}
        finished = client.as_completed(list(accepted), timeout=300)
        next(finished)  # mid-batch

        # 1. Below the threshold: new work refused before it is read, and said why.
        leave_free(filler, THRESHOLD_MB / 2)
        stored = count_jobs(database_url)
        later = xtb_jobs(100, 10, "later")
        with pytest.raises(atomiverse.InsufficientStorageError,
                           match=r"disk is nearly full .*min_free_disk_mb") as refused:
            client.submit_batch(later, compute_target="node")
        assert refused.value.status_code == 507 and refused.value.retry_after_seconds
        with pytest.raises(atomiverse.InsufficientStorageError):
            client.submit_job(later[0], compute_target="node")
        assert count_jobs(database_url) == stored
        # What was accepted runs on, its results stored in the space kept free.
        records = client.wait_jobs(list(accepted), timeout=400)
        assert {r["state"] for r in records} == {"done"}

        # 2. Room by the threshold but not for this batch: the write fails, rolled back.
        leave_free(filler, THRESHOLD_MB + 2)
        with pytest.raises(atomiverse.InsufficientStorageError, match="disk is full"):
            client.submit_batch(big_jobs(400, 300), compute_target="node")
        assert count_jobs(database_url) == stored

        # 3. Space freed: everything continues.
        filler.unlink()
        response = client.submit_batch(later, compute_target="node")
        accepted.update((r["job_id"], job) for r, job in zip(response["jobs"], later,
                                                            strict=True))
        records = client.wait_jobs(list(accepted), timeout=400)
        assert {r["state"] for r in records} == {"done"}
        figures = check_each_done_once(database_url, accepted)
        with sqlite3.connect(small_disk / "atomiverse.db") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert "event=disk_nearly_full" in (srv.home / "server.log").read_text()
        assert "event=disk_full" in (srv.home / "server.log").read_text()
        print(f"server disk full: {figures}")
    finally:
        client.close()
        stop_process(controller)
        stop_process(srv.proc)


def test_a_full_disk_is_told_from_a_database_that_is_away():
    # The driver's own exceptions, as SQLAlchemy wraps them: PostgreSQL's disk_full (53100)
    # and SQLite's SQLITE_FULL are a 507; a restart or a refused connection, a 503.
    import psycopg
    import sqlalchemy.exc as sa_exc
    from atomiverse_server.dberrors import disk_full

    def wrapped(orig: Exception) -> sa_exc.OperationalError:
        return sa_exc.OperationalError("INSERT ...", {}, orig)

    full = sqlite3.OperationalError("database or disk is full")
    assert disk_full(wrapped(psycopg.errors.DiskFull("could not extend file")))
    assert disk_full(wrapped(full))
    assert not disk_full(wrapped(psycopg.errors.AdminShutdown("terminating connection")))
    assert not disk_full(wrapped(psycopg.OperationalError("connection refused")))
    assert not disk_full(wrapped(sqlite3.OperationalError("database is locked")))
