"""Signals between server processes on one PostgreSQL database, by LISTEN/NOTIFY.

A controller's claim poll, a client's wait or watch parks on the server process it reached.
New work submitted through another process, or a result reported through another one, fired
only that process's signals: the parked poll learnt of it at its next re-check of the
database (``recheck_seconds``, 1 s). Here each process relays the signals it fires (the
``relay`` of ``notify.Signal``) as a notification on one channel, and a listener thread
fires the others' in this process. The re-check stays, for a notification lost with a
connection (the listener also wakes everything after it reconnects, for the same reason).

Cheap on the hot paths: ``relay`` only queues; a publisher thread sends what queued in the
last ``COALESCE_SECONDS`` as one statement on the driver (the job ids of one signal merged, or
"some jobs" when they would not fit in a notification's 8000 bytes), so a busy server sends
at most a few hundred a second, whatever its job rate."""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from typing import Any

from atomiverse_core import jsonio, retry
from sqlalchemy.engine import Engine

from .notify import Notifier

log = logging.getLogger("atomiverse.server.pgnotify")
CHANNEL = "atomiverse_signals"
MAX_IDS = 200  # 200 ids of 32 characters, quoted: well under NOTIFY's 8000-byte payload
COALESCE_SECONDS = 0.005
LISTEN_POLL_SECONDS = 1.0  # how soon the listener sees that it is told to stop
RECONNECT = retry.Backoff(first_seconds=0.5, max_seconds=5.0)
Pending = dict[str, "set[str] | None"]


def _merge(into: Pending, name: str, job_ids: frozenset[str] | None) -> None:
    known = into.get(name, set())
    if known is None or job_ids is None or len(known) + len(job_ids) > MAX_IDS:
        into[name] = None  # some jobs: the waiters read the database
    else:
        into[name] = known | job_ids


class Bridge:
    """Relays this process's signals to the other server processes and theirs to it."""

    def __init__(self, engine: Engine, notifier: Notifier) -> None:
        self.engine, self.notifier = engine, notifier
        self.origin = uuid.uuid4().hex[:12]  # our own notifications come back: skip them
        self._outbox: queue.SimpleQueue[tuple[str, frozenset[str] | None] | None] = \
            queue.SimpleQueue()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._publish, name="pgnotify-publish",
                                          daemon=True),
                         threading.Thread(target=self._listen, name="pgnotify-listen",
                                          daemon=True)]

    def start(self) -> None:
        for signal in self.notifier.signals().values():
            signal.relay = self.relay
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        for signal in self.notifier.signals().values():
            signal.relay = None
        self._stop.set()
        self._outbox.put(None)
        for thread in self._threads:
            thread.join(LISTEN_POLL_SECONDS + 5)

    def relay(self, name: str, job_ids: frozenset[str] | None) -> None:
        self._outbox.put((name, job_ids))

    # ----- out ---------------------------------------------------------------------------
    def _publish(self) -> None:
        while not self._stop.is_set():
            first = self._outbox.get()
            if first is None:
                return
            pending: Pending = {}
            _merge(pending, *first)
            self._stop.wait(COALESCE_SECONDS)
            while True:  # everything queued meanwhile goes in the same statement
                try:
                    more = self._outbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._stop.set()
                    break
                _merge(pending, *more)
            self._send(pending)

    def _send(self, pending: Pending) -> None:
        payloads = [jsonio.dumps_str({"from": self.origin, "signal": name,
                                      "ids": None if ids is None else sorted(ids)})
                    for name, ids in pending.items()]
        try:
            raw = self.engine.raw_connection()  # pooled; the driver directly: no compiling
            try:
                cursor = raw.cursor()
                cursor.executemany("SELECT pg_notify(%s, %s)",
                                   [(CHANNEL, payload) for payload in payloads])
                cursor.close()
                raw.commit()  # notifications go out at commit
            finally:
                raw.close()
        except Exception as e:  # noqa: BLE001  (the driver's own errors)
            # The database is away: the others' re-checks find the change once it is back.
            log.warning("event=notify_failed error=%s", type(e).__name__)

    # ----- in ----------------------------------------------------------------------------
    def _listen(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._listen_on_one_connection()
                return
            except Exception as e:  # noqa: BLE001  (the driver's errors: reconnect)
                failures += 1
                log.warning("event=listen_failed error=%s: %s", type(e).__name__,
                            (str(e).splitlines() or [""])[0][:200])
                if self._stop.wait(RECONNECT.seconds(failures)):
                    return

    def _listen_on_one_connection(self) -> None:
        raw = self.engine.raw_connection()
        conn: Any = raw.driver_connection
        raw.detach()  # ours for as long as we listen: not the pool's to hand out or recycle
        try:
            conn.rollback()
            conn.autocommit = True
            conn.execute(f"LISTEN {CHANNEL}")
            # Whatever was fired while we were not listening went unheard: wake everyone.
            for name in self.notifier.signals():
                self.notifier.heard(name, None)
            while not self._stop.is_set():
                for note in conn.notifies(timeout=LISTEN_POLL_SECONDS):
                    self._heard(note.payload)
        finally:
            conn.close()

    def _heard(self, payload: str) -> None:
        try:
            message = jsonio.loads(payload)
            if message["from"] == self.origin:
                return
            ids = message["ids"]
            self.notifier.heard(str(message["signal"]),
                                None if ids is None else frozenset(map(str, ids)))
        except (ValueError, KeyError, TypeError):
            log.warning("event=notification_ignored: not one of ours")


def start_bridge(engine: Engine, notifier: Notifier) -> Bridge | None:
    """A running bridge on PostgreSQL; None on SQLite (one server process per file)."""
    if engine.dialect.name != "postgresql":
        return None
    bridge = Bridge(engine, notifier)
    bridge.start()
    return bridge
