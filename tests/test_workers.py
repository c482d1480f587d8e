"""WorkerPool with real worker subprocesses: real xtb, real crashes, real kills.

Timeouts passed to poll() are safety nets against a hung test, never assertions on speed.
"""

from __future__ import annotations

import importlib.metadata
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from atomiverse.atoms import Atoms
from atomiverse.jobs import GeometryOptimization, SinglePointEnergy
from atomiverse.levels import GFN2_XTB
from atomiverse.schema import OptimizationResult, SinglePointResult
from atomiverse_controller.engines import get_engine
from atomiverse_controller.workers import Outcome, WorkerPool, WorkerStartError, describe_exit
from conftest import DEFAULT_ENGINE, xtb_python_installed

SAFETY_SECONDS = 60.0


def payload(smiles: str = "CCO", name: str | None = None, **kw: Any) -> dict[str, Any]:
    job = SinglePointEnergy(atoms=Atoms.from_smiles(smiles), level_of_theory=GFN2_XTB, **kw)
    data = job.model_dump()
    data["name"] = name  # hook names are not valid job names; set them past validation
    return data


def collect(pool: WorkerPool, n: int) -> dict[str, Outcome]:
    """Poll until ``n`` outcomes arrived."""
    outcomes: dict[str, Outcome] = {}
    for _ in range(1000):
        for outcome in pool.poll(SAFETY_SECONDS):
            outcomes[outcome.job_id] = outcome
        if len(outcomes) >= n:
            return outcomes
    raise AssertionError(f"only {len(outcomes)} of {n} outcomes")


def wait_all_free(pool: WorkerPool) -> None:
    """Poll until every slot is idle again (replacement workers warm up asynchronously)."""
    for _ in range(1000):
        if pool.free_slots() == pool.slots:
            return
        assert pool.poll(SAFETY_SECONDS) == []
    raise AssertionError("slots did not come back")


def run_one(pool: WorkerPool, job_id: str, data: dict[str, Any], **kw: Any) -> Outcome:
    pool.submit(job_id, data, **kw)
    return collect(pool, 1)[job_id]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def xtb_pool() -> Iterator[WorkerPool]:
    with WorkerPool(2) as pool:
        yield pool


@pytest.fixture(scope="module")
def instant_pool() -> Iterator[WorkerPool]:
    with WorkerPool(2, engine="instant") as pool:
        yield pool


# ----- real engine ------------------------------------------------------------------------------
def test_jobs_run_across_two_slots(xtb_pool: WorkerPool) -> None:
    # The pool runs the default engine and reports its distribution's version (xtb, tblite),
    # read here from the package metadata rather than pinned.
    assert (xtb_pool.engine_name, xtb_pool.engine_version) == (
        DEFAULT_ENGINE, importlib.metadata.version(DEFAULT_ENGINE))
    assert set(xtb_pool.engines) == ({"xtb", "tblite"} if xtb_python_installed() else {"tblite"})
    smiles = ["O", "CCO", "CC(=O)N", "c1ccccc1", "C[NH3+]"]
    pending, outcomes = list(enumerate(smiles)), {}
    busy_pids = set()
    while pending or xtb_pool.running_jobs():
        while pending and xtb_pool.free_slots():
            i, s = pending.pop(0)
            xtb_pool.submit(f"job-{i}", payload(s))
        busy_pids |= {pid for job, pid in xtb_pool.worker_pids().items() if job.startswith("job")}
        outcomes.update({o.job_id: o for o in xtb_pool.poll(SAFETY_SECONDS)})
    assert len(busy_pids) == 2  # both slots worked
    assert len(outcomes) == len(smiles)
    for i, s in enumerate(smiles):
        o = outcomes[f"job-{i}"]
        assert o.ok and o.error is None, o.error
        SinglePointResult(**o.result)
        in_process = get_engine(DEFAULT_ENGINE).compute(payload(s))["energy_hartree"]
        assert abs(o.result["energy_hartree"] - in_process) < 1e-6
        assert o.result["core_seconds"] == o.result["wall_time_seconds"]


