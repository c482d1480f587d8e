"""``atomiverse scale``: controllers that a batch scheduler starts and stops with the queue.

For one target (a pool: the controller name jobs are submitted to), it watches the pool's
pending jobs and running capacity through the server, asks the scheduler (through Parsl's
providers: SLURM, or local processes) for controller allocations while pending work exceeds
the capacity running and queued, up to ``max_nodes``, and cancels allocations still queued
once nothing is pending. Controllers in running allocations claim only for their free slots,
exit after ``idle_timeout_seconds`` without work, and stop claiming ``stop_before_end_seconds``
before their allocation ends. Needs ``pip install "atomiverse[hpc]"`` (Parsl)."""
