"""The worker pool's public names, where tests and benchmarks import them; the code is in
:mod:`atomiverse_controller.pool`."""

from .pool import Outcome, WorkerPool, WorkerStartError, describe_exit

__all__ = ["Outcome", "WorkerPool", "WorkerStartError", "describe_exit"]
