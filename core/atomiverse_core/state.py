"""Job states: ``pending -> running -> done | failed``; ``pending | running -> cancelled``."""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    def __str__(self) -> str:
        return self.value


TERMINAL_STATES = frozenset({State.DONE, State.FAILED, State.CANCELLED})
