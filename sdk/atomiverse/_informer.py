"""Following jobs without spinning: one watch per client, and ``status()`` answered from it.

A loop that asks for its jobs' states as fast as it can (our own documentation shows one)
would otherwise cost a request per call and keep a core busy on bookkeeping. Instead the
client keeps one long-poll (``POST /api/v1/jobs/watch``) open in a background thread over
the unfinished jobs it has read or submitted, and keeps their latest records here:

* the first read of a job asks the server at once (and adds the job to the watch). Asking
  with the watch's id ends the watch parked on the server, whose thread then asks again
  with the job added: two watch requests. A loop reading many jobs it did not submit (a
  process following someone else's batch) would pay that per job, so within
  :data:`COALESCE_SECONDS` of the last such restart a first read is a plain ``GET``, and the
  watch takes the job in at its next turn, or at once if a read is about to wait on it;
* a finished job (done, failed, cancelled) is answered from here at once;
* a repeated read of an unfinished job, with no news from the watch since this client last
  answered it, waits for news, at most :data:`PACE_SECONDS`, then answers the latest record.
  A loop over many jobs so sweeps them once per change (or once a second when nothing
  changes), not as fast as the interpreter allows.

A state change is never lost: the watch sends the version of each job it last saw and the
server answers with every job whose version differs, whatever happened in between
(including a broken connection or a server restart; the thread reconnects with backoff).
While the watch is broken, reads go to the server directly."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from atomiverse_core import retry
from atomiverse_core.state import TERMINAL_STATES

from ._exceptions import NotFoundError

PACE_SECONDS = 1.0  # the longest a repeated read of an unchanged, unfinished job waits
WATCH_SECONDS = 20.0  # one watch request's long-poll
# Watching many jobs, one answer per quarter second of changes is plenty and spares both
# sides a request per change; the last few are answered the moment they change.
COALESCE_SECONDS = 0.25
COALESCE_ABOVE_JOBS = 8
MAX_WATCHED = 10_000  # unfinished jobs in the watch (the server's limit per request)
MAX_FINISHED_KEPT = 20_000  # finished records kept; older ones are read again if asked

Record = dict[str, Any]
WatchCall = Callable[[dict[str, str | None], str, float, float], list[Record]]
ReadCall = Callable[[str], Record]


class Informer:
    """The records of the jobs one client follows, kept current by one watch thread.

    ``watch(versions, watch_id, timeout_seconds, coalesce_seconds)`` and ``read(job_id)``
    (one job's record now, without touching the watch) are the client's calls to the
    server."""

    def __init__(self, watch: WatchCall, read: ReadCall) -> None:
        self._watch = watch
        self._read = read
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._pid = os.getpid()
        self._watch_id = uuid.uuid4().hex
        self._records: OrderedDict[str, Record] = OrderedDict()
        self._versions: dict[str, str | None] = {}  # the unfinished jobs watched
        self._generation = 0  # bumped by every answer that brought news, and by a pause
        self._answered_at: dict[str, int] = {}  # the generation a job was last read at
        self._expected: dict[str, None] = {}  # submitted here, not read yet (ordered set)
        self._unsent: set[str] = set()  # watched here, not yet in the server's watch
        self._restarted_at = -COALESCE_SECONDS  # when the server's watch last started
        self._thread: threading.Thread | None = None
        self._broken: Exception | None = None
        self._closed = False

    # ----- reads -------------------------------------------------------------------------
    def get(self, job_id: str) -> Record:
        """The job's record, by the rules in the module docstring."""
        self._after_fork()
        if job_id in self._unsent and self._answered_at.get(job_id) == self._generation:
            self._send_unsent()  # about to wait on it: the server's watch must cover it
        with self._cond:
            record = self._records.get(job_id)
            if record is not None and (record["state"] in TERMINAL_STATES
                                       or self._broken is None and job_id in self._versions):
                if record["state"] not in TERMINAL_STATES:
                    self._pace(job_id)
                    record = self._records.get(job_id, record)
                self._answered_at[job_id] = self._generation
                return record
            batch = [job_id]
            if job_id in self._expected:  # the first read of a batch: fetch it all at once
                batch += [j for j in self._expected if j != job_id][:MAX_WATCHED - 1]
            for j in batch:
                self._expected.pop(j, None)
            quietly = len(batch) == 1 and self._thread is not None and self._broken is None \
                and time.monotonic() - self._restarted_at < COALESCE_SECONDS
        record = self._read_quietly(job_id) if quietly else next(iter(self._fetch(batch)), None)
        if record is None or record["job_id"] != job_id:
            raise NotFoundError(f"Job {job_id[:64]} not found", status_code=404)
        with self._cond:
            self._answered_at[job_id] = self._generation
        return record

    def _read_quietly(self, job_id: str) -> Record:
        """The job's record by a plain read, leaving the server's watch parked: the job
        joins it at the watch's next turn (:meth:`_send_unsent` if a read waits first)."""
        record = dict(self._read(job_id))  # our own: what the caller is handed is a copy
        with self._cond:
            self._store([record])
            if job_id in self._versions:
                self._unsent.add(job_id)
        return record

    def _send_unsent(self) -> None:
        with self._cond:
            unsent = [j for j in self._unsent if j in self._versions]
            self._unsent.clear()
        if unsent:
            self._fetch(unsent)

    def _pace(self, job_id: str) -> None:
        seen = self._generation
        if self._answered_at.get(job_id) == seen:
            news = self._cond.wait_for(lambda: self._generation != seen
                                       or self._broken is not None or self._closed,
                                       timeout=PACE_SECONDS)
            if not news:
                # One pause per sweep, not per job: the other jobs of a loop that read them
                # all before this pause are answered at once.
                self._generation += 1

    def wait_finished(self, job_ids: Iterable[str], timeout: float | None) -> Iterator[Record]:
        """Yield each job's record once it is finished, in the order they finish."""
        pending = list(dict.fromkeys(job_ids))
        self.follow(pending)
        deadline = None if timeout is None else time.monotonic() + timeout
        while pending:
            if self._unsent.intersection(pending):
                self._send_unsent()
            with self._cond:
                ready = [j for j in pending if self._finished(j)]
                unwatched = [j for j in pending if j not in self._versions]
                if not ready:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError(f"{len(pending)} of the jobs were not finished "
                                           f"after {timeout} s")
                    if self._broken is None and not unwatched:
                        self._cond.wait(WATCH_SECONDS if left is None
                                        else min(WATCH_SECONDS, left))
                        continue
            if not ready:  # no watch covers them (broken, or too many): ask, then pace
                self._fetch(unwatched if self._broken is None else pending)
                with self._cond:
                    self._cond.wait_for(lambda: self._closed, timeout=PACE_SECONDS)
                continue
            for job_id in ready:
                pending.remove(job_id)
                yield self._records[job_id]

    def _finished(self, job_id: str) -> bool:
        record = self._records.get(job_id)
        return record is not None and record["state"] in TERMINAL_STATES

    # ----- what the client tells us ------------------------------------------------------
    def follow(self, job_ids: Iterable[str]) -> None:
        """Start watching these jobs (just submitted, say): their records come in one
        request, not one per first read."""
        self._after_fork()
        with self._cond:
            new = [j for j in job_ids if j not in self._records and j not in self._versions]
        if new:
            self._fetch(new)

    def expect(self, job_ids: Iterable[str]) -> None:
        """Jobs this client has just submitted: the first read of any of them fetches all of
        them in one request (nothing is fetched for a script that never reads them)."""
        self._after_fork()
        with self._cond:
            self._expected.update(dict.fromkeys(job_ids))
            for job_id in list(self._expected)[:max(0, len(self._expected) - MAX_WATCHED)]:
                del self._expected[job_id]

    def remember(self, record: Record) -> None:
        """A record the client got some other way (rename, cancel)."""
        with self._cond:
            if record["job_id"] in self._records or record["job_id"] in self._versions:
                self._store([record])

    def forget(self, job_id: str) -> None:
        with self._cond:
            self._records.pop(job_id, None)
            self._versions.pop(job_id, None)
            self._answered_at.pop(job_id, None)
            self._unsent.discard(job_id)

    @property
    def watch_id(self) -> str:
        return self._watch_id

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> threading.Thread | None:
        """Stop watching; the watch thread if one was running (its request may be parked on
        the server: end it there, then join the thread)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            return self._thread

    # ----- the watch ---------------------------------------------------------------------
    def _fetch(self, job_ids: list[str]) -> list[Record]:
        """The current records of these jobs, now. Sent under the watch's id, the request
        also ends the watch parked on the server, whose thread comes back with these jobs
        added."""
        with self._cond:
            self._restarted_at = time.monotonic()
        try:
            records = self._fetch_now(job_ids)
        except NotFoundError as e:
            missing = set(_missing(e))
            rest = [j for j in job_ids if j not in missing]
            if not missing or not rest:
                raise
            records = self._fetch_now(rest)  # deleted meanwhile: the others still count
        with self._cond:
            self._store(records)
            self._ensure_thread()
        by_id = {r["job_id"]: r for r in records}
        return [by_id[j] for j in job_ids if j in by_id]

    def _fetch_now(self, job_ids: list[str]) -> list[Record]:
        records: list[Record] = []
        for i in range(0, len(job_ids), MAX_WATCHED):
            records += self._watch(dict.fromkeys(job_ids[i:i + MAX_WATCHED]),
                                   self._watch_id, 0.0, 0.0)
        return records

    def _store(self, records: list[Record]) -> None:
        for record in records:
            job_id = record["job_id"]
            known = self._records.get(job_id)
            if known is not None and known["state"] in TERMINAL_STATES \
                    and record["state"] not in TERMINAL_STATES:
                continue  # read before it finished, answered after: finished is final
            self._records[job_id] = record
            self._records.move_to_end(job_id)
            if record["state"] in TERMINAL_STATES:
                self._versions.pop(job_id, None)
            elif job_id in self._versions or len(self._versions) < MAX_WATCHED:
                self._versions[job_id] = record.get("version")
        if records:
            self._generation += 1
            self._drop_oldest_finished()
            self._cond.notify_all()

    def _drop_oldest_finished(self) -> None:
        extra = len(self._records) - len(self._versions) - MAX_FINISHED_KEPT
        if extra <= 0:
            return  # not a copy of every job id on each answer
        for job_id in list(self._records):
            if extra <= 0:
                break
            if job_id not in self._versions:
                del self._records[job_id]
                self._answered_at.pop(job_id, None)
                extra -= 1

    def _ensure_thread(self) -> None:
        if self._thread is None and self._versions and not self._closed:
            self._thread = threading.Thread(target=self._run, name="atomiverse-watch",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        failures = 0
        while True:
            with self._cond:
                if self._closed or not self._versions or self._pid != os.getpid():
                    self._thread = None
                    return
                versions = dict(self._versions)
                self._unsent.clear()
                self._restarted_at = time.monotonic()
            try:
                coalesce = COALESCE_SECONDS if len(versions) > COALESCE_ABOVE_JOBS else 0.0
                records = self._watch(versions, self._watch_id, WATCH_SECONDS, coalesce)
            except NotFoundError as e:
                self._drop_missing(e)
                continue
            except Exception as e:  # noqa: BLE001 - the server or network: back off, retry
                if self._closed:
                    return
                failures += 1
                self._broke(e, failures)
                continue
            failures = 0
            with self._cond:
                if self._broken is not None:
                    self._broken = None
                    self._cond.notify_all()
                self._store(records)

    def _drop_missing(self, error: NotFoundError) -> None:
        """Some watched jobs are gone (deleted): stop watching them; reading one again asks
        the server, which answers 404."""
        missing = _missing(error)
        with self._cond:
            for job_id in missing or list(self._versions):
                self._versions.pop(job_id, None)
                self._records.pop(job_id, None)

    def _broke(self, error: Exception, failures: int) -> None:
        delay = retry.WATCH.seconds(failures)
        with self._cond:
            self._broken = error
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._closed, timeout=delay)

    def _after_fork(self) -> None:
        # A forked child (multiprocessing) has no watch thread, and the lock may have been
        # held at the fork: start afresh there.
        if self._pid != os.getpid():
            self._reset()


def _missing(error: NotFoundError) -> list[str]:
    """The ids a 404 from a watch names as not jobs of this workspace."""
    body = error.body if isinstance(error.body, dict) else {}
    missing = body.get("missing")
    return [str(j) for j in missing] if isinstance(missing, list) else []
