"""How many jobs a controller holds: about a second of work per slot, within its limit, so
short jobs come in big claims and long ones are not hoarded from other controllers."""

from __future__ import annotations

import threading

from atomiverse_controller.claimer import CLAIM_HORIZON_SECONDS, INITIAL_PER_SLOT, ClaimLoop
from atomiverse_controller.ledger import Ledger


def _loop(slots=4, max_per_slot=32):
    return ClaimLoop(None, Ledger(), name="t", slots=slots, prefetch_per_slot=max_per_slot,
                     wait_seconds=0, on_claimed=lambda: None, on_refused=lambda e: None)


def test_before_any_job_finished_a_modest_default():
    loop = _loop()
    assert loop.per_slot() == INITIAL_PER_SLOT
    assert loop.watermarks() == (8, 4 * (1 + INITIAL_PER_SLOT))


def test_millisecond_jobs_are_claimed_up_to_the_limit():
    loop = _loop()
    for _ in range(50):
        loop.observe(0.005)
    assert loop.per_slot() == 32
    assert loop.watermarks() == (8, 4 * 33)


def test_long_jobs_one_queued_per_slot():
    loop = _loop()
    for _ in range(50):
        loop.observe(600.0)
    assert loop.per_slot() == 1
    assert loop.watermarks() == (8, 8)


def test_medium_jobs_cover_about_the_horizon():
    loop = _loop()
    for _ in range(100):
        loop.observe(0.125)  # exact in binary: the average stays exactly 1/8 s
    assert loop.per_slot() == round(CLAIM_HORIZON_SECONDS / 0.125) == 8


def test_prefetch_zero_holds_one_job_per_slot_and_no_queue():
    loop = _loop(slots=2, max_per_slot=0)
    loop.observe(0.01)
    assert loop.per_slot() == 0
    assert loop.watermarks() == (2, 2)


class RecordingAPI:
    """A FAKE server for the claim loop alone: records each claim's ``max_jobs`` and answers
    with that many jobs."""

    def __init__(self) -> None:
        self.asked: list[int] = []
        self.claimed = threading.Event()

    def claim(self, *, max_jobs: int, wait_seconds: float) -> list[dict]:
        self.asked.append(max_jobs)
        self.claimed.set()
        return [{"job_id": f"j{len(self.asked)}-{i}", "lease_id": "l", "attempt": 1}
                for i in range(max_jobs)]


def test_a_controller_with_every_slot_busy_claims_nothing():
    api, ledger = RecordingAPI(), Ledger()
    loop = ClaimLoop(api, ledger, name="t", slots=2, prefetch_per_slot=0, wait_seconds=0,
                     on_claimed=lambda: None, on_refused=lambda e: None)
    loop.observe(0.01)
    ledger.add_claimed([{"job_id": "a", "lease_id": "l"}, {"job_id": "b", "lease_id": "l"}])
    running = [ledger.next_queued(), ledger.next_queued()]  # both slots busy
    loop.start()
    try:
        # The loop looks at least twice (it wakes every 0.5 s) and must not claim.
        assert not api.claimed.wait(1.2), f"claimed with no free slot: {api.asked}"
        ledger.finish(running[0]["job_id"])  # a slot frees: one job, no more
        assert api.claimed.wait(10)
    finally:
        loop.stop()
        loop.join(5)
    assert api.asked[0] == 1
