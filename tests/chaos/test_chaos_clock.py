"""Fault 4e of issue #30: a controller whose clock is 5 minutes ahead of or behind its
server's (Debian's libfaketime, preloaded into the controller and its workers), and one
whose clock is stepped back 5 minutes mid-batch (an NTP step). Leases and timeouts are the
server's alone: with 4-second leases and real xtb jobs of a second or more, claimed nine at a time, a
controller that timed its heartbeats or leases by its own wall clock would lose them, and
its jobs would run twice.

libfaketime's CLOCK_MONOTONIC is left alone (FAKETIME_DONT_FAKE_MONOTONIC), as a real
clock step leaves it: faked, it also makes the kernel's monotonic waits hang."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
from controller_faults import (
    LONG_CARBONS,
    Fleet,
    alkane_jobs,
    assert_each_done_once,
    libfaketime,
    wait_for,
)

pytestmark = pytest.mark.slow  # the fault suite: real processes broken mid-batch

JOBS = 12
STEPPED_JOBS = 8  # claimed at once, held for several leases after the step
FIVE_MINUTES = 300.0


def _faketime_env(spec_file) -> dict[str, str]:
    return {"LD_PRELOAD": libfaketime(), "FAKETIME_TIMESTAMP_FILE": str(spec_file),
            "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def _clock_offset_seconds(log: str, event: str) -> float:
    """How far the controller's clock was off when it logged ``event`` (its log's own
    timestamp, against this process's clock now: the event was seconds ago at most)."""
    line = next(line for line in reversed(log.splitlines()) if event in line)
    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return stamp - time.time()


def _assert_no_lease_lost(fleet, ids, jobs) -> None:
    for job in assert_each_done_once(fleet, ids, jobs):
        assert job["attempts"] == 1 and not job["attempt_errors"], job["attempt_errors"]


# Slow: nothing in the controller reads the wall clock for leases, so this one passed before
# the heartbeat left APScheduler too; the step below is the everyday check.
@pytest.mark.slow
@pytest.mark.parametrize("offset", ["+5m", "-5m"], ids=["ahead", "behind"])
def test_a_controller_minutes_off_keeps_its_leases_by_the_servers_clock(tmp_path,
                                                                         offset):
    with Fleet(tmp_path / "srv") as fleet:
        spec = tmp_path / "faketime"
        spec.write_text(f"{offset}\n")
        fleet.controller("skewed", env_extra=_faketime_env(spec))
        off = _clock_offset_seconds(fleet.srv.controller_log("skewed"), "event=registered")
        assert abs(abs(off) - FIVE_MINUTES) < 60 and (off > 0) == offset.startswith("+"), off
        jobs = alkane_jobs(JOBS, LONG_CARBONS)
        ids = fleet.submit(jobs)
        _assert_no_lease_lost(fleet, ids, jobs)


def test_a_controller_clock_stepped_back_mid_batch_keeps_its_leases(tmp_path):
    with Fleet(tmp_path / "srv") as fleet:
        spec = tmp_path / "faketime"
        spec.write_text("+0\n")
        fleet.controller("stepped", env_extra=_faketime_env(spec))
        jobs = alkane_jobs(STEPPED_JOBS, LONG_CARBONS)
        ids = fleet.submit(jobs)
        wait_for(lambda: fleet.srv.controller_log("stepped").count("event=finished") >= 1,
                 what="the batch under way")
        spec.write_text("-5m\n")  # read at every clock call (FAKETIME_NO_CACHE): a step
        _assert_no_lease_lost(fleet, ids, jobs)
        off = _clock_offset_seconds(fleet.srv.controller_log("stepped"), "event=finished")
        assert abs(off + FIVE_MINUTES) < 60, off
