"""Nothing to do costs nothing (issue 22 item 3): an idle server writes nothing and
checkpoints nothing, its lease sweep sleeps until a lease can run out, an idle controller's
heartbeat thread sleeps until its beat is due. Counted in statements and calls, not time."""

from __future__ import annotations

import threading
from email.utils import parsedate_to_datetime

import sqlalchemy as sa
from atomiverse_controller import heartbeat as heartbeat_module
from atomiverse_controller.api import ControllerAPI
from atomiverse_controller.heartbeat import Heartbeat
from atomiverse_controller.ledger import Ledger
from atomiverse_server import datehdr, db
from atomiverse_server.main import create_app
from atomiverse_server.settings import Settings
from starlette.testclient import TestClient

WAIT_SECONDS = 60.0  # only a broken build waits this long
LEASE_SWEEP_READ = "min(jobs.lease_expires_at)"


class _Statements:
    """Every SQL statement any engine in this process runs, while installed."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.changed = threading.Condition()

    def __call__(self, _conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        with self.changed:
            self.seen.append(statement)
            self.changed.notify_all()

    def wait_for(self, predicate, what: str) -> None:  # type: ignore[no-untyped-def]
        with self.changed:
            assert self.changed.wait_for(lambda: predicate(self.seen), WAIT_SECONDS), what


def test_an_idle_server_takes_no_write_lock_and_checkpoints_nothing(tmp_path, monkeypatch):
    checkpoints: list[object] = []
    first_checkpoint = threading.Event()
    real_checkpoint = db.checkpoint_wal

    def counted_checkpoint(engine: object) -> None:
        real_checkpoint(engine)
        checkpoints.append(engine)
        first_checkpoint.set()

    monkeypatch.setattr(db, "checkpoint_wal", counted_checkpoint)
    statements = _Statements()
    sa.event.listen(sa.engine.Engine, "before_cursor_execute", statements)
    # Short leases: the sweep, sleeping a lease period while no job runs, passes often.
    settings = Settings(home=tmp_path, lease_seconds=0.2, sweep_seconds=0.05)
    try:
        with TestClient(create_app(settings)):
            # Creating the schema wrote: that is checkpointed once, a moment later.
            assert first_checkpoint.wait(WAIT_SECONDS)
            with statements.changed:
                mark, checkpoints_before = len(statements.seen), len(checkpoints)
            writes_before = db._writes
            statements.wait_for(
                lambda seen: sum(LEASE_SWEEP_READ in s for s in seen[mark:]) >= 5,
                "five passes of the lease sweep")
            with statements.changed:
                idle = statements.seen[mark:]
            checkpoints_after, writes_after = len(checkpoints), db._writes
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", statements)
    assert not [s for s in idle if "BEGIN IMMEDIATE" in s], "a write transaction while idle"
    assert writes_after == writes_before
    assert checkpoints_after == checkpoints_before, "a WAL checkpoint with nothing written"
    # A pass with no job running is two reads at most: expired leases, the next expiry.
    assert not [s for s in idle if s.lstrip().upper().startswith(("UPDATE", "INSERT",
                                                                   "DELETE"))]


def test_an_idle_heartbeat_thread_sleeps_until_its_beat_is_due(server, workspace_key,
                                                               monkeypatch):
    monkeypatch.setattr(heartbeat_module, "IDLE_HEARTBEAT_SECONDS", 0.5)
    api = ControllerAPI(server.url)
    api.register(api_key=workspace_key, name="idle-heart", slots=1, cores_per_job=1,
                 capacity=None, engines={"instant": "0"}, holding=[])
    looks: list[int] = []  # one per look at the leases held
    leases: list[dict[str, str]] = []
    beats: list[list[dict[str, str]]] = []
    enough = threading.Event()
    wanted = {"idle": 3, "held": 0}
    real_beat = api.heartbeat

    def held() -> list[dict[str, str]]:
        looks.append(1)
        return list(leases)

    def counted_beat(running: list[dict[str, str]]) -> dict[str, list[str]]:
        out = real_beat(running)
        beats.append(running)
        kind = "held" if running else "idle"
        if sum(bool(b) == (kind == "held") for b in beats) >= wanted[kind]:
            enough.set()
        return out

    api.heartbeat = counted_beat  # type: ignore[method-assign]
    # Every 10 ms while leases are held: the old thread looked every 10 ms regardless.
    beat = Heartbeat(api, Ledger(), name="idle-heart", interval=0.01,
                     on_stop_jobs=lambda ids, why: None, on_refused=lambda e: None,
                     on_drain=lambda: None, held=held)
    beat.start()
    try:
        assert enough.wait(WAIT_SECONDS), "three idle beats"
        idle_beats, idle_looks = len(beats), len(looks)
        # Two looks a beat (before it, and to time the next), three if a sleep ended a hair
        # early; the old thread looked every interval, fifty times a beat.
        assert idle_looks <= 3 * idle_beats + 2, (idle_looks, idle_beats)
        # A claim: its leases are renewed every interval from now on, not after the idle sleep.
        enough.clear()
        wanted["held"] = 3
        leases.append({"job_id": "no-such-job", "lease_id": "no-such-lease"})
        beat.wake()
        assert enough.wait(WAIT_SECONDS), "three beats renewing the new lease"
    finally:
        beat.stop()
        api.close()
    assert [b for b in beats[idle_beats:] if b], "the held lease was sent"


def test_the_date_header_is_refreshed_in_place_by_each_request():
    headers = [(b"date", b"Thu, 01 Jan 1970 00:00:00 GMT"), (b"server", b"x")]
    same = headers
    datehdr.refresh(headers)
    assert headers is same and headers[1] == (b"server", b"x")
    assert parsedate_to_datetime(headers[0][1].decode()).year > 1970
    undated = [(b"server", b"x")]  # uvicorn's date_header turned off: left alone
    datehdr.refresh(undated)
    assert undated == [(b"server", b"x")]