def test_payload_engine_and_optimisation(xtb_pool: WorkerPool) -> None:
    o = run_one(xtb_pool, "tb", {**payload("CCO"), "engine": "tblite"})
    assert o.ok and o.result["engine"] == "tblite"
    opt = GeometryOptimization(atoms=Atoms.from_smiles("CCO"),
                               level_of_theory=GFN2_XTB).model_dump()
    o = run_one(xtb_pool, "opt", opt)
    assert o.ok, o.error
    OptimizationResult(**o.result)
    assert o.result["converged"] and o.result["energy_hartree"] < o.result["energies_hartree"][0]


def test_engine_exception_is_a_failed_outcome(xtb_pool: WorkerPool) -> None:
    bad = payload("O")
    bad["atoms"]["positions"] = [[0, 0, 0], [0, 0, 0], [0, 0.8, 0]]
    o = run_one(xtb_pool, "bad", bad)
    assert not o.ok and o.result is None
    assert o.error_type == "input"
    assert f"{DEFAULT_ENGINE} setup failed" in o.error and "Traceback" in o.error
    assert run_one(xtb_pool, "after-bad", payload("O")).ok


def test_memory_cap_leaves_normal_jobs_alone() -> None:
    with WorkerPool(1, memory_limit_mb=500) as pool:
        o = run_one(pool, "capped", payload("c1ccccc1"))
        assert o.ok, o.error


def test_cores_per_job_is_the_engines_threads_and_the_billed_core_seconds() -> None:
    data = payload("C" * 12)
    with WorkerPool(1, cores_per_job=2) as pool:
        o = run_one(pool, "two-cores", data)
        pid = pool.worker_pids()["#0"]
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = dict(kv.split(b"=", 1) for kv in fh.read().split(b"\0") if b"=" in kv)
        threads = len(os.listdir(f"/proc/{pid}/task"))
    assert o.ok, o.error
    assert env[b"OMP_NUM_THREADS"] == b"2"
    # The main and engine threads, plus the engine's own: one-core workers have none.
    assert threads > 2
    result = o.result or {}
    assert result["core_seconds"] == pytest.approx(2 * result["wall_time_seconds"])
    direct = get_engine(DEFAULT_ENGINE).compute(data)
    assert abs(result["energy_hartree"] - direct["energy_hartree"]) < 1e-6


def test_one_core_workers_run_no_engine_threads(xtb_pool: WorkerPool) -> None:
    o = run_one(xtb_pool, "one-core", payload("C" * 12))
    assert o.ok, o.error
    pid = xtb_pool.worker_pids()["#0"]
    assert len(os.listdir(f"/proc/{pid}/task")) == 2  # main and engine thread only
    result = o.result or {}
    assert result["core_seconds"] == pytest.approx(result["wall_time_seconds"])


# ----- faults (fake engine) ---------------------------------------------------------------------
@pytest.mark.parametrize(("hook", "signum", "signame"), [
    ("__crash_segfault__", 11, "SIGSEGV"),
    ("__crash_abort__", 6, "SIGABRT"),
])
def test_native_crash_fails_only_that_job(instant_pool: WorkerPool, hook: str, signum: int,
                                          signame: str) -> None:
    wait_all_free(instant_pool)
    pids_before = set(instant_pool.worker_pids().values())
    instant_pool.submit("victim", payload(name=hook))
    instant_pool.submit("bystander", payload())
    outcomes = collect(instant_pool, 2)
    victim = outcomes["victim"]
    assert not victim.ok and victim.error_type == "crash"
    assert victim.error.startswith(f"worker process killed by signal {signum} ({signame})")
    assert outcomes["bystander"].ok
    wait_all_free(instant_pool)  # the dead worker was replaced
    assert len(set(instant_pool.worker_pids().values()) - pids_before) == 1
    assert run_one(instant_pool, "next", payload()).ok


def test_engine_error_type_travels(instant_pool: WorkerPool) -> None:
    wait_all_free(instant_pool)
    o = run_one(instant_pool, "reject", payload(name="__fail_input__"))
    assert not o.ok and o.error_type == "input" and "__fail_input__" in o.error


