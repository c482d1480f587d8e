"""Fault 4a of issue #30: a controller frozen (SIGSTOP, it and its workers) past its lease,
then thawed (SIGCONT) mid-batch. Its jobs are leased again and done by the other
controller; what it computed late is refused by the server (fenced by the lease of the
attempt), never committed a second time."""

from __future__ import annotations

import pytest
from controller_faults import (
    Fleet,
    alkane_jobs,
    assert_each_done_once,
    job_lines,
    pause,
    resume,
    wait_for,
)

pytestmark = pytest.mark.slow  # the fault suite: real processes broken mid-batch

JOBS = 24


def test_paused_past_its_lease_its_jobs_run_elsewhere_and_its_late_results_are_refused(tmp_path):
    with Fleet(tmp_path / "srv") as fleet:
        frozen = fleet.controller("frozen")
        jobs = alkane_jobs(JOBS)
        ids = fleet.submit(jobs)
        # Mid-batch, a job in a worker: what it computes after the thaw is a late result.
        wait_for(lambda: fleet.controller_metric("frozen", "atomiverse_controller_running") == 1,
                 what="a job running on the controller to freeze")
        pause(frozen)
        try:
            fleet.controller("thawed-later-is-not-me")
            # Everything, the frozen controller's leases included, is done by the other one.
            records = fleet.client.wait_jobs(ids, timeout=300)
            assert [r["state"] for r in records] == ["done"] * JOBS
        finally:
            resume(frozen)
        taken_over = [j for j in ids if fleet.client.get_job(j)["attempt_errors"]]
        assert taken_over, "no lease of the frozen controller ran out"
        # Thawed, it learns each lease is gone: its heartbeat is told "lost" and stops the job,
        # or its result comes first and the server refuses it. Either way, one line per job.
        wait_for(lambda: all(_settled(fleet.srv.controller_log("frozen"), j) for j in taken_over),
                 what="the thawed controller to hear that its leases were lost")
        out = assert_each_done_once(fleet, ids, jobs)
        for job in out:
            if job["job_id"] in taken_over:
                assert job["controller"] == "thawed-later-is-not-me" and job["attempts"] == 2
                assert [e["error_type"] for e in job["attempt_errors"]] == ["lost"]
            else:
                assert job["attempts"] == 1
        assert frozen.poll() is None  # and it goes on serving


def _settled(log: str, job_id: str) -> bool:
    return any("event=report_rejected" in line or "reason=lease lost" in line
               for line in job_lines(log, job_id))
