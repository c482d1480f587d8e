"""The controller's worker pool: :class:`WorkerPool` (:mod:`.pool`) on top of
:mod:`.supervisor` (keeping workers alive), :mod:`.slots` (a slot's state machine),
:mod:`.processes` (a worker process to the operating system), :mod:`.protocol` (the contract
with ``worker_main``, both sides) and :mod:`.exits` (how a failure maps to an error type)."""

from .exits import describe_exit
from .pool import WorkerPool, WorkerStartError
from .protocol import Outcome

__all__ = ["Outcome", "WorkerPool", "WorkerStartError", "describe_exit"]