def test_walltime_kills_and_replaces(instant_pool: WorkerPool) -> None:
    wait_all_free(instant_pool)
    instant_pool.submit("slow", payload(name="__sleep_60__"), walltime_seconds=0.3)
    pid = instant_pool.worker_pids()["slow"]
    o = collect(instant_pool, 1)["slow"]
    assert (o.ok, o.error_type, o.error) == (False, "walltime", "exceeded walltime of 0.3 s")
    assert not alive(pid)
    # The payload's own walltime applies when submit() is given none.
    o = run_one(instant_pool, "slow2", payload(name="__sleep_60__", walltime_seconds=0.3))
    assert o.error_type == "walltime"
    wait_all_free(instant_pool)


def test_cancel_kills_and_slot_is_reused(instant_pool: WorkerPool) -> None:
    wait_all_free(instant_pool)
    instant_pool.submit("doomed", payload(name="__sleep_60__"))
    pid = instant_pool.worker_pids()["doomed"]
    assert instant_pool.cancel("doomed") is True
    assert not alive(pid)
    assert instant_pool.running_jobs() == []
    assert instant_pool.cancel("doomed") is False
    wait_all_free(instant_pool)  # the replacement is ready; no outcome for "doomed" came
    instant_pool.submit("a", payload())
    instant_pool.submit("b", payload())
    outcomes = collect(instant_pool, 2)
    assert set(outcomes) == {"a", "b"} and all(o.ok for o in outcomes.values())


def _tmpdir_of(pid: int) -> str:
    with open(f"/proc/{pid}/environ", "rb") as fh:
        env = dict(v.split(b"=", 1) for v in fh.read().split(b"\0") if b"=" in v)
    return env[b"TMPDIR"].decode()


def test_a_killed_worker_leaves_no_temporary_files() -> None:
    """What an engine writes under TMPDIR goes with its worker, even one killed mid-job."""
    with WorkerPool(1, engine="instant") as pool:
        wait_all_free(pool)
        pool.submit("doomed", payload(name="__sleep_60__"))
        tmp = Path(_tmpdir_of(pool.worker_pids()["doomed"]))
        (tmp / "atomiverse-engine-left-behind").mkdir()  # as a killed isolated child leaves it
        assert pool.cancel("doomed") is True
        assert not tmp.exists()
        wait_all_free(pool)
        replacement = Path(_tmpdir_of(pool.worker_pids()["#0"]))
        assert replacement.is_dir() and replacement != tmp
    assert not replacement.exists()  # and a worker that stops cleanly takes its own along


