"""Composite jobs (chains, ...) move on here: when one is submitted, and whenever none of its
children is pending or running, its job type's ``advance`` says what comes next (children to
submit, a result, a failure), and this module does it in one transaction.

Nothing about a composite's progress lives in memory: its children's rows are its state. A
pass over the composites that wait for their ``advance`` runs whenever jobs finish in this
process, at start-up, and (unless embedded) at least every ``RECHECK_SECONDS``, so a step that
finished while the server was down, or on another server process that died before advancing
it, is picked up all the same (embedded, no other server process writes to the database). Two processes never advance one
composite twice: the parent's row is locked (PostgreSQL) or the write transactions are one at
a time (SQLite), and the parent is re-checked inside the transaction.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from atomiverse_core import jobtypes
from atomiverse_core.jobtypes import parse_job
from atomiverse_core.jobtypes.spec import Fail, Finish, Spawn
from sqlalchemy.engine import Connection, Engine

from .db import read_tx, write_tx
from .dberrors import CONNECTION_ERRORS
from .handoff import announce_new_work
from .notify import Notifier
from .settings import Settings
from .store import composites
from .submission import EntryRejected, Router, prepare_entries, submit_entries

log = logging.getLogger("atomiverse.server.workflows")
# A composite whose children are all answered from the cache at once advances again at once;
# no composite type needs more rounds than this in one transaction.
MAX_ROUNDS_PER_ADVANCE = 50
# The backstop pass; every finish here wakes the thread at once. Rare: an idle server's
# periodic wake-ups are most of what it costs (issue 22).
RECHECK_SECONDS = 30.0
# Composites remembered as waiting for their target's engines, at most (see Advancer).
MAX_WAITING_FOR_ENGINES = 10_000


def advance(conn: Connection, parent_id: str, settings: Settings,
            waiting: set[str] | None = None) -> tuple[frozenset[str | None], list[str]]:
    """Advance one composite as far as it can go now. Returns where new claimable children
    went (controller ids, None for the managed pool) and the ids of jobs that finished;
    adds the composite to ``waiting`` if it waits for its target's engines."""
    claimable: set[str | None] = set()
    finished: list[str] = []
    for _ in range(MAX_ROUNDS_PER_ADVANCE):
        parent = composites.lock_parent(conn, parent_id)
        if parent is None:
            break
        kind = jobtypes.find(parent.job_type)
        if kind is None or kind.advance is None:
            composites.fail(conn, parent_id, f"job_type: {parent.job_type!r} is not a "
                                             "composite job type here", "internal")
            finished.append(parent_id)
            break
        kids = composites.children(conn, parent_id)
        payload = parent.payload if kids else _settled(conn, parent, kind, settings)
        if payload is None:  # the target's engines are not known yet: see _settled
            if waiting is not None and len(waiting) < MAX_WAITING_FOR_ENGINES:
                waiting.add(parent_id)
            break
        step = payload if isinstance(payload, Fail) else kind.advance(payload, kids)
        if step is None:
            break
        if isinstance(step, Finish):
            composites.finish(conn, parent_id, step.result)
            finished.append(parent_id)
            break
        if isinstance(step, Fail):
            composites.fail(conn, parent_id, step.error, step.error_type)
            finished.append(parent_id)
            break
        claimable |= _spawn(conn, parent, step, settings, finished)
    return frozenset(claimable), finished


def _settled(conn: Connection, parent: Any, kind: Any, settings: Settings
             ) -> dict[str, Any] | Fail | None:
    """The payload a composite starts from, with the defaults that depend on its target's
    engines settled (``JobType.for_engines``, the conformer search's screen). Submission
    settles them when it knows the engines; a target whose controller has not registered
    yet (the embedded local controller still starting, a pool with no member online) is
    settled here once it has: None until then. Its registration wakes the pass."""
    if kind.for_engines is None:
        return parent.payload
    router = Router(conn, workspace_id=parent.workspace_id, settings=settings,
                    local_controller=None)
    try:
        engines = tuple(router.route(parent.compute_target).engines)
        if not engines:
            return None
        job = kind.for_engines(parse_job(parent.payload), engines)
    except EntryRejected as e:
        return Fail(str(e), "input")
    except ValueError as e:  # a setting no engine of the target can run
        return Fail(f"Invalid job payload: {e}", "input")
    payload = job.model_dump(mode="json")
    if payload != parent.payload:
        composites.set_payload(conn, parent.id, payload)
    return payload


