"""One slot of the pool: its worker process's state, the job it runs and the job staged
behind it. The state is a small machine with explicit transitions; a move it does not allow
raises :class:`IllegalTransition` (a bug in the pool, never the worker's doing).

=========  =================================================================================
state      meaning
=========  =================================================================================
DOWN       no process (not started yet, died, killed); respawned at ``respawn_at``
STARTING   process started, warming up, no job
IDLE       warm, waiting for a job
BUSY       running a job; ``warming`` while the job waits for a restarted worker to be ready
DORMANT    stopped after an idle spell; still counts as free: a job starts it again
=========  =================================================================================
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from .processes import WorkerProcess


class SlotState(enum.Enum):
    DOWN = "down"
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    DORMANT = "dormant"


ALLOWED_TRANSITIONS: dict[SlotState, frozenset[SlotState]] = {
    # DOWN -> DOWN: a start that failed at once, or killing a slot that has no process.
    SlotState.DOWN: frozenset({SlotState.STARTING, SlotState.DORMANT, SlotState.DOWN}),
    # STARTING -> BUSY: a job handed to a worker before it is ready (see ``warming``).
    SlotState.STARTING: frozenset({SlotState.IDLE, SlotState.BUSY, SlotState.DOWN}),
    SlotState.IDLE: frozenset({SlotState.BUSY, SlotState.DOWN}),
    SlotState.BUSY: frozenset({SlotState.IDLE, SlotState.DOWN}),
    SlotState.DORMANT: frozenset({SlotState.STARTING, SlotState.DOWN}),
}


class IllegalTransition(RuntimeError):
    """A slot was asked to move where its state machine does not go."""


@dataclass
class Staged:
    """A job waiting in a busy worker's socket. The payload is kept to hand it to a
    replacement should this worker never start it."""

    job_id: str
    payload: dict[str, Any]
    walltime_seconds: float | None
    cancelled: bool = False


@dataclass(eq=False)
class Slot:
    process: WorkerProcess | None = None
    warming: bool = False  # busy with a job handed over before the worker said it was ready
    job_id: str | None = None
    job_started: float = 0.0  # time.monotonic()
    walltime_seconds: float | None = None
    respawn_at: float = 0.0
    failures: int = 0  # consecutive failed starts, for backoff
    start_error: str | None = None
    spawned_at: float = 0.0  # time.monotonic()
    # Jobs sent behind the running one, in the order the worker will run them.
    staged: list[Staged] = field(default_factory=list)
    _state: SlotState = field(default=SlotState.DOWN, repr=False)

    @property
    def state(self) -> SlotState:
        return self._state

    def move(self, to: SlotState) -> None:
        if to not in ALLOWED_TRANSITIONS[self._state]:
            raise IllegalTransition(f"slot cannot go from {self._state.name} to {to.name}")
        self._state = to

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def deadline(self) -> float | None:
        """When the running job overruns its walltime (None: no limit, or not running)."""
        if self._state is not SlotState.BUSY or self.walltime_seconds is None or self.warming:
            return None
        return self.job_started + self.walltime_seconds

    def can_stage(self, depth: int) -> bool:
        """Busy with a job that runs (not warming), fewer than ``depth`` staged behind it."""
        return (self._state is SlotState.BUSY and not self.warming
                and len(self.staged) < depth and self.process is not None)

    def run(self, job_id: str, walltime_seconds: float | None, *, warming: bool) -> None:
        """The slot's worker has the job in its socket and is running it (``warming``: will
        run it once ready)."""
        self.move(SlotState.BUSY)
        self.job_id, self.warming = job_id, warming
        self.job_started = time.monotonic()
        self.walltime_seconds = walltime_seconds

    def run_staged(self) -> Staged | None:
        """The running job reported: the first staged one, if any, runs now (it is
        returned); else the slot is idle."""
        if not self.staged:
            self.move(SlotState.IDLE)
            self.job_id = None
            return None
        staged = self.staged.pop(0)
        self.job_id, self.job_started = staged.job_id, time.monotonic()
        self.walltime_seconds = staged.walltime_seconds
        return staged

    def started(self, process: WorkerProcess) -> None:
        self.move(SlotState.STARTING)
        self.process, self.job_id, self.start_error = process, None, None
        self.warming, self.spawned_at = False, time.monotonic()

    def stopped(self) -> None:
        """Its process is gone (killed and reaped)."""
        self.move(SlotState.DOWN)
        self.process, self.job_id, self.warming = None, None, False