def test_workers_of_a_killed_controller_remove_their_temporary_directories() -> None:
    """Nobody is left to clean up after a SIGKILLed controller: its orphaned workers exit by
    themselves and take their TMPDIR with them."""
    import subprocess
    import sys
    import time

    code = ("import time\nfrom atomiverse_controller.workers import WorkerPool\n"
            "pool = WorkerPool(2, engine='instant')\npool.start()\n"
            "print(*pool.worker_pids().values(), flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        dirs = [Path(_tmpdir_of(int(pid))) for pid in proc.stdout.readline().split()]
        assert len(dirs) == 2 and all(d.is_dir() for d in dirs)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    deadline = time.monotonic() + 20
    while any(d.exists() for d in dirs) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(d.exists() for d in dirs)


def test_outcome_carries_the_result_as_json_and_a_result_json_cannot_hold_fails() -> None:
    from atomiverse_controller.worker_main import _encoded

    out = _encoded({"type": "outcome", "job_id": "j", "ok": True, "error": None,
                    "error_type": None, "result": {"energy_hartree": -5.07, "grid": [[0.5]]}})
    assert Outcome(**{k: out[k] for k in ("job_id", "ok", "result_json")}).result == \
        {"energy_hartree": -5.07, "grid": [[0.5]]}
    bad = _encoded({"type": "outcome", "job_id": "j", "ok": True, "error": None,
                    "error_type": None, "result": {"energy_hartree": object()}})
    assert (bad["ok"], bad["error_type"], bad["result_json"]) == (False, "internal", None)
    assert bad["error"].startswith("result could not be encoded as JSON")


def test_submit_without_free_slot_raises(instant_pool: WorkerPool) -> None:
    wait_all_free(instant_pool)
    instant_pool.submit("s1", payload(name="__sleep_60__"))
    instant_pool.submit("s2", payload(name="__sleep_60__"))
    assert instant_pool.free_slots() == 0
    with pytest.raises(RuntimeError, match="no free slot"):
        instant_pool.submit("s3", payload())
    assert sorted(instant_pool.running_jobs()) == ["s1", "s2"]
    assert instant_pool.cancel("s1") and instant_pool.cancel("s2")
    wait_all_free(instant_pool)


def test_wakeup_returns_a_blocked_poll(instant_pool: WorkerPool) -> None:
    wait_all_free(instant_pool)
    timer = threading.Timer(0.1, instant_pool.wakeup)
    timer.start()
    assert instant_pool.poll(SAFETY_SECONDS) == []
    timer.join()


def test_workers_ignore_sigint_and_have_their_own_session(instant_pool: WorkerPool) -> None:
    wait_all_free(instant_pool)
    pids = list(instant_pool.worker_pids().values())
    for pid in pids:
        assert os.getsid(pid) == pid and os.getpgid(pid) == pid
        os.kill(pid, signal.SIGINT)
    instant_pool.submit("x", payload())
    instant_pool.submit("y", payload())
    assert all(o.ok for o in collect(instant_pool, 2).values())
    assert sorted(instant_pool.worker_pids().values()) == sorted(pids)


def test_shutdown_stops_every_worker() -> None:
    pool = WorkerPool(2, engine="instant")
    pool.start()
    pids = list(pool.worker_pids().values())
    pool.shutdown()
    assert not any(alive(pid) for pid in pids)
    pool.wakeup()  # harmless after shutdown


def test_unknown_engine_fails_to_start_clearly() -> None:
    with pytest.raises(WorkerStartError, match="unknown engine 'orca'"):
        WorkerPool(1, engine="orca").start()


def test_a_slot_moves_only_along_its_transitions() -> None:
    from atomiverse_controller.pool.slots import IllegalTransition, Slot, SlotState

    slot = Slot()
    with pytest.raises(IllegalTransition, match="DOWN to BUSY"):
        slot.move(SlotState.BUSY)  # a job needs a started worker
    slot.move(SlotState.STARTING)
    slot.run("j", None, warming=True)  # handed over before ready: allowed
    assert (slot.state, slot.deadline) == (SlotState.BUSY, None)  # no walltime while warming
    with pytest.raises(IllegalTransition, match="BUSY to DORMANT"):
        slot.move(SlotState.DORMANT)  # only a stopped idle worker goes dormant
    assert slot.run_staged() is None and slot.state is SlotState.IDLE
    slot.stopped()
    slot.move(SlotState.DORMANT)
    with pytest.raises(IllegalTransition, match="DORMANT to IDLE"):
        slot.move(SlotState.IDLE)  # it starts again first


def test_describe_exit() -> None:
    assert describe_exit(-9, 2000)[0] == "resource"
    assert "memory cap of 2000 MB" in describe_exit(-9, 2000)[1]
    # SIGKILL from outside (the OOM killer) is retryable: it says nothing about the job.
    assert describe_exit(-9, None)[0] == "resource"
    error_type, message = describe_exit(1, 100, "Error allocating 8 bytes: Cannot allocate memory")
    assert error_type == "resource" and message.endswith("(memory cap 100 MB)")
    # tblite's gfortran runtime (the engine on Python 3.12+) names no errno.
    tblite_words = ("Fortran runtime error: In file 'type.f90', around line 66: "
                    "Error allocating 12510816 bytes")
    assert describe_exit(1, 60, tblite_words)[0] == "resource"
    assert describe_exit(1, None) == ("crash", ("worker process exited with status 1 while "
                                                "running the engine"))


def _exhaust_memory() -> bytearray:
    """Ask for a gigabyte under an address-space cap 64 MB above what is in use."""
    import resource

    with open("/proc/self/statm") as fh:
        in_use = int(fh.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (in_use + (64 << 20), resource.RLIM_INFINITY))
    return bytearray(1 << 30)


def test_running_out_of_memory_is_retryable_however_it_shows() -> None:
    """One rule: out of memory is ``resource`` (the server retries it), whether the worker
    raised MemoryError, an isolated child did, or the worker died saying so, capped or not."""
    from atomiverse_controller.engines.isolate import run_isolated
    from atomiverse_controller.pool.exits import exception_failure

    with pytest.raises(MemoryError):  # comes back as itself, so the worker's rule applies
        run_isolated(_exhaust_memory, label="allocation")
    assert exception_failure(MemoryError()) == ("resource", "out of memory")
    assert exception_failure(RuntimeError("no"))[0] == "internal"
    words = "Error allocating 8 bytes: Cannot allocate memory"
    assert describe_exit(1, None, words)[0] == describe_exit(1, 100, words)[0] == "resource"


@pytest.mark.slow  # a fault test: a job that eats memory until its cap
def test_memory_cap_fails_the_huge_job_and_the_pool_goes_on() -> None:
    import time

    with WorkerPool(1, memory_limit_mb=60) as pool:
        big = run_one(pool, "too-big", payload("C" * 120))
        assert not big.ok and big.error_type == "resource"
        assert "memory cap 60 MB" in (big.error or "")
        deadline = time.monotonic() + 60
        while pool.free_slots() == 0:  # the replacement worker warms up
            assert time.monotonic() < deadline
            pool.poll(0.5)
        small = run_one(pool, "after", payload("O"))
        assert small.ok


# ----- idle workers stop, and start again with the next job --------------------------------------
def wait_until_warm(pool: WorkerPool, n: int) -> None:
    for _ in range(1000):
        if pool.warm_workers() == n:
            return
        pool.poll(SAFETY_SECONDS)
    raise AssertionError(f"{pool.warm_workers()} workers warm, expected {n}")


def test_idle_workers_stop_and_a_job_starts_them_again() -> None:
    smiles = ["CCO", "c1ccccc1"]
    with WorkerPool(2, idle_seconds=0.5, keep_warm=1) as pool:
        for i, s in enumerate(smiles):
            pool.submit(f"warm-{i}", payload(s))
        assert all(o.ok for o in collect(pool, 2).values())
        before = set(pool.worker_pids().values())
        wait_until_warm(pool, 1)
        (kept,) = pool.worker_pids().values()
        assert [pid for pid in before if alive(pid)] == [kept]
        assert pool.free_slots() == 2  # the stopped slot still takes a job
        for i, s in enumerate(smiles):
            pool.submit(f"again-{i}", payload(s))
        assert pool.warm_workers() == 2 and pool.free_slots() == 0
        outcomes = collect(pool, 2)
        assert len(set(pool.worker_pids().values()) - before) == 1  # one new worker
    for i, s in enumerate(smiles):
        o = outcomes[f"again-{i}"]
        assert o.ok, o.error
        in_process = get_engine(DEFAULT_ENGINE).compute(payload(s))["energy_hartree"]
        assert abs(o.result["energy_hartree"] - in_process) < 1e-6


def test_a_restarted_worker_still_enforces_walltime() -> None:
    with WorkerPool(1, engine="instant", idle_seconds=0.2, keep_warm=0) as pool:
        wait_until_warm(pool, 0)
        o = run_one(pool, "slow", payload(name="__sleep_60__"), walltime_seconds=0.5)
        assert (o.ok, o.error_type) == (False, "walltime")
        wait_until_warm(pool, 0)
        assert run_one(pool, "quick", payload()).ok


def test_a_worker_that_cannot_start_again_fails_its_job_as_retryable() -> None:
    with WorkerPool(1, engine="instant", idle_seconds=0.2, keep_warm=0) as pool:
        wait_until_warm(pool, 0)
        pool._requested_engine = "orca"  # the next start fails, as a broken install would
        o = run_one(pool, "stranded", payload())
        assert (o.ok, o.error_type) == (False, "resource")
        assert "worker could not start" in o.error and "unknown engine 'orca'" in o.error
        assert pool.running_jobs() == []


# ----- staged jobs ------------------------------------------------------------------------------
@pytest.fixture
def one_slot() -> Iterator[WorkerPool]:
    """One job staged per worker, as before ``stage_depth`` (more: test_worker_staging.py)."""
    with WorkerPool(1, engine="instant", stage_depth=1) as pool:
        yield pool


def test_a_staged_job_runs_when_the_running_one_ends(one_slot: WorkerPool) -> None:
    """Its walltime starts then too: 0.4 s would have run out while it waited 0.6 s."""
    pool = one_slot
    pool.submit("first", payload(name="__sleep_0.6__"))
    assert pool.stageable() == 1
    assert pool.stage("second", payload(name="__sleep_0.1__"), walltime_seconds=0.4)
    assert (pool.stageable(), pool.staged_jobs(), pool.free_slots()) == (0, 1, 0)
    assert not pool.stage("third", payload())  # one per worker
    assert sorted(pool.running_jobs()) == ["first", "second"]
    with pytest.raises(ValueError):
        pool.stage("second", payload())
    pid = pool.worker_pids()["first"]
    first = pool.poll(SAFETY_SECONDS)
    assert [o.job_id for o in first] == ["first"] and first[0].ok
    assert pool.worker_pids() == {"second": pid} and pool.staged_jobs() == 0
    second = collect(pool, 1)["second"]
    assert second.ok, second.error
    assert pool.free_slots() == 1 and pool.running_jobs() == []


def test_a_job_staged_behind_a_crash_runs_on_the_replacement(one_slot: WorkerPool) -> None:
    pool = one_slot
    pool.submit("victim", payload(name="__sleep_60__"))  # killed long before it ends
    pool.stage("bystander", payload())
    pid = pool.worker_pids()["victim"]
    os.kill(pid, signal.SIGKILL)
    outcomes = collect(pool, 2)
    assert outcomes["victim"].error_type == "resource"  # killed from outside, as the OOM killer
    assert outcomes["bystander"].ok, outcomes["bystander"].error
    assert pid not in pool.worker_pids().values()


def test_a_job_staged_behind_a_walltime_runs_on_the_replacement(one_slot: WorkerPool) -> None:
    pool = one_slot
    pool.submit("slow", payload(name="__sleep_60__"), walltime_seconds=0.3)
    pool.stage("next", payload())
    outcomes = collect(pool, 2)
    assert outcomes["slow"].error_type == "walltime"
    assert outcomes["next"].ok, outcomes["next"].error


def test_cancelling_the_running_job_keeps_the_staged_one(one_slot: WorkerPool) -> None:
    pool = one_slot
    pool.submit("doomed", payload(name="__sleep_60__"))
    pool.stage("kept", payload())
    assert pool.cancel("doomed") is True
    outcomes = collect(pool, 1)
    assert list(outcomes) == ["kept"] and outcomes["kept"].ok


def test_a_cancelled_staged_job_is_stopped_and_yields_nothing(one_slot: WorkerPool) -> None:
    pool = one_slot
    pool.submit("running", payload(name="__sleep_0.3__"))
    pool.stage("unwanted", payload(name="__sleep_60__"))
    pid = pool.worker_pids()["running"]
    assert pool.cancel("unwanted") is True
    assert pool.cancel("unwanted") is False and pool.running_jobs() == ["running"]
    outcomes = collect(pool, 1)
    assert list(outcomes) == ["running"] and outcomes["running"].ok
    assert not alive(pid)  # stopped as it started the cancelled job
    wait_all_free(pool)
    assert run_one(pool, "after", payload()).ok


def test_a_staged_job_whose_replacement_cannot_start_fails_as_retryable(
        one_slot: WorkerPool) -> None:
    pool = one_slot
    pool.submit("victim", payload(name="__sleep_60__"))  # killed long before it ends
    pool.stage("stranded", payload())
    pool._requested_engine = "orca"  # the replacement fails to start, as a broken install would
    os.kill(pool.worker_pids()["victim"], signal.SIGKILL)
    outcomes = collect(pool, 2)
    stranded = outcomes["stranded"]
    assert (stranded.ok, stranded.error_type) == (False, "resource")
    assert "worker could not start" in stranded.error
