"""Several jobs staged behind a running one (``WorkerPool(stage_depth=...)``), with real
worker processes of the FAKE ``instant`` engine: each staged job runs once, in order, and a
crash, a memory kill, a failed restart or a cancel of one job costs no other job.

Timeouts passed to poll() are safety nets against a hung test, never assertions on speed."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from atomiverse_controller.workers import WorkerPool
from test_workers import alive, collect, payload, wait_all_free

SAFETY_SECONDS = 60.0


@pytest.fixture
def deep_slot() -> Iterator[WorkerPool]:
    with WorkerPool(1, engine="instant", stage_depth=3) as pool:
        yield pool


def stage_three(pool: WorkerPool, names: tuple[str | None, ...] = (None, None, None)) -> None:
    for i, name in enumerate(names):
        assert pool.stage(f"staged-{i}", payload(name=name)), f"staged-{i} refused"


def test_three_jobs_staged_behind_one_each_run_once_in_order(deep_slot: WorkerPool) -> None:
    pool = deep_slot
    pool.submit("running", payload(name="__sleep_0.3__"))
    assert pool.stageable() == 3
    stage_three(pool)
    assert (pool.stageable(), pool.staged_jobs(), pool.free_slots()) == (0, 3, 0)
    assert not pool.stage("fourth", payload())  # the depth is the limit
    assert pool.running_jobs() == ["running", "staged-0", "staged-1", "staged-2"]
    pid = pool.worker_pids()["running"]
    order = []
    while len(order) < 4:
        order += [o.job_id for o in pool.poll(SAFETY_SECONDS) if o.ok]
    assert order == ["running", "staged-0", "staged-1", "staged-2"]
    assert pool.worker_pids() == {"#0": pid}  # one worker ran all four
    assert pool.free_slots() == 1 and pool.running_jobs() == [] and pool.staged_jobs() == 0


def test_staged_jobs_spread_over_the_busy_workers() -> None:
    with WorkerPool(2, engine="instant", stage_depth=3) as pool:
        pool.submit("a", payload(name="__sleep_0.3__"))
        pool.submit("b", payload(name="__sleep_0.3__"))
        for i in range(4):
            assert pool.stage(f"s{i}", payload())
        assert sorted(len(w.staged) for w in pool._workers) == [2, 2]
        assert len(collect(pool, 6)) == 6


def test_a_kill_fails_only_the_running_job_and_every_staged_one_runs(
        deep_slot: WorkerPool) -> None:
    """Killed from outside, as the OOM killer does: the staged jobs never started, so the
    replacement runs each of them."""
    pool = deep_slot
    pool.submit("victim", payload(name="__sleep_60__"))  # killed long before it ends
    stage_three(pool)
    pid = pool.worker_pids()["victim"]
    os.kill(pid, signal.SIGKILL)
    outcomes = collect(pool, 4)
    assert outcomes["victim"].error_type == "resource"
    for i in range(3):
        assert outcomes[f"staged-{i}"].ok, outcomes[f"staged-{i}"].error
    assert not alive(pid)
    wait_all_free(pool)


def test_a_crash_among_the_staged_jobs_fails_only_that_one(deep_slot: WorkerPool) -> None:
    pool = deep_slot
    pool.submit("running", payload(name="__sleep_0.2__"))
    stage_three(pool, (None, "__crash_abort__", None))
    outcomes = collect(pool, 4)
    assert [k for k, o in outcomes.items() if not o.ok] == ["staged-1"]
    assert outcomes["staged-1"].error_type == "crash"


def test_staged_jobs_whose_replacement_cannot_start_each_fail_as_retryable(
        deep_slot: WorkerPool) -> None:
    pool = deep_slot
    pool.submit("victim", payload(name="__sleep_60__"))  # killed long before it ends
    stage_three(pool)
    pool._requested_engine = "orca"  # the replacement fails to start, as a broken install would
    os.kill(pool.worker_pids()["victim"], signal.SIGKILL)
    outcomes = collect(pool, 4)
    for i in range(3):
        staged = outcomes[f"staged-{i}"]
        assert (staged.ok, staged.error_type) == (False, "resource")
        assert "worker could not start" in staged.error
    assert pool.running_jobs() == [] and pool.staged_jobs() == 0


def test_a_walltime_passes_the_staged_jobs_to_the_replacement(deep_slot: WorkerPool) -> None:
    pool = deep_slot
    pool.submit("slow", payload(name="__sleep_60__"), walltime_seconds=0.3)
    stage_three(pool)
    outcomes = collect(pool, 4)
    assert outcomes["slow"].error_type == "walltime"
    assert all(outcomes[f"staged-{i}"].ok for i in range(3))


def test_cancelling_a_staged_job_in_the_middle_keeps_the_others(deep_slot: WorkerPool) -> None:
    pool = deep_slot
    pool.submit("running", payload(name="__sleep_0.3__"))
    stage_three(pool, (None, "__sleep_60__", None))
    assert pool.cancel("staged-1") is True
    assert pool.running_jobs() == ["running", "staged-0", "staged-2"]
    outcomes = collect(pool, 3)
    assert sorted(outcomes) == ["running", "staged-0", "staged-2"]
    assert all(o.ok for o in outcomes.values())
    wait_all_free(pool)


def test_cancelling_the_running_job_passes_every_staged_one_on(deep_slot: WorkerPool) -> None:
    pool = deep_slot
    pool.submit("doomed", payload(name="__sleep_60__"))
    stage_three(pool)
    assert pool.cancel("doomed") is True
    outcomes = collect(pool, 3)
    assert sorted(outcomes) == ["staged-0", "staged-1", "staged-2"]
    assert all(o.ok for o in outcomes.values())
