"""A claim wakes the heartbeat thread only out of its idle sleep. Woken by every claim, it
took the interpreter from the controller's dispatch once per job (each ASE calculation) and,
since each wake restarted its interval, a controller claiming more often than once an
interval never renewed its leases at all. Against a real server."""

from __future__ import annotations

import threading
import time

from atomiverse_controller.api import ControllerAPI
from atomiverse_controller.heartbeat import Heartbeat
from atomiverse_controller.ledger import Ledger

WAIT_SECONDS = 60.0  # only a broken build waits this long
INTERVAL_SECONDS = 0.2


def test_claims_coming_faster_than_the_interval_do_not_hold_back_the_renewals(
        server, workspace_key):
    api = ControllerAPI(server.url)
    api.register(api_key=workspace_key, name="busy-heart", slots=1, cores_per_job=1,
                 capacity=None, engines={"instant": "0"}, holding=[])
    lease = {"job_id": "long-job", "lease_id": "its-lease"}  # a long job, held throughout
    beats: list[list[dict[str, str]]] = []
    three = threading.Event()
    real_beat = api.heartbeat

    def counted_beat(running: list[dict[str, str]]) -> dict[str, list[str]]:
        out = real_beat(running)
        beats.append(running)
        if len(beats) >= 3:
            three.set()
        return out

    api.heartbeat = counted_beat  # type: ignore[method-assign]
    beat = Heartbeat(api, Ledger(), name="busy-heart", interval=INTERVAL_SECONDS,
                     on_stop_jobs=lambda ids, why: None, on_refused=lambda e: None,
                     on_drain=lambda: None, held=lambda: [lease])
    beat.start()
    deadline = time.monotonic() + WAIT_SECONDS
    try:
        # Short jobs claimed besides it, one every tenth of the interval, until three beats
        # have renewed the long job's lease.
        while not three.wait(INTERVAL_SECONDS / 10):
            assert time.monotonic() < deadline, f"{len(beats)} renewals while claiming"
            beat.wake()
    finally:
        beat.stop()
        api.close()
    assert all(b == [lease] for b in beats)

