"""Fault 4d of issue #30: the controller's spool directory on a full filesystem (a 1 MiB
tmpfs the test mounts and fills) while its server is out of reach, so every result must
wait. The results stay in memory, a log line says so, the spool write is retried, and once
space returns they reach the disk; once the network returns, the server. Each job runs
once. Needs root (mount), which the suite has."""

from __future__ import annotations

import pytest
from controller_faults import Fleet, alkane_jobs, assert_each_done_once, fill, tmpfs, wait_for
from tcpproxy import TCPProxy

pytestmark = pytest.mark.slow  # the fault suite: real processes broken mid-batch

JOBS = 6


def test_full_spool_disk_keeps_results_in_memory_and_delivers_them(tmp_path):
    # The lease outlasts the cut: the point is the disk, not the lease.
    fleet = Fleet(tmp_path / "srv", env_extra={"ATOMIVERSE_LEASE_SECONDS": "120"})
    try:
        with tmpfs(tmp_path / "small", "1m") as disk, \
                TCPProxy("127.0.0.1", int(fleet.srv.url.rsplit(":", 1)[1])) as proxy:
            spool = disk / "spool"
            fleet.controller("cramped", server_url=proxy.url, spool_dir=spool)
            filler = fill(disk)
            jobs = alkane_jobs(JOBS)
            ids = fleet.submit(jobs)
            log = lambda: fleet.srv.controller_log("cramped")
            wait_for(lambda: log().count("event=claimed") == JOBS, what="all jobs claimed")
            proxy.cut("reset")
            wait_for(lambda: "event=spool_full" in log(), what="the full disk noticed")
            wait_for(lambda: log().count("event=finished") == JOBS,
                     what="all computed while the spool disk is full")
            assert not list(spool.glob("*")), "something was written to a full disk"
            filler.unlink()  # space returns: the next retry writes them
            wait_for(lambda: "event=spool_writable" in log(), what="the spool written")
            assert list(spool.glob("*.json"))
            proxy.restore()
            wait_for(lambda: not list(spool.glob("*")), what="the spool delivered")
            for job in assert_each_done_once(fleet, ids, jobs):
                assert job["attempts"] == 1 and job["controller"] == "cramped"
            assert "Traceback" not in log()
    finally:
        fleet.close()


@pytest.mark.slow
def test_full_spool_disk_results_delivered_from_memory_when_the_server_returns_first(
        tmp_path):
    fleet = Fleet(tmp_path / "srv", env_extra={"ATOMIVERSE_LEASE_SECONDS": "120"})
    try:
        with tmpfs(tmp_path / "small", "1m") as disk, \
                TCPProxy("127.0.0.1", int(fleet.srv.url.rsplit(":", 1)[1])) as proxy:
            spool = disk / "spool"
            fleet.controller("cramped", server_url=proxy.url, spool_dir=spool)
            fill(disk)
            jobs = alkane_jobs(JOBS)
            ids = fleet.submit(jobs)
            log = lambda: fleet.srv.controller_log("cramped")
            wait_for(lambda: log().count("event=claimed") == JOBS, what="all jobs claimed")
            proxy.cut("reset")
            wait_for(lambda: "event=spool_full" in log() and
                     log().count("event=finished") == JOBS, what="computed, disk full")
            proxy.restore()  # the disk stays full
            for job in assert_each_done_once(fleet, ids, jobs):
                assert job["attempts"] == 1 and job["controller"] == "cramped"
            assert not list(spool.glob("*"))
            assert "Traceback" not in log()
    finally:
        fleet.close()