def _spawn(conn: Connection, parent: Any, step: Spawn, settings: Settings,
           finished: list[str]) -> set[str | None]:
    entries = [{"job": p, "compute_target": parent.compute_target} for p in step.payloads]
    response, claimable, _ = submit_entries(
        conn, workspace_id=parent.workspace_id, prepared=prepare_entries(entries, settings),
        settings=settings, local_controller=None, parent=(parent.id, step.step))
    refused = [e for e in response["jobs"] if e["status"] == "failed"]
    if refused:
        # Whatever was stored of this step stays, and the parent says why it stopped.
        composites.fail(conn, parent.id, f"step {step.step + 1} could not be submitted: "
                                         f"{refused[0]['error']}", "input")
        finished.append(parent.id)
    return set(claimable)


def advance_new(conn: Connection, parent_ids: list[str], settings: Settings
                ) -> tuple[frozenset[str | None], list[str]]:
    """Start composites just submitted, in the submission's transaction: their first
    children are stored with them or not at all. Returns what :func:`advance` does."""
    claimable: set[str | None] = set()
    finished: list[str] = []
    for parent_id in parent_ids:
        new, done = advance(conn, parent_id, settings)
        claimable |= new
        finished += done
    return frozenset(claimable), finished


class Advancer:
    """The pass over waiting composites, in a thread of its own: woken when jobs finish
    (``Notifier.children_finished``: every finish, lease sweep and cancel in this process),
    and every :data:`RECHECK_SECONDS` in any case, for what happened while no server ran.

    A composite found waiting for its target's engines (no controller of it registered yet:
    ``_settled``) is left out of later passes until a controller registers with this process
    or the backstop pass comes (another process's registrations): looked at on every pass,
    hundreds of them would cost each finish a query apiece and keep newer composites out of
    a pass's first ``composites._MAX_PARENTS_PER_PASS``."""

    def __init__(self, engine: Engine, settings: Settings, notifier: Notifier) -> None:
        self.engine, self.settings, self.notifier = engine, settings, notifier
        self.waiting_for_engines: set[str] = set()
        self._registrations_seen = notifier.registrations
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="composites", daemon=True)

    def start(self) -> None:
        if composites.composite_names():
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.notifier.composites_wake.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _loop(self) -> None:
        wake = self.notifier.composites_wake
        woken = True
        while not self._stop.is_set():
            wake.clear()
            if not woken:  # the backstop: another process's controllers may have registered
                self.waiting_for_engines.clear()
            try:
                self.run_once()
            except CONNECTION_ERRORS as e:  # the database restarting: one line, not a trace
                log.warning("event=database_unavailable job=composites error=%s",
                            type(getattr(e, "orig", None) or e).__name__)
            except Exception:  # the next finish or sweep tries again
                log.exception("event=composite_pass_failed")
            # Embedded, every finish happens in this process and wakes it: no backstop.
            woken = wake.wait(None if self.settings.embedded
                              else max(RECHECK_SECONDS, self.settings.sweep_seconds))

    def run_once(self) -> int:
        """One pass; returns how many composites it advanced."""
        if self.notifier.registrations != self._registrations_seen:
            self._registrations_seen = self.notifier.registrations
            self.waiting_for_engines.clear()
        with read_tx(self.engine) as conn:
            ready = composites.ready_parents(conn, exclude=self.waiting_for_engines)
        claimable: set[str | None] = set()
        finished: list[str] = []
        for parent_id in ready:
            with write_tx(self.engine) as conn:
                new, done = advance(conn, parent_id, self.settings, self.waiting_for_engines)
            claimable |= new
            finished += done
        if claimable:
            announce_new_work(self.engine, self.settings.lease_seconds, self.notifier,
                              frozenset(claimable))
        moved = [p for p in ready if p not in self.waiting_for_engines]
        if finished:
            self.notifier.finished(finished)
        elif moved:
            self.notifier.jobs_changed.fire(moved)
        return len(moved)
