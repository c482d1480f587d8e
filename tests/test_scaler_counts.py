"""What the scaler counts as a pool's running capacity, from the server's pool answer (the
whole loop against real SLURM allocations is in test_slurm_scale.py)."""

from __future__ import annotations

from atomiverse_controller.heartbeat import IDLE_HEARTBEAT_SECONDS
from atomiverse_controller.scale.scaler import Scaler
from atomiverse_controller.scale.site import SiteConfig


class RecordedPool:
    """The pool's answer as the server gives it (``GET /api/v1/controllers/pool``)."""

    def __init__(self, seen_seconds_ago: float) -> None:
        self.answer = {"pending": 4, "members": [
            {"name": "hpc.1001", "status": "online", "seen_seconds_ago": seen_seconds_ago,
             "slots": 2, "running": 0}]}

    def pool_state(self) -> dict:
        return self.answer


def _scaler(tmp_path, pool: RecordedPool) -> Scaler:
    key = tmp_path / "key"
    key.write_text("av_test")
    key.chmod(0o600)
    site = SiteConfig(target="hpc", server="http://127.0.0.1:1", api_key_file=key,
                      scheduler="local", cores_per_node=2, max_nodes=2, work_dir=tmp_path)
    return Scaler(site, provider=None, api=pool, heartbeat_seconds=3.0)


def test_an_idle_member_between_its_beats_is_running_capacity(tmp_path):
    """An idle controller beats every IDLE_HEARTBEAT_SECONDS: just before its next beat it is
    still there, and its free slots cover pending work (no allocation asked for it)."""
    snap = _scaler(tmp_path, RecordedPool(IDLE_HEARTBEAT_SECONDS - 1)).snapshot()
    assert snap.live_members == 1 and snap.free_slots == 2


def test_a_member_silent_for_several_idle_beats_is_not(tmp_path):
    snap = _scaler(tmp_path, RecordedPool(3 * IDLE_HEARTBEAT_SECONDS)).snapshot()
    assert snap.live_members == 0 and snap.free_slots == 0
