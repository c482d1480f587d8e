"""SQLite's write-ahead log copied into the database a moment after writes, never on a timer.

A commit never checkpoints (that cost a request 10-30 ms, issue 22); this thread does, about
``DELAY_SECONDS`` after the first write it has not yet covered, so a burst of writes costs
one checkpoint. It sleeps on :data:`db.wrote` in between: an idle server neither wakes nor
touches the disk (it used to wake every second to find nothing written). Nothing on
PostgreSQL."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.engine import Engine

from . import db

DELAY_SECONDS = 1.0
log = logging.getLogger(__name__)


class WalCheckpointer:
    def __init__(self, engine: Engine, delay_seconds: float = DELAY_SECONDS) -> None:
        self.engine, self.delay_seconds = engine, delay_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="wal-checkpoint", daemon=True)

    def start(self) -> WalCheckpointer:
        if self.engine.dialect.name == "sqlite":
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        db.wrote.set()  # wakes the thread; the flag is set again by the next write anyway
        if self._thread.is_alive():
            self._thread.join(10)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            db.wrote.wait()
            if self._stop.wait(self.delay_seconds):
                return
            db.wrote.clear()  # before the checkpoint: a write during it sets it again
            try:
                db.checkpoint_wal(self.engine)
            except Exception:  # the next write tries again; SQLite's own backstop remains
                log.exception("event=wal_checkpoint_failed")
